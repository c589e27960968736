"""Model helpers that need no inference engine (the tiny local model builder)."""

from rlft.models.tiny import build_tiny_model, build_tokenizer

__all__ = ["build_tiny_model", "build_tokenizer"]
