"""The context length a rollout engine will give a model, read from its ``config.json``.

The data check needs it before any engine starts: a prompt longer than the context minus
``rollout.max_new_tokens`` is refused by vLLM at the first step. The rule follows vLLM's own
derivation: an explicit ``max_model_len`` engine argument, else the smallest length key of the
(text) config, scaled by a linear or dynamic RoPE factor.
"""

from __future__ import annotations

from typing import Any

# the keys vLLM reads, in its order (vllm/transformers_utils/model_arch_config_convertor.py)
LENGTH_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_target_positions",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)
# RoPE types whose config length is already the scaled one
_PRESCALED = {"su", "longrope", "llama3", "yarn", "deepseek_yarn", "deepseek_llama_scaling", "default"}


def model_context(config: dict[str, Any], *, max_model_len: int | None = None) -> int | None:
    """Tokens of context (prompt + completion) for a model with this ``config.json`` content.

    ``max_model_len`` (``rollout.engine_kwargs``) wins; None when the config names no length.

    >>> model_context({"max_position_embeddings": 512})
    512
    >>> model_context({"max_position_embeddings": 4096, "rope_scaling": {"type": "linear", "factor": 2.0}})
    8192
    >>> model_context({"text_config": {"max_position_embeddings": 2048}}), model_context({}, max_model_len=300)
    (2048, 300)
    """
    if max_model_len is not None and max_model_len > 0:
        return int(max_model_len)
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    lengths = [text[k] for k in LENGTH_KEYS if isinstance(text.get(k), (int, float)) and text[k] > 0]
    if not lengths:
        return None
    length = text["model_max_length"] if text.get("model_max_length") else min(lengths)
    rope = text.get("rope_scaling") or text.get("rope_parameters")
    if isinstance(rope, dict):
        kind = rope.get("rope_type", rope.get("type"))
        factor = rope.get("factor")
        if kind not in _PRESCALED and isinstance(factor, (int, float)) and factor > 0:
            length *= factor
    return int(length)
