"""Built-in rewards: verifiers (exact, numeric, maths, format), shaping (length) and the built-in
task's own verifier. ``code_tests`` (sandboxed execution) lives in ``rewards.code``; the model-based
``llm_judge`` and ``rubric`` in ``rewards.judge``. Importing this module registers all of them.

Each is an ordinary reward function (see ``rewards.api``): tested by calling it directly.

>>> exact_match("", "  The Answer. ", answer="the answer")
1.0
>>> numeric_match("", "so the total is 1,234.0", answer="1234")
1.0
>>> regex_format("", "<think>hm</think> <answer>4</answer>", tags=["think", "answer"])
1.0
>>> length_penalty("", "", num_tokens=90, max_new_tokens=100, cache_tokens=20)
-0.5
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Literal

from rewards.registry import reward

_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?(?:/\d+)?")


def normalize_text(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace collapsed, surrounding whitespace and trailing
    sentence punctuation removed.

    >>> normalize_text("  Paris.\\n"), normalize_text("NEW   york!")
    ('paris', 'new york')
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = " ".join(text.split())
    return text.rstrip(".!?;:").strip()


def extract(completion: str, pattern: str | None) -> str | None:
    """The answer part of ``completion``: the last match of ``pattern`` (its first group if it has
    one), or the whole completion when ``pattern`` is None; None when the pattern does not match.

    >>> extract("<answer>4</answer> <answer>5</answer>", r"<answer>(.*?)</answer>")
    '5'
    """
    if pattern is None:
        return completion
    matches = list(re.finditer(pattern, completion, flags=re.DOTALL))
    if not matches:
        return None
    last = matches[-1]
    return last.group(1) if last.groups() else last.group(0)


def _answers(answer: str | list[str] | None) -> list[str]:
    if answer is None:
        raise ValueError("this reward needs the dataset's 'answer' field (data.answer_field)")
    return [str(a) for a in answer] if isinstance(answer, (list, tuple)) else [str(answer)]


@reward("exact_match")
def exact_match(
    prompt: str, completion: str, *, answer: str | list[str], normalize: bool = True, answer_pattern: str | None = None
) -> float:
    """1.0 when the completion (or its ``answer_pattern`` match) equals ``answer`` (or any of a list of
    answers) after ``normalize_text``; 0.0 otherwise.

    >>> exact_match("", "<answer> 42 </answer>", answer=["41", "42"], answer_pattern=r"<answer>(.*?)</answer>")
    1.0
    >>> exact_match("", "Paris", answer="paris", normalize=False)
    0.0
    """
    got = extract(completion, answer_pattern)
    if got is None:
        return 0.0
    norm = normalize_text if normalize else (lambda s: s)
    return 1.0 if norm(got) in {norm(a) for a in _answers(answer)} else 0.0


def parse_number(text: str) -> float | None:
    """The last number written in ``text`` (``1,234``, ``-0.5``, ``3/4``, ``1e-3``), or None.

    >>> parse_number("x = 3/4, not 7"), parse_number("-1,000.5 apples"), parse_number("none")
    (7.0, -1000.5, None)
    """
    found = [m.group(0) for m in _NUMBER.finditer(text) if any(c.isdigit() for c in m.group(0))]
    if not found:
        return None
    token = found[-1].replace(",", "")
    if "/" in token:
        num, den = token.split("/")
        return float(num) / float(den) if float(den) != 0 else None
    return float(token)


@reward("numeric_match")
def numeric_match(
    prompt: str,
    completion: str,
    *,
    answer: str | float,
    rel_tol: float = 1e-6,
    abs_tol: float = 1e-9,
    answer_pattern: str | None = None,
) -> float:
    """1.0 when the last number in the completion equals the numeric ``answer`` within the
    tolerances (``math.isclose``); 0.0 when it differs or the completion has no number. An answer
    that is not a number is a data error (the sample is marked failed).

    >>> numeric_match("", "about 3.1416", answer="3.14159", rel_tol=1e-4)
    1.0
    >>> numeric_match("", "I think 12", answer="13"), numeric_match("", "no idea", answer="13")
    (0.0, 0.0)
    """
    gold = parse_number(str(answer))
    if gold is None:
        raise ValueError(f"answer {answer!r} is not a number")
    got_text = extract(completion, answer_pattern)
    got = parse_number(got_text) if got_text is not None else None
    return 1.0 if got is not None and math.isclose(got, gold, rel_tol=rel_tol, abs_tol=abs_tol) else 0.0


@reward("math_verify")
def math_verify(prompt: str, completion: str, *, answer: str, timeout_s: int = 5) -> float:
    """1.0 when the completion's final answer is mathematically equivalent to ``answer``, using the
    ``math-verify`` package: LaTeX and ``\\boxed{}`` answers, fractions vs decimals, equivalent
    expressions and sets. The gold answer may be written with or without ``$...$``.

    >>> math_verify("", "so the result is $\\\\boxed{\\\\frac{1}{2}}$", answer="0.5")
    1.0
    >>> math_verify("", "The answer is \\\\boxed{x^2+2x+1}", answer="(x+1)^2")
    1.0
    >>> math_verify("", "\\\\boxed{3}", answer="4")
    0.0
    """
    from math_verify import parse, verify

    gold = parse(answer if "$" in answer or "\\boxed" in answer else f"${answer}$", parsing_timeout=timeout_s)
    if not gold:
        raise ValueError(f"math-verify cannot parse the gold answer {answer!r}")
    pred = parse(completion, parsing_timeout=timeout_s)
    if not pred:
        return 0.0
    return 1.0 if verify(gold, pred, timeout_seconds=timeout_s) else 0.0


def tag_pattern(tags: list[str]) -> str:
    """A pattern for ``<t1>...</t1> <t2>...</t2> ...`` in this order, with only whitespace around.

    >>> tag_pattern(["think", "answer"])
    '\\\\s*<think>.*?</think>\\\\s*<answer>.*?</answer>\\\\s*'
    """
    return r"\s*" + r"\s*".join(f"<{re.escape(t)}>.*?</{re.escape(t)}>" for t in tags) + r"\s*"


@reward("regex_format")
def regex_format(
    prompt: str,
    completion: str,
    *,
    pattern: str | None = None,
    tags: str | list[str] | None = None,
    full_match: bool = True,
) -> float:
    """1.0 when the completion has the required format: a regular expression ``pattern`` (dot matches
    newlines), or a sequence of XML-like ``tags`` such as ``["think", "answer"]``; the whole
    completion must match unless ``full_match`` is False.

    >>> regex_format("", "<think>a</think><answer>b</answer> trailing", tags=["think", "answer"])
    0.0
    >>> regex_format("", "Final: 12", pattern=r"Final: \\d+", full_match=False)
    1.0
    """
    if (pattern is None) == (tags is None):
        raise ValueError("regex_format needs exactly one of 'pattern' or 'tags'")
    if isinstance(tags, str):
        tags = [tags]
    regex = pattern if pattern is not None else tag_pattern(list(tags or []))
    match = re.fullmatch if full_match else re.search
    return 1.0 if match(regex, completion, flags=re.DOTALL) else 0.0


@reward("length_penalty")
def length_penalty(
    prompt: str,
    completion: str,
    *,
    num_tokens: int,
    max_new_tokens: int | None = None,
    mode: Literal["overlong", "target"] = "overlong",
    max_length: int | None = None,
    cache_tokens: int = 0,
    target: int | None = None,
    scale: float = 1.0,
) -> float:
    """Length shaping, added to a correctness reward with a weight.

    ``overlong`` (DAPO's soft overlong punishment): with L_max = ``max_length`` (default the run's
    ``max_new_tokens``) and L_cache = ``cache_tokens``, a completion of L tokens gets 0 up to
    L_max - L_cache, then a linear penalty reaching -1 at L_max, and -1 beyond.
    ``target``: ``-|L - target| / target``. Both are multiplied by ``scale``.

    >>> [length_penalty("", "", num_tokens=n, max_length=100, cache_tokens=20) for n in (80, 90, 100, 120)]
    [0.0, -0.5, -1.0, -1.0]
    >>> length_penalty("", "", num_tokens=150, mode="target", target=100)
    -0.5
    """
    if mode not in ("overlong", "target"):
        raise ValueError(f"length_penalty mode must be 'overlong' or 'target', got {mode!r}")
    if mode == "target":
        if not target or target <= 0:
            raise ValueError("length_penalty mode 'target' needs a positive 'target'")
        return -scale * abs(num_tokens - target) / target
    limit = max_length if max_length is not None else max_new_tokens
    if limit is None:
        raise ValueError("length_penalty needs 'max_length' (or the run's max_new_tokens)")
    if not 0 <= cache_tokens <= limit:
        raise ValueError(f"cache_tokens must be in [0, {limit}], got {cache_tokens}")
    free = limit - cache_tokens
    if num_tokens <= free:
        return 0.0
    if num_tokens > limit or cache_tokens == 0:
        return -scale
    return scale * (free - num_tokens) / cache_tokens


@reward("builtin_task")
def builtin_task(prompt: str, completion: str, *, answer: str, task: str) -> float:
    """The exact verifier of a built-in task (``builtin:<task>`` data), e.g. ``arithmetic``.

    >>> builtin_task("12+34=", "46", answer="46", task="arithmetic")
    1.0
    """
    from rlft.tasks import get_task

    return get_task(task).score(completion, str(answer))


# The built-ins that live in their own modules: importing this one registers every built-in.
import rewards.code  # noqa: E402,F401  (code_tests)
import rewards.judge  # noqa: E402,F401  (llm_judge, rubric)
