r"""Prompt records from JSON Lines, Parquet, Hugging Face datasets on disk, or a built-in task.

Every check runs here, before a model is built: a bad row fails with a ``DataError`` that names the
file, the line (JSON Lines, 1-based, counting blank lines) or row (0-based), and the field.

>>> import json, pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "qa.jsonl"
>>> _ = path.write_text('{"prompt": "1+1=", "answer": 2, "level": "easy"}\n\n{"question": "2+2="}\n')
>>> load_records(path, metadata_fields=["level"])
Traceback (most recent call last):
...
rlft.data.loading.DataError: ...qa.jsonl, line 3: missing field 'prompt'; the row has fields: question
>>> _ = path.write_text('{"prompt": "1+1=", "answer": 2, "level": "easy"}\n')
>>> load_records(path, metadata_fields=["level"])
[Record(prompt_id='qa:0', prompt='1+1=', answer='2', metadata={'level': 'easy'}, solution=None)]
>>> load_records("builtin:arithmetic:eval")[0].prompt
'57+44='

A prompt may be a list of chat messages; the assistant's last message is then the reference
completion (``solution``) unless ``solution_field`` names a column for it. Dotted field names reach
into nested fields, as verl's rows need:

>>> row = {"prompt": [{"role": "user", "content": "2+2="}, {"role": "assistant", "content": "4"}],
...        "reward_model": {"ground_truth": 4}}
>>> _ = path.write_text(json.dumps(row) + "\n")
>>> load_records(path, answer_field="reward_model.ground_truth")[0]
Record(prompt_id='qa:0', prompt=[{'role': 'user', 'content': '2+2='}], answer='4', metadata={}, solution='4')

``transformers``, ``datasets`` and ``pyarrow`` are imported only by the readers that need them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlft.data.record import Record
from rlft.data.rows import FieldError, Message, as_messages, field_value, solution_text, split_solution

BUILTIN_PREFIX = "builtin:"
ID_FIELD = "id"
"""A column of this name, where present, gives the prompt ids (else ``<file stem>:<row index>``)."""


class DataError(ValueError):
    """A data source or row that cannot be used; the message says where and why."""


def load_records(
    path: str | Path,
    *,
    prompt_field: str = "prompt",
    answer_field: str | None = "answer",
    metadata_fields: Sequence[str] = (),
    solution_field: str | None = None,
    split_name: str = "train",
) -> list[Record]:
    """Read and validate every record of ``path``.

    ``path`` is a ``.jsonl`` or ``.parquet`` file, a directory written by ``datasets``'
    ``save_to_disk`` (a ``DatasetDict`` is read at ``split_name``), or ``builtin:<task>[:split]``
    (the task's own fields; the field arguments are ignored). ``answer_field=None`` reads no answer.
    Answers become ``str``; metadata values are kept as they are (under the field's name as given)
    and must be JSON-serialisable, since they travel to reward workers and into logs. Every field
    name may be a dotted path into nested fields (``reward_model.ground_truth``).

    The prompt is text or a list of chat messages. ``solution_field`` names the reference completion
    (text, or one assistant message); without it, a chat prompt's last message, when it is the
    assistant's, is taken off the prompt as the reference.
    """
    spec = str(path)
    if spec.startswith(BUILTIN_PREFIX):
        return _load_builtin(spec)
    p = Path(spec)
    if not p.exists():
        raise DataError(f"data file not found: {spec}")
    fields = _Fields(prompt_field, answer_field, tuple(metadata_fields), solution_field)
    if p.is_dir():
        rows, where, stem = _read_datasets_dir(p, split_name), "row", p.name
    elif p.suffix == ".jsonl":
        rows, where, stem = _read_jsonl(p), "line", p.stem
    elif p.suffix == ".parquet":
        rows, where, stem = _read_parquet(p), "row", p.stem
    else:
        raise DataError(
            f"unsupported data source '{spec}': expected a .jsonl or .parquet file, a directory saved "
            f"with datasets' save_to_disk, or builtin:<task>[:split]"
        )
    records = _to_records(rows, fields, spec, where, stem)
    if not records:
        raise DataError(f"{spec}: the dataset has no records")
    return records


@dataclass(frozen=True)
class _Fields:
    prompt: str
    answer: str | None
    metadata: tuple[str, ...]
    solution: str | None = None


def _to_records(
    rows: Iterable[tuple[int, Any]], fields: _Fields, spec: str, where: str, stem: str
) -> list[Record]:
    """Validate rows given as ``(location, row)``; ``location`` is a line number or a row index."""
    records: list[Record] = []
    seen: dict[str, int] = {}
    for index, (loc, row) in enumerate(rows):
        at = f"{spec}, {where} {loc}"
        if not isinstance(row, dict):
            raise DataError(f"{at}: expected a JSON object, got {type(row).__name__}")
        prompt, solution = _prompt_and_solution(row, fields, at)
        answer = None
        if fields.answer is not None:
            answer = _as_text(_required(row, fields.answer, at))
        metadata = {}
        for name in fields.metadata:
            value = _required(row, name, at, allow_null=True)
            try:
                json.dumps(value)
            except (TypeError, ValueError) as err:
                raise DataError(f"{at}: metadata field '{name}' is not JSON-serialisable ({err})") from None
            metadata[name] = value
        raw_id = row.get(ID_FIELD)
        prompt_id = str(raw_id) if raw_id is not None else f"{stem}:{index}"
        if prompt_id in seen:
            raise DataError(f"{at}: duplicate prompt id '{prompt_id}' (first at {where} {seen[prompt_id]})")
        seen[prompt_id] = loc
        records.append(Record(prompt_id, prompt, answer, metadata, solution))
    return records


def _prompt_and_solution(
    row: dict[str, Any], fields: _Fields, at: str
) -> tuple[str | list[Message], str | None]:
    """The row's prompt (text or messages) and reference completion (None when it has none)."""
    prompt = _required(row, fields.prompt, at)
    solution = None
    try:
        if isinstance(prompt, (list, tuple)):
            prompt, solution = split_solution(as_messages(prompt, fields.prompt))
            if not prompt or not any(m["content"].strip() for m in prompt):
                raise FieldError(f"field '{fields.prompt}' has no prompt message with text "
                                 "(a closing assistant message is the reference, not part of the prompt)")
            if solution is not None and fields.solution is not None:
                raise FieldError(
                    f"the last message of field '{fields.prompt}' is the assistant's, and solution_field "
                    f"'{fields.solution}' also gives the reference: drop one of them"
                )
        elif not isinstance(prompt, str):
            kind = type(prompt).__name__
            raise FieldError(
                f"field '{fields.prompt}' must be a string or a list of chat messages, "
                f"got {kind}: {prompt!r:.60}"
            )
        elif not prompt.strip():
            raise FieldError(f"field '{fields.prompt}' is empty")
        if fields.solution is not None:
            solution = solution_text(_required(row, fields.solution, at), fields.solution)
    except FieldError as err:
        raise DataError(f"{at}: {err}") from None
    return prompt, solution


def _required(row: dict[str, Any], name: str, at: str, *, allow_null: bool = False) -> Any:
    try:
        value = field_value(row, name)
    except FieldError as err:
        raise DataError(f"{at}: {err}") from None
    if value is None and not allow_null:
        raise DataError(f"{at}: field '{name}' is null")
    return value


def _as_text(value: Any) -> str:
    """Answers as text: strings as they are, containers as JSON (so rewards can parse them back)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def _read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    # Bytes, decoded line by line, so a decoding error names its exact line; utf-8-sig on the first
    # line accepts a byte-order mark, which editors on Windows write.
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}, line {line_no}: not UTF-8 text ({err.reason})") from None
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as err:
                where = f"{path}, line {line_no}"
                raise DataError(f"{where}: invalid JSON ({err.msg} at column {err.colno})") from None


def _read_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow") from err
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: not a readable Parquet file ({err})") from None
    return enumerate(table.to_pylist())


def _read_datasets_dir(path: Path, split_name: str) -> Iterator[tuple[int, Any]]:
    # Recognise the layout first, so a wrong directory gets a data error rather than a datasets trace.
    is_dict = (path / "dataset_dict.json").is_file()
    if not is_dict and not (path / "state.json").is_file():
        raise DataError(
            f"{path} is a directory but not a dataset saved with datasets' save_to_disk "
            f"(no dataset_dict.json or state.json)"
        )
    try:
        import datasets
    except ImportError as err:
        raise ImportError(f"reading {path} needs the datasets package: pip install datasets") from err
    ds = datasets.load_from_disk(str(path))
    if is_dict:
        if split_name not in ds:
            raise DataError(f"{path}: no split '{split_name}'; the dataset has splits: {', '.join(ds)}")
        ds = ds[split_name]
    return enumerate(ds.to_list())


def _load_builtin(spec: str) -> list[Record]:
    from rlft.tasks import get_task  # lazy: rlft.tasks imports this package (rlft.data.record)

    parts = spec[len(BUILTIN_PREFIX):].split(":")
    if len(parts) > 2 or not parts[0]:
        raise DataError(
            f"bad built-in data source '{spec}': expected builtin:<task> or builtin:<task>:<split>"
        )
    name, split = parts[0], parts[1] if len(parts) == 2 else "train"
    try:
        task = get_task(name)
    except KeyError as err:
        raise DataError(f"{spec}: {err.args[0]}") from None
    if split not in task.splits:
        valid = ", ".join(task.splits)
        raise DataError(f"{spec}: task '{name}' has no split '{split}'; valid splits: {valid}")
    # A fixed seed: the built-in data set is the same in every run, so runs compare; the run's seed
    # varies the order in which the curriculum draws from it.
    return task.generate(split, seed=0)
