"""Rewards written for TRL's ``GRPOTrainer``, used by rlft as written (``foreign.yaml``).

rlft recognises TRL's form by its ``completions`` parameter and calls it once per chunk of samples,
by keyword: ``prompts`` and ``completions`` (texts), every sample field as a list (``answer``, the
``data.metadata_fields`` columns, ``prompt_id``, ``num_tokens``, ``finish_reason``,
``max_new_tokens``), and the config's ``params``. Check them: ``rlft check examples/custom_reward/foreign.yaml``.
"""

import re


def accuracy_reward(completions, answer, **kwargs):
    """1 when the completion's first line is the reference answer (``answer``: one per completion)."""
    return [1.0 if c.split("\n")[0].strip() == ref else 0.0 for c, ref in zip(completions, answer)]


def format_reward(completions, **kwargs):
    """1 for a bare number; ``None`` (TRL: "does not apply", counted 0) for an empty completion."""
    return [None if not c.strip() else float(re.fullmatch(r"\s*-?\d+\s*", c) is not None) for c in completions]
