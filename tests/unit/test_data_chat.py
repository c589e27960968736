"""Datasets as the field ships them: chat-message prompts (TRL's conversational rows, verl's rows),
dotted paths to nested fields, reference completions for SFT, and the chat template setting."""

from __future__ import annotations

import json

import pytest

from rlft.config import ConfigError, load_config, save_config
from rlft.data import Record, load_records, prepare_prompts
from rlft.models import build_tokenizer
from test_data import data_error  # tests/unit is on the path (pytest's rootdir-relative imports)

TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
# only characters of the tiny vocabulary, as examples/own_data_chat.yaml has it
TINY_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------------------------------
# Dotted paths


VERL_ROW = {
    "data_source": "addition",
    "prompt": [user("12+34=")],
    "reward_model": {"style": "rule", "ground_truth": 46},
    "extra_info": {"split": "train", "level": {"name": "easy"}},
    "ref": {"text": "46"},
}


def test_dotted_paths_name_nested_fields_in_every_field_setting(tmp_path):
    path = write_jsonl(tmp_path / "verl.jsonl", [VERL_ROW])
    record = load_records(
        path,
        answer_field="reward_model.ground_truth",
        metadata_fields=["data_source", "extra_info.level.name"],
        solution_field="ref.text",
    )[0]
    assert record.prompt == [user("12+34=")]
    assert record.answer == "46" and record.solution == "46"
    assert record.metadata == {"data_source": "addition", "extra_info.level.name": "easy"}
    nested_prompt = write_jsonl(tmp_path / "n.jsonl", [{"q": {"text": "1+1="}, "a": 2}])
    assert load_records(nested_prompt, prompt_field="q.text", answer_field="a")[0].prompt == "1+1="


def test_a_column_named_with_dots_wins_over_the_nested_path(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "a.b": "column", "a": {"b": "nested"}}])
    assert load_records(path, answer_field="a.b")[0].answer == "column"


def test_dotted_path_errors_name_line_and_the_fields_there(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [VERL_ROW, {**VERL_ROW, "reward_model": {"style": "rule"}}])
    with data_error(str(path), "line 2", "missing field 'reward_model.ground_truth'", "'reward_model' has fields: style"):
        load_records(path, answer_field="reward_model.ground_truth")
    with data_error("line 1", "field 'data_source' is str, not an object, so 'data_source.x' cannot be read"):
        load_records(path, answer_field="data_source.x")
    with data_error("line 1", "missing field 'nope.x'; the row has fields: data_source, extra_info"):
        load_records(path, answer_field="nope.x")


