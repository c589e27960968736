r"""Records -> tokenised ``Prompt``s: chat template, BOS, length limit.

>>> from rlft.models import build_tokenizer
>>> from rlft.data.loading import Record
>>> tok = build_tokenizer()
>>> prompts, report = prepare_prompts([Record("r:0", "12+34=", "46")], tok)
>>> prompts[0].token_ids[:3], tok.decode(prompts[0].token_ids), prompts[0].metadata
([2, 5, 6], '<bos>12+34=', {'answer': '46'})
>>> report
PromptReport(total=1, kept=1, skipped_too_long=0, max_tokens=7, limit=None, templated=False, skipped_ids=())

With a chat template (here a toy one) the text is templated and ends with the generation prompt:

>>> tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
>>> prompts, _ = prepare_prompts([Record("r:0", "hi", None)], tok, system_prompt="Be brief.")
>>> print(prompts[0].text)
system: Be brief.
user: hi
assistant:
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rlft.data.loading import DataError, Record
from rlft.types import Prompt

ChatTemplateMode = str  # "auto", "on", "off", or a Jinja chat template
TooLong = Literal["error", "skip"]
# Hugging Face stores a huge sentinel (1e30) in model_max_length when it does not know the context.
_UNKNOWN_LENGTH = 10**9
_SHOWN_IDS = 5


@dataclass(frozen=True)
class PromptReport:
    """What ``prepare_prompts`` did, for the run log."""

    total: int  # records given
    kept: int  # prompts returned
    skipped_too_long: int  # records dropped by too_long="skip"
    max_tokens: int  # longest kept prompt, in tokens
    limit: int | None = None  # the length limit applied (None: unlimited)
    templated: bool = False  # whether the chat template was applied
    skipped_ids: tuple[str, ...] = ()  # the first few skipped prompt ids

    def summary(self) -> str:
        """One line for the console.

        >>> PromptReport(10, 8, 2, 30, 32, False, ("a:1", "a:5")).summary()
        'prompts: 8 of 10 kept, longest 30 tokens (limit 32); 2 skipped as too long: a:1, a:5'
        """
        text = (
            f"prompts: {self.kept} of {self.total} kept, "
            f"longest {self.max_tokens} tokens (limit {self.limit})"
        )
        if self.skipped_too_long:
            more = ", ..." if self.skipped_too_long > len(self.skipped_ids) else ""
            text += f"; {self.skipped_too_long} skipped as too long: {', '.join(self.skipped_ids)}{more}"
        return text


def is_template_text(value: object) -> bool:
    """Whether a ``chat_template`` setting is a Jinja template itself rather than a mode.

    >>> is_template_text("{{ messages[0]['content'] }}"), is_template_text("auto")
    (True, False)
    """
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def chat_template_of(tokenizer: Any, mode: ChatTemplateMode) -> tuple[bool, str | None]:
    """Whether ``mode`` templates the prompts, and the template to use (None: the tokenizer's own).

    ``mode`` is ``auto`` (the tokenizer's template when it has one), ``on`` (it must have one),
    ``off``, or a Jinja chat template given in the config, which wins over the tokenizer's.

    >>> from rlft.models import build_tokenizer
    >>> chat_template_of(build_tokenizer(), "auto"), chat_template_of(build_tokenizer(), "{{ 'x' }}")
    ((False, None), (True, "{{ 'x' }}"))
    """
    if is_template_text(mode):
        return True, mode
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"chat_template must be 'auto', 'on', 'off' or a Jinja chat template, got {mode!r}")
    has = bool(getattr(tokenizer, "chat_template", None))
    if mode == "on" and not has:
        raise DataError(
            "chat_template='on' but the tokenizer has no chat template; use 'auto' or 'off', "
            "give a Jinja chat template as data.chat_template, or a tokenizer that ships one"
        )
    return has and mode != "off", None


def _limit(
    tokenizer: Any, max_prompt_tokens: int | None, context_tokens: int | None, max_new_tokens: int
) -> tuple[int | None, str]:
    """The limit and how to let longer prompts through (for the error message)."""
    if max_prompt_tokens is not None and max_prompt_tokens < 1:
        raise ValueError(f"max_prompt_tokens must be >= 1, got {max_prompt_tokens}")
    known = getattr(tokenizer, "model_max_length", None)
    known = known if isinstance(known, int) and 0 < known < _UNKNOWN_LENGTH else None
    contexts = [c for c in (context_tokens, known) if c is not None]
    if not contexts:
        return max_prompt_tokens, "raise data.max_prompt_tokens or set data.too_long='skip'"
    context = min(contexts)
    room = context - max_new_tokens
    if room < 1:
        raise DataError(
            f"rollout.max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's context "
            f"of {context} tokens; lower rollout.max_new_tokens"
        )
    if max_prompt_tokens is not None and max_prompt_tokens <= room:
        return max_prompt_tokens, "raise data.max_prompt_tokens or set data.too_long='skip'"
    fix = (
        f"the model's context of {context} tokens minus rollout.max_new_tokens={max_new_tokens} leaves room "
        f"for {room}: shorten them, lower rollout.max_new_tokens, or set data.too_long='skip'"
    )
    return room, fix


def prepare_prompts(
    records: Sequence[Record],
    tokenizer: Any,
    *,
    chat_template: ChatTemplateMode = "auto",
    system_prompt: str | None = None,
    max_prompt_tokens: int | None = None,
    too_long: TooLong = "error",
    context_tokens: int | None = None,
    max_new_tokens: int = 0,
) -> tuple[list[Prompt], PromptReport]:
    """Template and tokenise ``records`` for generation.

    With a chat template, a text prompt becomes a user message (after ``system_prompt`` as a system
    message) and a chat prompt's messages are used as they are (``system_prompt`` goes first when
    they have no system message), rendered with ``add_generation_prompt=True``. Without one, the
    raw text is used; a ``system_prompt`` is then an error, since it would have nowhere to go, and
    so is a chat prompt. Text is tokenised without the tokenizer's automatic special tokens —
    templates write their own — and the BOS token is put first when the tokenizer has one and the
    text did not already start with it, so every prompt has at least one token to condition the
    first completion token on. ``metadata`` is the record's plus ``answer``.

    Prompts over the limit are dropped and counted with ``too_long="skip"``; with ``"error"`` a
    ``DataError`` says how many there are, the longest and the limit. The limit is
    ``max_prompt_tokens`` or the room the model's context (``context_tokens``, else the tokenizer's
    known one) leaves for ``max_new_tokens`` completion tokens, whichever is smaller: the rollout
    engine refuses a longer prompt.
    """
    if too_long not in ("error", "skip"):
        raise ValueError(f"too_long must be 'error' or 'skip', got {too_long!r}")
    if not records:
        raise DataError("no prompts to prepare: the dataset is empty")
    templated, template = chat_template_of(tokenizer, chat_template)
    if system_prompt is not None and not templated:
        raise DataError(
            "system_prompt is set but no chat template is applied (chat_template='off' or the tokenizer "
            "has none); remove it, or write the instruction into the prompts"
        )
    if not templated:
        _no_chat_prompts(records, chat_template)
    limit, fix = _limit(tokenizer, max_prompt_tokens, context_tokens, max_new_tokens)
    texts = [_render(tokenizer, r, system_prompt, template) if templated else r.prompt for r in records]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)

    prompts: list[Prompt] = []
    too_long_ids: list[tuple[str, int]] = []
    for record, text, ids in zip(records, texts, encoded):
        ids = list(ids)
        if bos is not None and ids[:1] != [bos]:
            ids.insert(0, bos)
        if not ids:
            raise DataError(f"prompt '{record.prompt_id}' has no tokens and the tokenizer has no BOS token")
        if limit is not None and len(ids) > limit:
            too_long_ids.append((record.prompt_id, len(ids)))
            continue
        metadata = {**record.metadata, "answer": record.answer}
        prompts.append(Prompt(record.prompt_id, ids, text, metadata))

    if too_long_ids and too_long == "error":
        longest_id, longest = max(too_long_ids, key=lambda x: x[1])
        raise DataError(
            f"{len(too_long_ids)} of {len(records)} prompts are longer than the limit of {limit} tokens "
            f"(longest: {longest} tokens, prompt '{longest_id}'); {fix}"
        )
    if not prompts:
        raise DataError(f"all {len(records)} prompts are longer than the limit of {limit} tokens")
    report = PromptReport(
        total=len(records),
        kept=len(prompts),
        skipped_too_long=len(too_long_ids),
        max_tokens=max(len(p.token_ids) for p in prompts),
        limit=limit,
        templated=templated,
        skipped_ids=tuple(pid for pid, _ in too_long_ids[:_SHOWN_IDS]),
    )
    return prompts, report


def _no_chat_prompts(records: Sequence[Record], mode: ChatTemplateMode) -> None:
    """Chat prompts need a template: say which setting is missing."""
    chat = [r.prompt_id for r in records if not isinstance(r.prompt, str)]
    if not chat:
        return
    why = "data.chat_template is 'off'" if mode == "off" else "the tokenizer has no chat template"
    raise DataError(
        f"{len(chat)} of {len(records)} prompts are lists of chat messages (first: '{chat[0]}'), which need "
        f"a chat template, but {why}: give a Jinja chat template as data.chat_template, use a tokenizer "
        f"that has one (model.tokenizer), or give the prompts as text"
    )


def _render(tokenizer: Any, record: Record, system_prompt: str | None, template: str | None) -> str:
    if isinstance(record.prompt, str):
        messages = [{"role": "user", "content": record.prompt}]
    else:
        messages = [dict(m) for m in record.prompt]
    if system_prompt is not None and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    import jinja2  # transformers renders chat templates with it

    try:
        return tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=True
        )
    except (jinja2.TemplateError, ValueError, TypeError) as err:
        raise DataError(
            f"prompt '{record.prompt_id}': the chat template failed: {type(err).__name__}: {err}"
        ) from None
