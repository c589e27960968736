r"""Reading the fields of one dataset row: dotted paths into nested fields, and chat messages.

Rows are plain dicts (a JSON Lines object, a Parquet or ``datasets`` row). A ``*_field`` setting
names a column, or a nested field by a dotted path as verl's rows need
(``reward_model.ground_truth``); a column whose own name holds the dots wins. A prompt is text or a
list of chat messages (TRL's conversational format, verl's ``prompt`` column).

>>> row = {"prompt": [{"role": "user", "content": "2+2="}], "reward_model": {"ground_truth": 4}}
>>> field_value(row, "reward_model.ground_truth")
4
>>> as_messages(row["prompt"], "prompt")
[{'role': 'user', 'content': '2+2='}]
"""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]
_MISSING = object()


class FieldError(ValueError):
    """A field that a row lacks or holds in the wrong shape; the loader adds the file and line."""


def field_value(row: dict[str, Any], path: str) -> Any:
    """The value at ``path`` in ``row``: a column, else a dotted path through nested objects.

    >>> field_value({"a.b": 1, "a": {"b": 2}}, "a.b")  # a column named with the dots wins
    1
    >>> field_value({"extra": {"level": None}}, "extra.level") is None
    True
    >>> field_value({"reward_model": {"style": "rule"}}, "reward_model.ground_truth")
    Traceback (most recent call last):
    ...
    rlft.data.rows.FieldError: missing field 'reward_model.ground_truth'; 'reward_model' has fields: style
    """
    if path in row:
        return row[path]
    parts = path.split(".")
    value: Any = row
    for depth, part in enumerate(parts):
        if not isinstance(value, dict):
            parent = ".".join(parts[:depth])
            raise FieldError(
                f"field '{parent}' is {type(value).__name__}, not an object, so '{path}' cannot be read"
            )
        found = value.get(part, _MISSING)
        if found is _MISSING:
            have = ", ".join(sorted(map(str, value))) or "(none)"
            whose = "the row" if depth == 0 else f"'{'.'.join(parts[:depth])}'"
            raise FieldError(f"missing field '{path}'; {whose} has fields: {have}")
        value = found
    return value


def as_messages(value: Any, name: str) -> list[Message]:
    """``value`` checked as a non-empty list of chat messages (``role`` and text ``content``).

    Each message is copied; keys besides ``role`` and ``content`` are kept for the chat template.

    >>> as_messages([{"role": "user", "content": "hi", "name": "ann"}], "prompt")
    [{'role': 'user', 'content': 'hi', 'name': 'ann'}]
    >>> as_messages([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "prompt")
    Traceback (most recent call last):
    ...
    rlft.data.rows.FieldError: field 'prompt', message 0: 'content' must be a string, got list
    """
    if not isinstance(value, (list, tuple)) or not value:
        raise FieldError(f"field '{name}' must be a non-empty list of chat messages")
    messages = []
    for i, message in enumerate(value):
        at = f"field '{name}', message {i}"
        if not isinstance(message, dict):
            raise FieldError(
                f"{at}: expected an object with 'role' and 'content', got {type(message).__name__}: "
                f"{message!r:.40}"
            )
        role = message.get("role")
        if not isinstance(role, str) or not role:
            have = ", ".join(sorted(message)) or "(none)"
            raise FieldError(f"{at}: needs a 'role' (system, user, assistant, ...); the message has: {have}")
        content = message.get("content")
        if not isinstance(content, str):
            raise FieldError(f"{at}: 'content' must be a string, got {type(content).__name__}")
        messages.append(dict(message))
    return messages


def split_solution(messages: list[Message]) -> tuple[list[Message], str | None]:
    """A conversation's prompt and, when its last message is the assistant's, that reference reply.

    >>> split_solution([{"role": "user", "content": "2+2="}, {"role": "assistant", "content": "4"}])
    ([{'role': 'user', 'content': '2+2='}], '4')
    >>> split_solution([{"role": "user", "content": "2+2="}])
    ([{'role': 'user', 'content': '2+2='}], None)
    """
    if messages[-1]["role"] == "assistant":
        return messages[:-1], messages[-1]["content"]
    return messages, None


def solution_text(value: Any, name: str) -> str:
    """A reference completion as text: a string, a number, or one assistant message in a list
    (TRL's conversational ``completion`` column).

    >>> solution_text([{"role": "assistant", "content": "4"}], "completion"), solution_text(4, "s")
    ('4', '4')
    """
    if isinstance(value, (list, tuple)):
        messages = as_messages(value, name)
        if len(messages) != 1 or messages[0]["role"] != "assistant":
            roles = ", ".join(m["role"] for m in messages)
            raise FieldError(f"field '{name}' must hold one assistant message as the reference, got: {roles}")
        return messages[0]["content"]
    if isinstance(value, dict):
        raise FieldError(f"field '{name}' must be text or a list with one assistant message, got an object")
    return value if isinstance(value, str) else str(value)
