"""Plain data across a process boundary: a strict codec between a JSON form and Python values.

``code_tests`` lets a sandboxed solution hand values to a judge in another process. What crosses is
plain data only: ``None``, ``bool``, ``int``, ``float`` (``nan``, ``inf`` and ``-0.0`` exactly),
``str``, ``bytes``, ``list``, ``tuple``, ``dict`` (any plain keys), ``set`` and ``frozenset``.
Encoding checks exact types (``type(x) is int``, never ``isinstance``), so an ``int`` subclass or an
object with its own ``__eq__`` is *not* plain data and cannot stand in for an expected value.
Decoding builds nothing but these types and rejects anything malformed with ``PlainDataError`` (a
``ValueError``): the decoder is what the judge trusts, the encoder runs wherever the values are.

The JSON form: ``None``, booleans, strings and small ints as themselves; everything else a list
opening with a tag: ``["f", float.hex()]``, ``["I", hex]`` (an int of 64 bits or more),
``["b", bytes.hex()]``, ``["l", ...]``, ``["t", ...]``, ``["s", ...]``, ``["z", ...]`` (frozenset),
``["d", k1, v1, k2, v2, ...]``; and in requests only, ``["r", id]`` for a value that stays remote.

>>> value = {"a": [1, 2.5, float("-inf")], (None, b"\\x00"): frozenset({True})}
>>> decode(parse_line(json.dumps(encode(value)))) == value
True
"""

from __future__ import annotations

import functools
import inspect
import json
from typing import Any, Callable


class PlainDataError(ValueError):
    """A value that is not plain data (encoding), or a form that is not strictly one (decoding)."""


def encode(value: Any, ref: Callable[[Any], int | None] | None = None, max_depth: int = 100,
           max_items: int = 1_000_000) -> Any:  # fmt: skip
    """The JSON form of plain ``value``; ``PlainDataError`` for anything else, or past
    ``max_depth`` levels or ``max_items`` values. ``ref(x)``, where given, names a value that is not
    plain data by an id (``["r", id]``), or returns ``None`` to refuse it.

    ``OrderedDict``, ``defaultdict`` and ``Counter`` (exactly those classes) travel as a ``dict``:
    they compare equal to one, and the receiver gets a plain ``dict`` either way.

    >>> encode([1, 2**70, -0.0, "x", (b"a",)])
    ['l', 1, ['I', '0x400000000000000000'], ['f', '-0x0.0p+0'], 'x', ['t', ['b', '61']]]
    >>> class Sly(int):
    ...     def __eq__(self, other): return True
    >>> encode(Sly(3))
    Traceback (most recent call last):
    ...
    rewards.plain_data.PlainDataError: Sly is not plain data
    """
    count = 0
    containers = ((list, "l"), (tuple, "t"), (set, "s"), (frozenset, "z"))
    as_dict = ("OrderedDict", "defaultdict", "Counter")

    def enc(x, depth):
        nonlocal count
        count += 1
        if count > max_items or depth > max_depth:
            raise PlainDataError("a value too large or too deeply nested to be plain data")
        kind = type(x)
        if x is None or kind is bool or kind is str:
            return x
        if kind is int:
            return x if -(2**63) <= x < 2**63 else ["I", hex(x)]
        if kind is float:
            return ["f", x.hex()]
        if kind is bytes:
            return ["b", x.hex()]
        for container, tag in containers:  # by identity: a type's own __eq__ never runs here
            if kind is container:
                return [tag, *[enc(item, depth + 1) for item in x]]
        if kind is dict or (kind.__module__ == "collections" and kind.__name__ in as_dict):
            form = ["d"]
            for key, item in dict.items(x):
                form += [enc(key, depth + 1), enc(item, depth + 1)]
            return form
        handle = ref(x) if ref is not None else None
        if handle is None:
            raise PlainDataError("%s is not plain data" % kind.__name__)
        return ["r", handle]

    return enc(value, 0)


