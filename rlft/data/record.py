"""``Record``: one prompt of a dataset before tokenisation, what every reader and built-in task makes.

>>> Record("qa:0", "1+1=", "2", {"level": "easy"})
Record(prompt_id='qa:0', prompt='1+1=', answer='2', metadata={'level': 'easy'}, solution=None)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlft.data.rows import Message


@dataclass(frozen=True)
class Record:
    """One prompt of a dataset, before tokenisation."""

    prompt_id: str  # stable: the `id` column, or "<stem>:<row index>"
    prompt: str | list[Message]  # text, or chat messages (for the chat template)
    answer: str | None = None  # reference answer for the rewards, always text
    metadata: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable extra columns
    solution: str | None = None  # reference completion (SFT target), without EOS
