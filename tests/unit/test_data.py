"""Data loading (rlft/data/loading.py) and prompt preparation (rlft/data/prompts.py).

Every bad file is written in tmp_path; each error test checks that the message names the file, the
line (JSON Lines) or row (Parquet, datasets), and the field.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib
import json

import pytest

from rlft.data import DataError, PromptReport, Record, load_records, prepare_prompts
from rlft.models import build_tokenizer
from rlft.tasks import arithmetic
from rlft.types import Prompt


def _optional(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# Parquet and datasets directories need optional packages; only their tests skip without them.
pa, pq, datasets = _optional("pyarrow"), _optional("pyarrow.parquet"), _optional("datasets")
needs_pyarrow = pytest.mark.skipif(pq is None, reason="pyarrow is not installed")
needs_datasets = pytest.mark.skipif(datasets is None, reason="datasets is not installed")

ROWS = [
    {"prompt": "1+1=", "answer": 2, "level": "easy", "tags": ["a", "b"]},
    {"prompt": "What is 7*6?", "answer": 42, "level": "hard", "tags": []},
    {"prompt": "  spaced  ", "answer": -3, "level": None, "tags": ["c"]},
]


def write_jsonl(path, rows, blank_lines_after=()):
    lines = []
    for i, row in enumerate(rows):
        lines.append(row if isinstance(row, str) else json.dumps(row))
        if i in blank_lines_after:
            lines.append("   ")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@contextlib.contextmanager
def data_error(*parts):
    """Expect a DataError whose message contains every one of ``parts``."""
    with pytest.raises(DataError) as info:
        yield info
    for part in parts:
        assert part in str(info.value), f"{part!r} not in {str(info.value)!r}"


# --------------------------------------------------------------------------------------------------
# Loading the same rows from every format


def test_jsonl_records_convert_answers_and_keep_metadata(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", ROWS, blank_lines_after=(0,))
    records = load_records(path, metadata_fields=["level", "tags"])
    assert records == [
        Record("qa:0", "1+1=", "2", {"level": "easy", "tags": ["a", "b"]}),
        Record("qa:1", "What is 7*6?", "42", {"level": "hard", "tags": []}),
        Record("qa:2", "  spaced  ", "-3", {"level": None, "tags": ["c"]}),
    ]


@needs_datasets
def test_same_rows_give_same_records_in_every_format(tmp_path):
    jsonl = load_records(write_jsonl(tmp_path / "qa.jsonl", ROWS), metadata_fields=["level", "tags"])
    parquet = load_records(write_parquet(tmp_path / "qa.parquet", ROWS), metadata_fields=["level", "tags"])
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "qa"))
    on_disk = load_records(tmp_path / "qa", metadata_fields=["level", "tags"])
    assert jsonl == parquet == on_disk
    assert [r.answer for r in jsonl] == ["2", "42", "-3"]


@needs_datasets
def test_dataset_dict_reads_the_named_split(tmp_path):
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS[:2]), "test": datasets.Dataset.from_list(ROWS[2:])}
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert [r.prompt for r in load_records(tmp_path / "dd")] == ["1+1=", "What is 7*6?"]
    assert [r.prompt for r in load_records(tmp_path / "dd", split_name="test")] == ["  spaced  "]
    with data_error("dd", "no split 'validation'", "splits: train, test"):
        load_records(tmp_path / "dd", split_name="validation")


def test_id_column_gives_the_prompt_ids_and_custom_field_names(tmp_path):
    rows = [{"id": 17, "question": "a?", "gold": "x"}, {"id": "q-2", "question": "b?", "gold": "y"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    records = load_records(path, prompt_field="question", answer_field="gold")
    assert [(r.prompt_id, r.prompt, r.answer) for r in records] == [("17", "a?", "x"), ("q-2", "b?", "y")]


def test_answers_become_text_and_answer_field_none_reads_none(tmp_path):
    rows = [{"prompt": "p", "answer": [1, 2]}, {"prompt": "q", "answer": 3.5}, {"prompt": "r", "answer": "x"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    assert [r.answer for r in load_records(path)] == ["[1, 2]", "3.5", "x"]  # containers as JSON
    assert [r.answer for r in load_records(path, answer_field=None)] == [None, None, None]


def test_records_are_frozen(tmp_path):
    record = load_records(write_jsonl(tmp_path / "d.jsonl", ROWS[:1]))[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.prompt = "changed"


def test_builtin_sources_delegate_to_the_task():
    assert load_records("builtin:arithmetic") == arithmetic.generate("train", seed=0)
    assert load_records("builtin:arithmetic:eval") == arithmetic.generate("eval", seed=0)
    with data_error("builtin:sudoku", "unknown built-in task 'sudoku'", "arithmetic"):
        load_records("builtin:sudoku")
    with data_error("no split 'test'", "train, eval"):
        load_records("builtin:arithmetic:test")
    with data_error("bad built-in data source 'builtin:'"):
        load_records("builtin:")


# --------------------------------------------------------------------------------------------------
# Errors: file, line/row and field named


def test_missing_field_in_jsonl_names_file_line_field_and_row_fields(tmp_path):
    # line 3 in the file (a blank line 2 still counts), the second record
    rows = [ROWS[0], {"question": "x", "answer": 1}]
    path = write_jsonl(tmp_path / "bad.jsonl", rows, blank_lines_after=(0,))
    with data_error(str(path), "line 3", "missing field 'prompt'", "the row has fields: answer, question"):
        load_records(path)


def test_missing_answer_and_metadata_fields(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "answer": "a"}, {"prompt": "q"}])
    with data_error(str(path), "line 2", "missing field 'answer'", "fields: prompt"):
        load_records(path)
    with data_error(str(path), "line 1", "missing field 'level'", "fields: answer, prompt"):
        load_records(path, metadata_fields=["level"])


@needs_datasets
def test_missing_field_in_parquet_and_datasets_names_the_row(tmp_path):
    rows = [{"text": "a", "answer": "1"}, {"text": "b", "answer": "2"}]
    path = write_parquet(tmp_path / "bad.parquet", rows)
    with data_error(str(path), "row 0", "missing field 'prompt'", "fields: answer, text"):
        load_records(path)
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "bad_ds"))
    with data_error("bad_ds", "row 0", "missing field 'prompt'", "fields: answer, text"):
        load_records(tmp_path / "bad_ds")


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt_names_file_and_line(tmp_path, prompt):
    path = write_jsonl(tmp_path / "empty.jsonl", [ROWS[0], {"prompt": prompt, "answer": 1}])
    with data_error(str(path), "line 2", "field 'prompt' is empty"):
        load_records(path)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "x", answer: 1}', "invalid JSON"),
        ('["prompt", "answer"]', "expected a JSON object, got list"),
    ],
)
def test_a_line_that_is_not_a_json_object(tmp_path, line, message):
    path = write_jsonl(tmp_path / "broken.jsonl", [ROWS[0], ROWS[1], line])
    with data_error(str(path), "line 3", message):
        load_records(path)


@needs_pyarrow
def test_parquet_row_errors_and_unreadable_files(tmp_path):
    path = write_parquet(tmp_path / "empty.parquet", [ROWS[0], ROWS[1], {**ROWS[1], "prompt": " "}])
    with data_error(str(path), "row 2", "field 'prompt' is empty"):
        load_records(path)
    path = write_parquet(tmp_path / "nulls.parquet", [ROWS[0], {**ROWS[0], "answer": None}])
    with data_error(str(path), "row 1", "field 'answer' is null"):
        load_records(path)
    path = tmp_path / "nothing.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], pa.string())}), path)
    with data_error(str(path), "no records"):
        load_records(path)
    path.write_bytes(b"not parquet at all")
    with data_error(str(path), "not a readable Parquet file"):
        load_records(path)


def test_encoding_byte_order_mark_and_bad_bytes(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(ROWS[0]).encode() + b"\n")
    assert load_records(path)[0].prompt == "1+1="
    path.write_bytes(json.dumps(ROWS[0]).encode() + b'\n{"prompt": "caf\xe9", "answer": 1}\n')
    with data_error(str(path), "line 2", "not UTF-8 text"):
        load_records(path)


@pytest.mark.parametrize(
    "value, message",
    [
        (42, "field 'prompt' must be a string or a list of chat messages, got int"),
        ({"role": "user"}, "field 'prompt' must be a string or a list of chat messages, got dict"),
        (["a", "b"], "field 'prompt', message 0: expected an object with 'role' and 'content', got str"),
        ([], "field 'prompt' must be a non-empty list of chat messages"),
    ],
)
def test_non_string_prompt(tmp_path, value, message):
    path = write_jsonl(tmp_path / "types.jsonl", [{"prompt": value, "answer": 1}])
    with data_error(str(path), "line 1", message):
        load_records(path)


def test_unknown_extension_missing_file_and_plain_directory(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("prompt,answer\n1+1=,2\n")
    with data_error(str(csv), "unsupported data source", ".jsonl", ".parquet", "builtin:"):
        load_records(csv)
    with data_error("data file not found", str(tmp_path / "nope.jsonl")):
        load_records(tmp_path / "nope.jsonl")
    (tmp_path / "plain").mkdir()
    with data_error(str(tmp_path / "plain"), "not a dataset saved with datasets' save_to_disk"):
        load_records(tmp_path / "plain")


@pytest.mark.parametrize("content", ["", "\n  \n\n"])
def test_empty_jsonl_dataset(tmp_path, content):
    path = tmp_path / "nothing.jsonl"
    path.write_text(content)
    with data_error(str(path), "no records"):
        load_records(path)


def test_duplicate_ids(tmp_path):
    rows = [{"id": 1, "prompt": "a", "answer": 1}, {"id": "1", "prompt": "b", "answer": 2}]
    path = write_jsonl(tmp_path / "dup.jsonl", rows)
    with data_error(str(path), "line 2", "duplicate prompt id '1'", "first at line 1"):
        load_records(path)


@needs_pyarrow
def test_metadata_must_be_json_serialisable(tmp_path):
    when = datetime.datetime(2024, 1, 2, 3, 4, 5)
    path = write_parquet(tmp_path / "ts.parquet", [{"prompt": "a", "answer": "1", "when": when}])
    with data_error(str(path), "row 0", "metadata field 'when' is not JSON-serialisable"):
        load_records(path, metadata_fields=["when"])


# --------------------------------------------------------------------------------------------------
# prepare_prompts

TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.fixture
def tok():
    return build_tokenizer()  # a fresh one per test: tests set chat_template and bos_token on it


@pytest.fixture
def records():
    return [Record("r:0", "12+34=", "46", {"level": 1}), Record("r:1", "7+8=", "15", {})]


def chars(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_raw_text_gets_bos_and_metadata_gets_the_answer(tok, records):
    prompts, report = prepare_prompts(records, tok)
    ids = [tok.bos_token_id, *chars(tok, "12+34=")]
    assert prompts[0] == Prompt("r:0", ids, "12+34=", {"level": 1, "answer": "46"})
    assert prompts[1].metadata == {"answer": "15"}
    assert report == PromptReport(
        total=2, kept=2, skipped_too_long=0, max_tokens=7, limit=None, templated=False
    )
    assert records[0].metadata == {"level": 1}  # the record's own dict is not mutated


@pytest.mark.parametrize("mode, templated", [("auto", True), ("on", True), ("off", False)])
def test_chat_template_modes_with_a_template(tok, records, mode, templated):
    tok.chat_template = TEMPLATE
    prompts, report = prepare_prompts(records, tok, chat_template=mode)
    expected_text = "<user>12+34=\n<assistant>" if templated else "12+34="
    assert prompts[0].text == expected_text
    assert prompts[0].token_ids == [tok.bos_token_id, *chars(tok, expected_text)]
    assert report.templated is templated


def test_chat_template_modes_without_a_template(tok, records):
    assert prepare_prompts(records, tok, chat_template="auto")[0][0].text == "12+34="
    assert prepare_prompts(records, tok, chat_template="off")[0][0].text == "12+34="
    with data_error("chat_template='on'", "no chat template"):
        prepare_prompts(records, tok, chat_template="on")
    with pytest.raises(ValueError, match="'auto', 'on', 'off' or a Jinja chat template"):
        prepare_prompts(records, tok, chat_template="yes")


def test_system_prompt(tok, records):
    tok.chat_template = TEMPLATE
    prompts, _ = prepare_prompts(records, tok, system_prompt="Add.")
    assert prompts[0].text == "<system>Add.\n<user>12+34=\n<assistant>"
    with data_error("system_prompt is set", "no chat template is applied"):
        prepare_prompts(records, tok, chat_template="off", system_prompt="Add.")


def test_bos_written_by_the_template_is_not_doubled(tok, records):
    tok.chat_template = "{{ bos_token }}" + TEMPLATE
    prompts, _ = prepare_prompts(records, tok)
    assert prompts[0].text.startswith("<bos><user>")
    assert prompts[0].token_ids[:2] == [tok.bos_token_id, chars(tok, "<")[0]]
    assert prompts[0].token_ids.count(tok.bos_token_id) == 1


def test_no_bos_when_the_tokenizer_has_none(tok, records):
    tok.bos_token = None
    prompts, _ = prepare_prompts(records, tok)
    assert prompts[0].token_ids == chars(tok, "12+34=")


def test_too_long_skip_counts_and_names_the_skipped(tok):
    recs = [Record(f"r:{i}", "1" * n, None) for i, n in enumerate([3, 9, 4, 12, 2])]
    prompts, report = prepare_prompts(recs, tok, max_prompt_tokens=5, too_long="skip")
    assert [p.prompt_id for p in prompts] == ["r:0", "r:2", "r:4"]
    counts = (report.total, report.kept, report.skipped_too_long, report.max_tokens, report.limit)
    assert counts == (5, 3, 2, 5, 5)
    assert report.skipped_ids == ("r:1", "r:3")
    assert "2 skipped as too long: r:1, r:3" in report.summary()


def test_too_long_error_states_count_longest_and_limit(tok):
    recs = [Record(f"r:{i}", "1" * n, None) for i, n in enumerate([3, 9, 4, 12, 2])]
    with data_error("2 of 5 prompts", "limit of 5 tokens", "longest: 13 tokens", "'r:3'") as error:
        prepare_prompts(recs, tok, max_prompt_tokens=5)
    assert "too_long='skip'" in str(error.value)  # the message says how to proceed
    with data_error("all 1 prompts are longer"):
        prepare_prompts(recs[3:4], tok, max_prompt_tokens=5, too_long="skip")


def test_limit_defaults_to_a_known_tokenizer_context(tok, records):
    _, report = prepare_prompts(records, tok)
    assert report.limit is None  # the tiny tokenizer's model_max_length is HF's "unknown" sentinel
    tok.model_max_length = 6
    prompts, report = prepare_prompts(records, tok, too_long="skip")
    assert report.limit == 6 and [p.prompt_id for p in prompts] == ["r:1"]


def test_bad_arguments_and_empty_input(tok, records):
    with data_error("no prompts", "empty"):
        prepare_prompts([], tok)
    with pytest.raises(ValueError, match="too_long"):
        prepare_prompts(records, tok, too_long="truncate")
    with pytest.raises(ValueError, match="max_prompt_tokens must be >= 1"):
        prepare_prompts(records, tok, max_prompt_tokens=0)


def test_the_builtin_task_prepares_within_the_tiny_vocabulary(tok):
    prompts, report = prepare_prompts(load_records("builtin:arithmetic:eval"), tok)
    assert report.kept == report.total == len(prompts) > 0
    assert tok.unk_token_id not in {t for p in prompts for t in p.token_ids}
    assert report.max_tokens <= 7  # <bos> + "99+99="