def decode(form: Any, deref: Callable[[int], Any] | None = None, max_depth: int = 100) -> Any:
    """The value of a JSON form (as ``json.loads`` gives it) made of plain types only;
    ``PlainDataError`` for anything else. ``deref(id)`` resolves ``["r", id]``; without it a
    reference is malformed.

    >>> decode(["d", "k", ["s", 1, ["f", "nan"]]])["k"] - {1}   # a set's order of nan is by identity
    {nan}
    >>> decode(["l", 1.5])
    Traceback (most recent call last):
    ...
    rewards.plain_data.PlainDataError: not plain data: 1.5
    """

    def dec(x, depth):
        if depth > max_depth:
            raise PlainDataError("plain data nested too deeply")
        kind = type(x)
        if x is None or kind is bool or kind is str or kind is int:
            return x
        if kind is not list or not x or type(x[0]) is not str:
            raise PlainDataError("not plain data: %.80r" % (x,))
        tag, items = x[0], x[1:]
        if tag in ("f", "I", "b", "r") and (len(items) != 1 or type(items[0]) is not (int if tag == "r" else str)):
            raise PlainDataError("malformed %r" % tag)
        try:
            if tag == "f":
                return float.fromhex(items[0])
            if tag == "I":
                return int(items[0], 16)
            if tag == "b":
                return bytes.fromhex(items[0])
            if tag == "r" and deref is not None:
                return deref(items[0])
        except (TypeError, ValueError, OverflowError, LookupError) as err:  # bad hex, an unknown id
            raise PlainDataError("malformed %r: %s" % (tag, err)) from None
        values = [dec(item, depth + 1) for item in items]
        try:
            if tag == "l":
                return values
            if tag == "t":
                return tuple(values)
            if tag in ("s", "z"):
                return set(values) if tag == "s" else frozenset(values)
            if tag == "d" and len(values) % 2 == 0:
                pairs = dict(zip(values[::2], values[1::2]))
                if 2 * len(pairs) == len(values):  # a repeated key is not what an encoder writes
                    return pairs
        except TypeError as err:  # an unhashable key or member
            raise PlainDataError("malformed %r: %s" % (tag, err)) from None
        raise PlainDataError("malformed or unknown tag %.20r" % tag)

    return dec(form, 0)


def parse_line(line: str | bytes) -> Any:
    """One line of JSON, strictly: no floats (they travel tagged), no ``NaN`` constants, no
    integers of more than 20 digits, no nesting past the parser's stack; ``PlainDataError`` else.

    >>> parse_line('{"value": ["l", 1, "a"]}')
    {'value': ['l', 1, 'a']}
    >>> parse_line("[1.5]")
    Traceback (most recent call last):
    ...
    rewards.plain_data.PlainDataError: not strict JSON: a raw number 1.5
    """

    def refuse(text):
        raise PlainDataError("not strict JSON: a raw number %.40s" % text)

    def small_int(text):
        return int(text) if len(text) <= 20 else refuse(text)

    try:
        return json.loads(line, parse_float=refuse, parse_constant=refuse, parse_int=small_int)
    except PlainDataError:
        raise
    except (ValueError, RecursionError, TypeError) as err:  # JSONDecodeError and bad UTF-8 are ValueErrors
        raise PlainDataError("not a line of JSON: %s" % err) from None


@functools.cache
def codec_source() -> str:
    """This codec as source, for programs that run in a sandbox (``python -S``: stdlib only). A
    program using it starts with ``from __future__ import annotations`` (the signatures name types).

    >>> namespace = {}
    >>> exec("from __future__ import annotations\\n" + codec_source(), namespace)
    >>> namespace["decode"](namespace["encode"]((1, "a")))
    (1, 'a')
    """
    parts = [inspect.getsource(PlainDataError), inspect.getsource(encode), inspect.getsource(decode)]
    parts.append(inspect.getsource(parse_line))
    return "import json\n\n" + "\n\n".join(parts)
