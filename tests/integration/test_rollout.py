"""Rollout workers on real Ray + real vLLM (CPU) with the tiny model, and weight-sync parity.

Two rollout actors (one engine each, shared by the whole module) sample groups; a Hugging Face copy
of the model is trained for real (AdamW on a cross-entropy loss) and pushed through every
weight-sync backend, after which vLLM must decode exactly like Hugging Face and report the same
logprobs. Each parity check first shows the engine disagreeing with the trained model (before the
sync, or after a sync that skips the CPU GEMM refresh), so the checks are able to fail.
"""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

from actors.rollout import RolloutWorker
from actors.weight_sync import (
    WEIGHT_SYNCS,
    make_weight_sync,
    pack_bucket,
    plan_buckets,
    unpack_bucket,
    write_safetensors,
)
from rlft.algorithms.registry import ParamError, RegistryError
from rlft.config import ModelConfig, RolloutConfig
from rlft.types import Prompt, SamplingSettings

PROMPTS = ["12 + 3 =", "7 * 8 = ", "hello world", "(4 + 5) * 2 =", "abc"]
_RNG = random.Random(0)
_PAIRS = [(_RNG.randrange(10), _RNG.randrange(10)) for _ in range(400)]
TRAIN_TEXT = "".join(f"{a} + {b} = {a + b}\n" for a, b in _PAIRS)
LONG_PROMPT = TRAIN_TEXT[:290] + "\nhello world"  # > 2 KV blocks of 128 tokens: prefix-cacheable
NEW_TOKENS = 16
# the prompts: ~63 characters (tokens), as a chat-formatted arithmetic dataset has them
CHAT_PROMPTS = [
    f"system: be brief and answer with digits\nuser: {a}{b}*{b}=\nassistant: "
    for a, b in _PAIRS[:16]
]
STEP_TOKENS = 4096  # vLLM's max_num_batched_tokens on CPU: a longer step is prefilled in chunks
CONTEXT = 512  # the tiny model's max_position_embeddings
SMALL_BUCKETS = 64 * 1024  # the 2.4 MB tiny model then takes ~40 buckets


# ------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def workers(ray_session, tiny_model_dir):
    """Two rollout actors with one CPU each, one vLLM engine each, for the whole module."""
    ray = ray_session
    remote = ray.remote(num_cpus=1)(RolloutWorker)
    handles = [
        remote.remote(tiny_model_dir, RolloutConfig(), ModelConfig(), seed=0, worker_index=i)
        for i in range(2)
    ]
    assert ray.get([w.ready.remote() for w in handles]) == [True, True]
    yield handles
    for w in handles:
        ray.kill(w)


@pytest.fixture(scope="module")
def models(tiny_model_dir, tokenizer):
    """``(initial, trained)`` Hugging Face models: the tiny model, and a copy after 100 AdamW steps
    of next-token cross-entropy on arithmetic text (some weight moves by more than 0.1)."""
    from transformers import AutoModelForCausalLM

    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    trained = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ids = torch.tensor(tokenizer(TRAIN_TEXT)["input_ids"][: 16 * 64]).view(16, 64)
    optimizer = torch.optim.AdamW(trained.parameters(), lr=5e-3)
    trained.train()
    for _ in range(100):
        trained(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    trained.eval()
    change = max(
        (a - b).abs().max().item()
        for a, b in zip(initial.state_dict().values(), trained.state_dict().values())
    )
    assert change > 0.1, f"training barely changed the weights (max |Δ| = {change})"
    return initial, trained


@pytest.fixture(scope="module")
def versions():
    return itertools.count(100)


# ------------------------------------------------------------------------------------------------
# helpers


def prompts_of(tokenizer, texts, start=0):
    return [
        Prompt(f"p{start + i}", tokenizer(t)["input_ids"], t, {"index": start + i})
        for i, t in enumerate(texts)
    ]


def hf_greedy(model, tokenizer, text, new_tokens=NEW_TOKENS):
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
    return out[0, ids.shape[1] :].tolist()


def hf_logprobs(model, prompt_ids, completion_ids):
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1].float()
    return logits.log_softmax(-1).gather(-1, torch.tensor(completion_ids)[:, None])[:, 0]


def greedy(ray, worker, tokenizer, texts, new_tokens=NEW_TOKENS):
    sampling = SamplingSettings(n=1, temperature=0.0, max_new_tokens=new_tokens)
    rollouts = ray.get(worker.generate.remote(prompts_of(tokenizer, texts), sampling))
    return [r.completion_ids for r in rollouts], rollouts


