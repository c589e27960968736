"""A user's own data through ``launch.train.prepare``: SFT stages on the dataset's reference
completions, the prompt-length check against the model's context, and the own-data examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launch.train import load_training_records, prepare, sft_examples
from rlft.config import load_config
from rlft.data import DataError, Record, prepare_prompts
from rlft.data.context import model_context
from rlft.models import build_tokenizer
from rlft.tasks import get_task

ROOT = Path(__file__).resolve().parents[2]
SFT_RL = "stages=[{kind: sft, steps: 2, batch_size: 4}, {kind: rl, steps: 1}]"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def config(tmp_path, rows, *overrides, eval_rows=None):
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    test = write_jsonl(tmp_path / "test.jsonl", eval_rows or rows)
    base = [f"data.train_path={train}", f"data.eval_path={test}", "reward.functions=[{name: exact_match}]"]
    return load_config(overrides=[*base, *overrides])


def decoded(prepared, sample):
    tok = prepared.tokenizer
    return tok.decode(sample.prompt_ids), tok.decode(sample.completion_ids)


# --------------------------------------------------------------------------------------------------
# SFT on the dataset's reference completions


def test_sft_stages_train_on_the_solution_field(tmp_path):
    rows = [{"q": "1+2=", "answer": 3, "sol": "3"}, {"q": "20+22=", "answer": 42, "sol": "42"}]
    cfg = config(tmp_path, rows, SFT_RL, "data.prompt_field=q", "data.solution_field=sol")
    prepared = prepare(cfg, tmp_path / "run")
    assert [decoded(prepared, s) for s in prepared.sft_examples] == [
        ("<bos>1+2=", "3<eos>"),
        ("<bos>20+22=", "42<eos>"),
    ]
    example = prepared.sft_examples[1]
    assert example.prompt_ids == prepared.train_prompts[1].token_ids  # the prompt exactly as RL sees it
    assert example.advantages == [1.0, 1.0, 1.0]  # loss on the completion and EOS only
    assert any(note.startswith("sft: 2 examples") for note in prepared.notes)


def test_sft_stages_train_on_a_chat_rows_closing_assistant_message(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "1+2="}, {"role": "assistant", "content": "3"}],
             "reward_model": {"ground_truth": "3"}}]
    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant: "
    cfg = config(tmp_path, rows, SFT_RL, "data.answer_field=reward_model.ground_truth",
                 f"data.chat_template={json.dumps(template)}")
    prepared = prepare(cfg, tmp_path / "run")
    assert prepared.train_prompts[0].text == "user: 1+2=\nassistant: "
    assert prepared.train_prompts[0].metadata == {"answer": "3"}
    assert [decoded(prepared, s) for s in prepared.sft_examples] == [("<bos>user: 1+2=\nassistant: ", "3<eos>")]


def test_sft_without_reference_completions_says_where_to_get_them(tmp_path):
    rows = [{"prompt": "1+2=", "answer": 3}, {"prompt": "2+2=", "answer": 4}]
    with pytest.raises(DataError, match=r"2 of 2 have none \(first: 'train:0'\): set data.solution_field"):
        prepare(config(tmp_path, rows, SFT_RL), tmp_path / "run")
    prepare(config(tmp_path, rows), tmp_path / "run2")  # RL alone needs none


def test_builtin_tasks_bring_their_references_also_mixed_with_own_data(tmp_path):
    own = write_jsonl(tmp_path / "own.jsonl", [{"prompt": "1+2=", "answer": 3, "solution": "3"}])
    cfg = load_config(overrides=[f"data.sources=[{{path: 'builtin:arithmetic'}}, {{path: {own}}}]"])
    fields = dict(prompt_field="prompt", answer_field="answer", metadata_fields=[], solution_field="solution")
    records = load_training_records(cfg, fields)
    task = get_task("arithmetic")
    assert records[0].solution == task.reference_completion(records[0]) == records[0].answer
    assert records[-1].prompt_id == "own/own:0" and records[-1].solution == "3"
    assert records[-1].metadata == {"source": "own"}


def test_sft_example_over_the_context_is_an_error():
    tok = build_tokenizer()
    records = [Record("r:0", "1+2=", "3", solution="3" * 10)]
    prompts, _ = prepare_prompts(records, tok)  # <bos>1+2= : 5 tokens, + 10 + EOS = 16
    assert len(sft_examples(records, prompts, tok, context_tokens=16)[0].completion_ids) == 11
    with pytest.raises(DataError, match="prompt 'r:0': prompt \\+ reference completion are 16 tokens, over the "
                                        "model's context of 15"):
        sft_examples(records, prompts, tok, context_tokens=15)


# --------------------------------------------------------------------------------------------------
# Prompts must leave room for rollout.max_new_tokens in the model's context


def test_model_context_follows_the_engines_rule():
    assert model_context({"max_position_embeddings": 512}) == 512
    assert model_context({"max_position_embeddings": 4096, "n_positions": 1024}) == 1024  # the smallest
    assert model_context({"max_position_embeddings": 4096, "rope_scaling": {"type": "linear", "factor": 4}}) == 16384
    yarn = {"max_position_embeddings": 32768, "rope_scaling": {"rope_type": "yarn", "factor": 4}}
    assert model_context(yarn) == 32768  # YaRN configs hold the scaled length already
    assert model_context({"text_config": {"max_position_embeddings": 2048}, "vision_config": {}}) == 2048
    assert model_context({"max_position_embeddings": 512}, max_model_len=300) == 300
    assert model_context({"hidden_size": 8}) is None


def test_prompt_limit_is_the_context_minus_max_new_tokens():
    tok = build_tokenizer()
    recs = [Record(f"r:{i}", "1" * n, None) for i, n in enumerate([3, 5, 6, 9])]  # 4, 6, 7, 10 tokens with BOS
    prompts, report = prepare_prompts(recs, tok, context_tokens=10, max_new_tokens=4, too_long="skip")
    assert [p.prompt_id for p in prompts] == ["r:0", "r:1"] and report.limit == 6
    with pytest.raises(DataError) as err:
        prepare_prompts(recs, tok, context_tokens=10, max_new_tokens=4)
    message = str(err.value)
    assert "2 of 4 prompts are longer than the limit of 6 tokens (longest: 10 tokens, prompt 'r:3')" in message
    assert "the model's context of 10 tokens minus rollout.max_new_tokens=4 leaves room for 6" in message
    assert "lower rollout.max_new_tokens, or set data.too_long='skip'" in message
    # a smaller max_prompt_tokens is the limit, and its own fix is named
    with pytest.raises(DataError, match="limit of 5 tokens .*raise data.max_prompt_tokens"):
        prepare_prompts(recs, tok, context_tokens=10, max_new_tokens=4, max_prompt_tokens=5)
    _, report = prepare_prompts(recs, tok, context_tokens=10, max_new_tokens=4, max_prompt_tokens=8, too_long="skip")
    assert report.limit == 6  # a larger max_prompt_tokens does not lift the context's limit
    with pytest.raises(DataError, match="rollout.max_new_tokens=10 leaves no room for a prompt in the model's "
                                        "context of 10 tokens"):
        prepare_prompts(recs, tok, context_tokens=10, max_new_tokens=10)


def test_prepare_checks_prompts_against_the_tiny_models_context(tmp_path):
    # builtin:tiny has 512 positions: a 495-character prompt (496 tokens with BOS) fits 512 - 16 = 496
    rows = [{"prompt": "1" * 495, "answer": 1}, {"prompt": "1" * 496, "answer": 1}, {"prompt": "2+2=", "answer": 4}]
    cfg = config(tmp_path, rows, "rollout.max_new_tokens=16", eval_rows=rows[2:])
    with pytest.raises(DataError, match="1 of 3 prompts are longer than the limit of 496 tokens"):
        prepare(cfg, tmp_path / "run")
    cfg = config(tmp_path, rows, "rollout.max_new_tokens=16", "data.too_long=skip", eval_rows=rows[2:])
    prepared = prepare(cfg, tmp_path / "run2")
    assert [p.prompt_id for p in prepared.train_prompts] == ["train:0", "train:2"]
    assert "(context 512 tokens)" in prepared.notes[0]
    # the engine's max_model_len wins over the config's length: <bos>2+2= is 5 tokens, over 20 - 16
    cfg = config(tmp_path, rows[2:], "rollout.max_new_tokens=16", "rollout.engine_kwargs={max_model_len: 20}")
    with pytest.raises(DataError, match="limit of 4 tokens .*context of 20 tokens"):
        prepare(cfg, tmp_path / "run3")


# --------------------------------------------------------------------------------------------------
# The examples


@pytest.mark.parametrize("name", ["own_data.yaml", "own_data_chat.yaml"])
def test_own_data_examples_prepare_with_sft_targets(tmp_path, monkeypatch, name):
    monkeypatch.chdir(ROOT)  # their data paths are relative to the repository's root
    prepared = prepare(load_config(ROOT / "examples" / name), tmp_path)
    assert len(prepared.train_prompts) == len(prepared.sft_examples) == 200 and len(prepared.eval_prompts) == 50
    first = prepared.train_prompts[0]
    assert first.text == ("84+66=" if name == "own_data.yaml" else "user: 84+66=\nassistant: ")
    assert f"first prompt as the model sees it: {first.text!r}" in prepared.notes  # what rlft check prints
    assert first.metadata["answer"] == "150"
    assert decoded(prepared, prepared.sft_examples[0])[1] == "150<eos>"
    assert prepared.tokenizer.unk_token_id not in first.token_ids