def test_parquet_struct_columns_are_nested_fields(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "verl.parquet"
    pq.write_table(pa.Table.from_pylist([VERL_ROW]), path)
    record = load_records(path, answer_field="reward_model.ground_truth", metadata_fields=["extra_info.split"])[0]
    assert (record.prompt, record.answer, record.metadata) == ([user("12+34=")], "46", {"extra_info.split": "train"})


# --------------------------------------------------------------------------------------------------
# Chat rows and reference completions


def test_a_closing_assistant_message_is_the_reference_completion(tmp_path):
    rows = [
        {"messages": [{"role": "system", "content": "Add."}, user("1+2="), assistant("3")], "answer": 3},
        {"messages": [user("2+2=")], "answer": 4},
    ]
    records = load_records(write_jsonl(tmp_path / "trl.jsonl", rows), prompt_field="messages")
    assert records[0].prompt == [{"role": "system", "content": "Add."}, user("1+2=")]
    assert records[0].solution == "3"
    assert records[1].prompt == [user("2+2=")] and records[1].solution is None


def test_solution_field_text_or_one_assistant_message(tmp_path):
    rows = [
        {"prompt": "1+2=", "answer": 3, "completion": [assistant("3")]},  # TRL prompt-completion, chat
        {"prompt": [user("2+2=")], "answer": 4, "completion": 4},
    ]
    path = write_jsonl(tmp_path / "pc.jsonl", rows)
    assert [r.solution for r in load_records(path, solution_field="completion")] == ["3", "4"]
    assert [r.solution for r in load_records(path)] == [None, None]  # no solution_field: not read


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": [user("1+2="), assistant("3")], "sol": "3"}, "solution_field 'sol' also gives the reference"),
        ({"prompt": [assistant("3")], "sol": "3"}, "has no prompt message with text"),
        ({"prompt": [user("  ")], "sol": "3"}, "has no prompt message with text"),
        ({"prompt": [{"content": "hi"}], "sol": "3"}, "field 'prompt', message 0: needs a 'role'"),
        ({"prompt": [user("1"), {"role": "user", "content": None}], "sol": "3"}, "message 1: 'content' must be a string"),
        ({"prompt": "1+2=", "sol": [user("3")]}, "field 'sol' must hold one assistant message as the reference, got: user"),
        ({"prompt": "1+2=", "sol": {"text": "3"}}, "field 'sol' must be text or a list with one assistant message"),
        ({"prompt": "1+2=", "sol": None}, "field 'sol' is null"),
        ({"prompt": "1+2="}, "missing field 'sol'"),
    ],
)
def test_bad_chat_rows_and_solutions_name_file_line_and_field(tmp_path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok", "sol": "1"}, row])
    with data_error(str(path), "line 2", message):
        load_records(path, answer_field=None, solution_field="sol")


# --------------------------------------------------------------------------------------------------
# Chat template


@pytest.fixture
def tok():
    return build_tokenizer()


def test_chat_prompts_are_rendered_by_the_template(tok):
    tok.chat_template = TEMPLATE
    records = [
        Record("c:0", [user("1+2=")], "3"),
        Record("c:1", [{"role": "system", "content": "Mine."}, user("2+2=")], "4"),
        Record("t:0", "5+5=", "10"),
    ]
    prompts, report = prepare_prompts(records, tok, system_prompt="Add.")
    assert [p.text for p in prompts] == [
        "<system>Add.\n<user>1+2=\n<assistant>",
        "<system>Mine.\n<user>2+2=\n<assistant>",  # the row's own system message is kept
        "<system>Add.\n<user>5+5=\n<assistant>",
    ]
    assert report.templated
    assert records[0].prompt == [user("1+2=")]  # the record's messages are not mutated


def test_a_template_given_in_the_config_renders_for_a_tokenizer_without_one(tok):
    assert not tok.chat_template
    prompts, report = prepare_prompts([Record("c:0", [user("12+34=")], "46")], tok, chat_template=TINY_TEMPLATE)
    assert prompts[0].text == "user: 12+34=\nassistant: " and report.templated
    assert tok.unk_token_id not in prompts[0].token_ids
    tok.chat_template = TEMPLATE  # a template in the config wins over the tokenizer's own
    assert prepare_prompts([Record("t:0", "1=", None)], tok, chat_template=TINY_TEMPLATE)[0][0].text == (
        "user: 1=\nassistant: "
    )


def test_chat_prompts_without_a_template_say_what_to_do(tok):
    records = [Record("t:0", "1+1=", "2"), Record("c:0", [user("1+2=")], "3")]
    with data_error("1 of 2 prompts are lists of chat messages (first: 'c:0')", "the tokenizer has no chat template",
                    "data.chat_template", "model.tokenizer"):
        prepare_prompts(records, tok)
    tok.chat_template = TEMPLATE
    with data_error("data.chat_template is 'off'", "give a Jinja chat template as data.chat_template"):
        prepare_prompts(records, tok, chat_template="off")


def test_a_failing_template_names_the_prompt(tok):
    strict = "{% if messages[0]['role'] != 'system' %}{{ raise_exception('system first') }}{% endif %}"
    with data_error("prompt 'c:0': the chat template failed", "system first"):
        prepare_prompts([Record("c:0", [user("1")], None)], tok, chat_template=strict)


# --------------------------------------------------------------------------------------------------
# data.chat_template in the config


@pytest.mark.parametrize("value, mode", [("off", "off"), ("on", "on"), ("auto", "auto"), ("'off'", "off")])
def test_chat_template_modes_in_yaml_including_bare_off(tmp_path, value, mode):
    path = tmp_path / "run.yaml"
    path.write_text(f"data:\n  chat_template: {value}\n")  # YAML reads a bare off/on as a boolean
    assert load_config(path).data.chat_template == mode
    assert load_config(overrides=[f"data.chat_template={value}"]).data.chat_template == mode


def test_chat_template_typos_are_config_errors_and_templates_round_trip(tmp_path):
    with pytest.raises(ConfigError, match="chat_template must be auto, on, off or a Jinja chat template, got 'of' "
                                          r"\(did you mean 'off'\?\)"):
        load_config(overrides=["data.chat_template=of"])
    cfg = load_config(overrides=[f"data.chat_template={json.dumps(TINY_TEMPLATE)}", "data.solution_field=sol"])
    assert cfg.data.chat_template == TINY_TEMPLATE
    back = load_config(save_config(cfg, tmp_path / "resolved.yaml"))
    assert (back.data.chat_template, back.data.solution_field) == (TINY_TEMPLATE, "sol")