def logprob_gap(ray, worker, model, tokenizer):
    """Largest |vLLM rollout logprob - HF logprob| over sampled completions at temperature 1."""
    sampling = SamplingSettings(n=2, temperature=1.0, max_new_tokens=NEW_TOKENS, seed=3)
    rollouts = ray.get(worker.generate.remote(prompts_of(tokenizer, PROMPTS), sampling))
    return max(
        (torch.tensor(r.rollout_logprobs) - hf_logprobs(model, r.prompt_ids, r.completion_ids))
        .abs()
        .max()
        .item()
        for r in rollouts
    )


# ------------------------------------------------------------------------------------------------
# (1) generation


def test_generate_groups_on_two_workers(ray_session, workers, tokenizer):
    ray = ray_session
    sampling = SamplingSettings(n=3, temperature=1.0, max_new_tokens=6, seed=7)
    shards = [prompts_of(tokenizer, PROMPTS[:2], 0), prompts_of(tokenizer, PROMPTS[2:4], 2)]
    versions = ray.get([w.version.remote() for w in workers])
    results = ray.get(
        [
            w.generate.remote(s, sampling, first_group_id=2 * i)
            for i, (w, s) in enumerate(zip(workers, shards))
        ]
    )
    eos = tokenizer.eos_token_id
    for version, prompts, rollouts in zip(versions, shards, results):
        assert len(rollouts) == len(prompts) * sampling.n
        for k, r in enumerate(rollouts):
            prompt = prompts[k // sampling.n]
            assert r.group_id == int(prompt.prompt_id[1:]) and r.prompt_id == prompt.prompt_id
            assert r.prompt_ids == prompt.token_ids and r.prompt == prompt.text
            assert r.metadata == prompt.metadata
            assert r.policy_version == version
            assert 1 <= len(r.completion_ids) <= sampling.max_new_tokens
            assert len(r.rollout_logprobs) == len(r.completion_ids)
            assert all(math.isfinite(x) and x <= 0.0 for x in r.rollout_logprobs)
            assert r.finish_reason in ("stop", "length")
            if r.finish_reason == "length":
                assert len(r.completion_ids) == sampling.max_new_tokens
            else:
                assert r.completion_ids[-1] == eos
    assert [r.group_id for r in results[0] + results[1]] == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3

    # a seeded request samples the same on any worker, and again on the same worker
    again = ray.get([w.generate.remote(shards[0], sampling) for w in workers])
    assert [r.completion_ids for r in again[0]] == [r.completion_ids for r in results[0]]
    assert [r.completion_ids for r in again[1]] == [r.completion_ids for r in results[0]]
    # the n completions of a prompt and the prompts of a call do not share one random stream
    assert len({tuple(r.completion_ids) for r in results[0]}) > 1


def by_group(rollouts):
    """group id -> its completions' token ids, in vLLM's index order."""
    groups = {}
    for r in rollouts:
        groups.setdefault(r.group_id, []).append(r.completion_ids)
    return groups


def test_full_seeded_batches_survive_chunked_prefill_and_replay(ray_session, workers, tokenizer):
    """A training step (16 prompts x 8 samples) and an evaluation (greedy, then pass@4 on prompts
    near the context limit) overflow one engine step's token budget, so vLLM prefills some prompts
    in chunks and discards the token sampled after each partial chunk. With per-prompt seeds that
    crashed the CPU engine (``CPU Generator does not use offset``); the discarded draw must also
    leave the prompt's generator untouched: the same seeds give the same completions with the
    prompts in the opposite order, where other prompts are the ones split."""
    ray, worker = ray_session, workers[0]
    train = prompts_of(tokenizer, CHAT_PROMPTS)
    assert len(train[0].token_ids) >= 60 and sum(len(p.token_ids) for p in train) * 8 > STEP_TOKENS
    step = SamplingSettings(n=8, temperature=1.0, max_new_tokens=6, seed=1_000_003)
    ids = list(range(len(train)))
    first = ray.get(worker.generate.remote(train, step, group_ids=ids))
    reverse = ray.get(worker.generate.remote(train[::-1], step, group_ids=ids[::-1]))
    assert len(first) == len(train) * 8
    assert by_group(reverse) == by_group(first)
    assert len({tuple(r.completion_ids) for r in first}) > len(train)  # really sampled

    # evaluation: held-out prompts a few tokens under the context minus max_new_tokens; even with
    # their full KV blocks (128 tokens) cached by the greedy pass, the last 120 tokens of 64
    # requests overflow a step
    long_ids = tokenizer(TRAIN_TEXT)["input_ids"]
    length = CONTEXT - 6 - 2
    held_out = [Prompt(f"e{i}", long_ids[7 * i : 7 * i + length]) for i in range(16)]
    assert all(len(p.token_ids) == length for p in held_out)
    assert len(held_out) * 4 * (length % 128) > STEP_TOKENS
    argmax = SamplingSettings(n=1, temperature=0.0, max_new_tokens=6, seed=-1)
    pass_k = SamplingSettings(n=4, temperature=1.0, max_new_tokens=6, seed=-2)
    eval_ids = list(range(100, 100 + len(held_out)))
    assert len(ray.get(worker.generate.remote(held_out, argmax, group_ids=eval_ids))) == 16
    sampled = ray.get(worker.generate.remote(held_out, pass_k, group_ids=eval_ids))
    again = ray.get(worker.generate.remote(held_out[::-1], pass_k, group_ids=eval_ids[::-1]))
    assert len(sampled) == len(held_out) * 4
    assert by_group(again) == by_group(sampled)


def test_stop_strings_end_completions_with_reason_stop(ray_session, workers, tokenizer):
    ray = ray_session
    stops = tuple("0123456789abcdefghijklmnopqrstuvwxyz")  # the random model hits one quickly
    sampling = SamplingSettings(n=4, max_new_tokens=12, stop=stops, seed=11)
    rollouts = ray.get(workers[0].generate.remote(prompts_of(tokenizer, PROMPTS[:2]), sampling))
    stopped = [r for r in rollouts if r.finish_reason == "stop"]
    assert stopped, [r.completion for r in rollouts]
    for r in stopped:  # the text ends before the stop string; the tokens include it
        assert not any(s in r.completion for s in stops)
        assert len(r.completion_ids) == len(r.rollout_logprobs) >= 1


def test_empty_prompt_is_rejected(ray_session, workers):
    with pytest.raises(Exception, match="no token ids"):
        ray_session.get(workers[0].generate.remote([Prompt("empty", [])], SamplingSettings()))


# ------------------------------------------------------------------------------------------------
# (2) weight-sync parity after real training


@pytest.mark.parametrize("backend", ["shm", "object_store"])
def test_sync_gives_hugging_face_parity(ray_session, workers, models, tokenizer, versions, backend):
    ray = ray_session
    initial, trained = models
    sync = make_weight_sync(backend, bucket_bytes=SMALL_BUCKETS)

    sync.push(initial.state_dict(), next(versions), workers)
    before = greedy(ray, workers[0], tokenizer, PROMPTS)[0]
    expected = [hf_greedy(trained, tokenizer, t) for t in PROMPTS]
    assert before != expected  # the engine does not already serve the trained model
    assert logprob_gap(ray, workers[0], trained, tokenizer) > 1e-2

    version = next(versions)
    stats = sync.push(trained.state_dict(), version, workers)
    assert stats.version == version and stats.buckets > 1
    assert stats.tensors == len(trained.state_dict()) - 1  # the tied lm_head.weight is sent once
    assert ray.get([w.version.remote() for w in workers]) == [version, version]
    for w in workers:
        completions, rollouts = greedy(ray, w, tokenizer, PROMPTS)
        assert completions == expected  # token for token
        assert all(r.policy_version == version for r in rollouts)
        assert logprob_gap(ray, w, trained, tokenizer) < 1e-3


def test_tied_lm_head_needs_the_cpu_gemm_refresh(
    ray_session, workers, models, tokenizer, versions, tmp_path
):
    """Without rebuilding the tied lm_head's prepacked GEMM, reload leaves it on the old matrix."""
    ray = ray_session
    initial, trained = models
    worker = workers[0]
    make_weight_sync("shm").push(initial.state_dict(), next(versions), [worker])
    assert ray.get(worker.cpu_gemm_drift.remote()) < 1e-4

    paths = []
    for i, bucket in enumerate(plan_buckets(trained.state_dict(), SMALL_BUCKETS)):
        paths.append(str(tmp_path / f"bucket-{i}.safetensors"))
        write_safetensors(bucket, paths[-1])
    ray.get(worker.load_weights.remote(paths, next(versions), refresh_cpu_gemm=False))
    assert ray.get(worker.cpu_gemm_drift.remote()) > 1e-2
    assert logprob_gap(ray, worker, trained, tokenizer) > 1e-2  # parity is broken

    ray.get(worker.load_weights.remote(paths, next(versions)))  # the same files, with the refresh
    assert ray.get(worker.cpu_gemm_drift.remote()) < 1e-4
    assert logprob_gap(ray, worker, trained, tokenizer) < 1e-3


def test_a_load_that_fails_midway_blocks_generation_until_a_full_load(
    ray_session, workers, models, tokenizer, versions, tmp_path
):
    ray = ray_session
    trained = models[1]
    worker = workers[0]
    old_version = ray.get(worker.version.remote())
    (tensors,) = plan_buckets(trained.state_dict(), 2**40)
    first = [(n, t) for n, t in tensors if "embed" in n or ".0.self_attn.q_proj" in n]
    assert len(first) == 3  # ends inside vLLM's fused qkv_proj: a half-loaded layer
    paths = [str(tmp_path / "bucket-0.safetensors"), str(tmp_path / "bucket-1.safetensors")]
    write_safetensors(first, paths[0])  # the sender "dies" after its first bucket
    with pytest.raises(Exception, match="did not appear"):
        ray.get(worker.load_weights.remote(paths, next(versions), wait_s=0.5))
    assert ray.get(worker.version.remote()) == old_version
    with pytest.raises(Exception, match="partly updated"):
        ray.get(worker.generate.remote(prompts_of(tokenizer, PROMPTS[:1]), SamplingSettings()))

    version = next(versions)
    make_weight_sync("shm").push(trained.state_dict(), version, [worker])
    completions, rollouts = greedy(ray, worker, tokenizer, PROMPTS)
    assert completions == [hf_greedy(trained, tokenizer, t) for t in PROMPTS]
    assert rollouts[0].policy_version == version
    assert logprob_gap(ray, worker, trained, tokenizer) < 1e-3


# ------------------------------------------------------------------------------------------------
# (3) versions and the prefix cache


def test_sync_stamps_version_and_never_serves_stale_prefix_kv(
    ray_session, workers, models, tokenizer, versions
):
    ray = ray_session
    initial, trained = models
    worker = workers[1]
    sync = make_weight_sync("object_store")
    old_version = next(versions)
    sync.push(initial.state_dict(), old_version, [worker])
    assert len(tokenizer(LONG_PROMPT)["input_ids"]) > 256
    for _ in range(2):  # the second call is served from the prefix cache
        old, rollouts = greedy(ray, worker, tokenizer, [LONG_PROMPT])
        assert old == [hf_greedy(initial, tokenizer, LONG_PROMPT)]
        assert rollouts[0].policy_version == old_version

    new_version = next(versions)
    sync.push(trained.state_dict(), new_version, [worker])
    new, rollouts = greedy(ray, worker, tokenizer, [LONG_PROMPT])
    assert new == [hf_greedy(trained, tokenizer, LONG_PROMPT)] and new != old
    assert rollouts[0].policy_version == new_version


# ------------------------------------------------------------------------------------------------
# sync plumbing without an engine


def test_bucket_files_are_standard_safetensors_and_aliases_are_sent_once(models, tmp_path):
    from safetensors.torch import load_file

    state = models[1].state_dict()
    assert state["lm_head.weight"].data_ptr() == state["model.embed_tokens.weight"].data_ptr()
    buckets = plan_buckets(state, SMALL_BUCKETS)
    names = [n for b in buckets for n, _ in b]
    assert "lm_head.weight" not in names and len(names) == len(state) - 1
    assert all(sum(t.nbytes for _, t in b) <= SMALL_BUCKETS for b in buckets if len(b) > 1)
    loaded = {}
    for i, bucket in enumerate(buckets):
        write_safetensors(bucket, tmp_path / f"{i}.safetensors")
        loaded.update(load_file(tmp_path / f"{i}.safetensors"))
    assert all(torch.equal(loaded[n], state[n]) for n in names)


def test_object_store_buckets_round_trip_any_dtype():
    bucket = [
        ("a", torch.randn(3, 4, dtype=torch.bfloat16)),
        ("b", torch.arange(5, dtype=torch.int64)),
        ("c", torch.empty(0, 2)),
    ]
    out = dict(unpack_bucket(pack_bucket(bucket)))
    assert all(torch.equal(out[n], t) and out[n].dtype == t.dtype for n, t in bucket)


def test_unknown_backends_and_params_are_named():
    assert {"shm", "object_store"} <= set(WEIGHT_SYNCS.names())
    with pytest.raises(RegistryError, match="valid names: .*shm"):
        make_weight_sync("nccll")
    with pytest.raises(ParamError, match="did you mean 'bucket_bytes'"):
        make_weight_sync("shm", bucket_byte=1)
    with pytest.raises(ParamError):
        make_weight_sync("object_store", bucket_bytes=0)
