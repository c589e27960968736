"""The two programs ``code_tests`` runs in sandboxes, kept as functions shipped as source.

``serve(solution, limit)`` is the *solution server*: it runs the solution as module ``solution``,
then answers requests, one JSON line each, on the channel (the stdin and stdout it started with;
the solution's own ``input()`` meets an empty stdin and its prints go to stderr):

- ``{"op": "eval", "src": ...}``: an expression evaluated in the solution's namespace;
- ``{"op": "get", "name": ...}``: a global of the solution;
- ``{"op": "call", "h": id, "args": [...], "kwargs": [[name, value], ...]}``: call a handle;
- ``{"op": "attr", "h": id, "name": ...}`` and ``{"op": "item", "h": id, "key": ...}``.

Each gets one reply line: ``{"value": <plain data>}`` (``rewards.plain_data``), ``{"handle": id}``
for anything else (the object stays in the server), or ``{"raised": [type name, message, nearest
builtin exception class name, args]}``. A call's reply also carries ``"changed"``: the new value of
each list, dict or set argument the call changed, so a test that sorts a list in place sees it.
The solution can tamper with all of this; it never holds an expected value, so whatever it answers
is just its output.

``run_test(test, fetch, imports, limit)`` is the *test runner*: the client of ``run_pair``, in a
sandbox of its own, running the dataset's test with intact builtins. It binds the names in ``fetch``
to the server's values (plain data as real values, the rest as ``Remote`` proxies) and imports the
stdlib modules in ``imports`` itself. A ``Remote`` supports calls, attribute access and indexing by
RPC and nothing else: truth value, comparisons, hashing, length, iteration, membership and
conversions raise ``TypeError``, so only plain data can make an assertion pass. The runner's exit
status is the verdict: 0 when the test ran to completion, ``BROKEN`` (86) when the server ended or
broke the protocol (``os._exit``: a test's ``except`` cannot catch it).

>>> "def serve(" in server_source() and "class Remote" in runner_source()
True
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from rewards.plain_data import codec_source

BROKEN = 86
"""The runner's exit status when the solution's process ended or broke the protocol."""


def serve(solution: str, limit: int) -> None:
    """Run ``solution`` as module ``solution``, then answer requests until the channel ends."""
    import json
    import posix
    import sys

    requests, replies = open(posix.dup(0), "rb"), posix.dup(1)
    posix.dup2(2, 1)  # the solution's prints go to stderr, never onto the reply channel
    empty, writer = posix.pipe()
    posix.close(writer)
    posix.dup2(empty, 0)  # and its input() reads nothing: the requests are not its input
    posix.close(empty)
    module = sys.modules["solution"] = type(sys)("solution")
    namespace = vars(module)
    exec(compile(solution, "solution.py", "exec"), namespace)
    handles = []

    def deref(handle):
        return handles[handle]

    def raised(err):
        import builtins

        kind = type(err)
        base = next((c.__name__ for c in kind.__mro__ if getattr(builtins, c.__name__, None) is c), "Exception")
        try:
            message = str(err)[:2000]
        except Exception:
            message = kind.__name__
        try:
            args = encode(err.args)
            args = args if len(json.dumps(args)) < 10000 else ["t", message]
        except Exception:
            args = ["t", message]
        return [kind.__name__[:200], message, base, args]

    def changes(sent, values):
        changed = []
        for (key, form), value in zip(sent, values):
            try:
                if type(value) in (list, dict, set) and encode(value) != form:
                    changed.append([key, encode(value)])
            except PlainDataError:
                pass  # it holds something that is not plain data now: the test keeps its own copy
        return changed

    def answer(request):
        op, changed = request["op"], []
        if op == "eval":
            result = eval(compile(request["src"], "test.py", "eval"), namespace)
        elif op == "get":
            if request["name"] not in namespace:
                raise NameError("name %r is not defined" % request["name"])
            result = namespace[request["name"]]
        elif op == "attr":
            result = getattr(handles[request["h"]], request["name"])
        elif op == "item":
            result = handles[request["h"]][decode(request["key"], deref)]
        else:
            args = [decode(form, deref) for form in request["args"]]
            kwargs = {name: decode(form, deref) for name, form in request["kwargs"]}
            result = handles[request["h"]](*args, **kwargs)
            changed = changes(list(enumerate(request["args"])) + request["kwargs"], args + list(kwargs.values()))
        return result, changed

    for line in requests:
        try:
            result, changed = answer(json.loads(line))
        except Exception as err:
            reply = json.dumps({"raised": raised(err)})
        else:
            reply = ""
            try:
                value = encode(result)
                reply = json.dumps({"value": value, "changed": changed})
                if len(reply) >= limit:  # the changed arguments are what the test can do without
                    reply = json.dumps({"value": value})
            except PlainDataError:
                pass
            if not reply or len(reply) >= limit:  # not plain data, or too large for a reply line
                handles.append(result)
                reply = json.dumps({"handle": len(handles) - 1})
        data = (reply + "\n").encode()
        while data:
            data = data[posix.write(replies, data) :]
    posix._exit(0)  # the solution's threads and atexit handlers have nothing left to add


def run_test(test: str, fetch: list[str], imports: list[str], limit: int) -> None:
    """Run ``test`` against the solution server at the other end of stdin/stdout."""
    import builtins
    import json
    import posix
    import sys

    channel_in, channel_out = open(posix.dup(0), "rb"), posix.dup(1)
    posix.dup2(2, 1)  # the test's prints go to stderr, off the channel
    empty, writer = posix.pipe()
    posix.close(writer)
    posix.dup2(empty, 0)
    posix.close(empty)

    def broken(why):
        posix.write(2, ("code_tests: the solution's process %s\n" % why).encode())
        posix._exit(86)  # BROKEN; not an exception, which the test could catch

    def exchange(request):
        data = (json.dumps(request) + "\n").encode()
        try:
            while data:
                data = data[posix.write(channel_out, data) :]
        except OSError:
            broken("closed the channel")
        line = channel_in.readline(limit + 1)
        if not line.endswith(b"\n"):
            broken("ended, or sent an overlong reply")
        try:
            reply = parse_line(line)
        except PlainDataError as err:
            broken("sent a malformed reply (%s)" % err)
        if type(reply) is not dict:
            broken("sent a reply that is not an object")
        return reply

    def exception(raised):
        if type(raised) is not list or len(raised) != 4 or not all(type(s) is str for s in raised[:3]):
            broken("sent a malformed exception")
        name, message, base, args = raised
        kind = getattr(builtins, base, None)
        # Never an exit, nor a StopIteration that would end the test's loop or map() early
        ending = (StopIteration, StopAsyncIteration)
        if type(kind) is not type or not issubclass(kind, Exception) or issubclass(kind, ending):
            kind = Exception
        try:
            if name != kind.__name__:
                kind = type(name, (kind,), {"__module__": "solution"})
            args = decode(args)
            return kind(*(args if type(args) is tuple else (message,)))
        except Exception:
            return Exception("%s: %s" % (name, message))

    def update(target, value):
        if type(target) is list and type(value) is list:
            target[:] = value
        elif type(target) in (dict, set) and type(target) is type(value):
            target.clear()
            target.update(value)

    def rpc(request, args=(), kwargs=None):
        reply = exchange(request)
        if "raised" in reply:
            raise exception(reply["raised"])
        if type(reply.get("handle")) is int:
            return Remote(reply["handle"])
        if "value" not in reply:
            broken("sent a reply with neither value, handle nor exception")
        try:
            for key, form in reply.get("changed", ()):
                update(args[key] if type(key) is int else kwargs[key], decode(form))
            return decode(reply["value"])
        except (PlainDataError, LookupError, TypeError, ValueError) as err:
            broken("sent a malformed reply (%s)" % err)

    def outgoing(value):
        try:
            return encode(value, ref=lambda v: v._handle if type(v) is Remote else None)
        except PlainDataError:
            raise TypeError("only plain data and the solution's own objects can be passed to the solution") from None

    class Remote:
        """A value of the solution that is not plain data; it stays in the solution's process."""

        __slots__ = ("_handle",)

        def __init__(self, handle):
            object.__setattr__(self, "_handle", handle)

        def __call__(self, *args, **kwargs):
            request = {"op": "call", "h": self._handle, "args": [outgoing(a) for a in args]}
            request["kwargs"] = [[k, outgoing(v)] for k, v in kwargs.items()]
            return rpc(request, args, kwargs)

        def __getattr__(self, name):
            return rpc({"op": "attr", "h": self._handle, "name": name})

        def __getitem__(self, key):
            return rpc({"op": "item", "h": self._handle, "key": outgoing(key)})

        def __repr__(self):
            return "<the solution's object #%d>" % self._handle

        def _refuse(self, *args):
            raise TypeError("the solution's object #%d is not plain data: only calls, attributes and "
                            "indexing reach it" % self._handle)  # fmt: skip

        __bool__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __len__ = __iter__ = _refuse
        __contains__ = __reversed__ = __index__ = __int__ = __float__ = __complex__ = __round__ = _refuse
        __str__ = __format__ = __bytes__ = __setattr__ = __delattr__ = __setitem__ = __delitem__ = _refuse
        __hash__ = None

    def solution_global(name):
        try:
            return rpc({"op": "get", "name": name})
        except Exception:
            raise AttributeError("the solution has no %r" % name) from None

    module = sys.modules["solution"] = type(sys)("solution")
    module.__getattr__ = solution_global  # `from solution import f` and `solution.f` reach the server
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    for name in imports:
        try:
            namespace[name] = __import__(name)
        except ImportError:
            fetch = [*fetch, name]
    for name in fetch:
        try:
            namespace[name] = solution_global(name)
        except AttributeError:
            pass  # left unbound: the test meets a NameError where it uses it, as it would have
    exec(compile(test, "test.py", "exec"), namespace)


@functools.cache
def server_source() -> str:
    """The source that defines ``serve`` (with the codec); a program calls it at its end."""
    return _program(serve)


@functools.cache
def runner_source() -> str:
    """The source that defines ``run_test`` (with the codec); a program calls it at its end."""
    return _program(run_test)


def program(source: str, call: str, *args: Any) -> str:
    """``source`` then a call of ``call`` with ``args`` written as literals.

    >>> program("def f(x):\\n    print(x)\\n", "f", "hi")
    "def f(x):\\n    print(x)\\n\\nf('hi')\\n"
    """
    return f"{source}\n{call}({', '.join(map(repr, args))})\n"


def _program(fn: Any) -> str:
    return f"from __future__ import annotations\n\n{codec_source()}\n\n\n{inspect.getsource(fn)}"
