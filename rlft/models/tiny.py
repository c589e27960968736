r"""A tiny, randomly initialised, character-level causal LM built locally (no download).

Tests, benchmarks and the embedded default train it: a Qwen2 architecture (so vLLM serves it), a
character vocabulary held by a ``tokenizers`` WordLevel tokenizer, saved with ``save_pretrained``.

>>> import tempfile
>>> path = build_tiny_model(tempfile.mkdtemp(), hidden_size=32, num_layers=1)
>>> from transformers import AutoTokenizer
>>> tok = AutoTokenizer.from_pretrained(path)
>>> ids = tok("12 + 3 =\n")["input_ids"]
>>> len(ids), tok.decode(ids)
(9, '12 + 3 =\n')
"""

from __future__ import annotations

from pathlib import Path

import torch

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
DEFAULT_CHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ +-*/=()<>.,:;?!'_#\n"


def _byte_level(ch: str) -> str:
    """GPT-2's byte-to-unicode mapping for one ASCII character (space -> 'Ġ', newline -> 'Ċ')."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    b = ord(ch.encode("ascii"))
    if b in printable:
        return chr(b)
    others = [x for x in range(256) if x not in printable]
    return chr(256 + others.index(b))


def build_tokenizer(chars: str = DEFAULT_CHARS):
    """A ``PreTrainedTokenizerFast`` with one token per character (and the special tokens).

    It is a byte-level BPE with no merges: transformers loads Qwen2 checkpoints with its own
    ``Qwen2Tokenizer`` pipeline (byte-level pre-tokenizer and decoder) whatever the saved class is,
    and a byte-level vocabulary makes that pipeline, vLLM's and this object agree character for
    character. ``chars`` must be ASCII.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if len(set(chars)) != len(chars) or not chars.isascii():
        raise ValueError("chars must be distinct ASCII characters")
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({_byte_level(c): len(SPECIAL_TOKENS) + i for i, c in enumerate(chars)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        clean_up_tokenization_spaces=False,
    )


def build_tiny_model(
    out_dir: str | Path,
    *,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 512,
    tie_word_embeddings: bool = True,
    chars: str = DEFAULT_CHARS,
    seed: int = 0,
) -> Path:
    """Write a random-init Qwen2 causal LM and its character tokenizer to ``out_dir``; return it.

    Defaults give ~0.6M parameters. ``hidden_size=512, num_layers=8`` gives ~25M (benchmarks).
    The same ``seed`` gives the same weights.
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(chars)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
