"""Prompt datasets: loading and validating records, then templating and tokenising them.

``load_records`` reads JSON Lines, Parquet, ``datasets`` directories and ``builtin:<task>`` sources
into ``Record``s, failing with a ``DataError`` that names the file, line or row and field of any bad
data; ``prepare_prompts`` turns records into the ``rlft.types.Prompt``s the rollout engines consume.
"""

from rlft.data.loading import DataError, Record, load_records
from rlft.data.prompts import PromptReport, prepare_prompts

__all__ = ["DataError", "PromptReport", "Record", "load_records", "prepare_prompts"]
