"""Streaming and aborting generation on a real Ray actor with a real vLLM engine (CPU, tiny model).

One abortable ``RolloutGroup`` (one engine, shared by the module) streams groups with
``RolloutWorker.generate_stream`` through ``WorkerGroup.stream`` and aborts them with
``RolloutGroup.request_abort`` (the actor's control concurrency group). The engine runs at most 16
sequences at once, so a long call finishes its groups in waves: an abort after the first group
lands while most groups are still queued or decoding, whatever the speed of the machine.
"""

from __future__ import annotations

import itertools
import random
import sys

import pytest
import ray
import torch

from actors.rollout import Aborted, RolloutWorker
from actors.runtime import RolloutGroup
from actors.weight_sync import make_weight_sync, pack_bucket, plan_buckets
from rlft.config import load_config
from rlft.types import Prompt, Rollout, SamplingSettings

# Ray workers cannot import this test module by name: ship its functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

MAX_NUM_SEQS = 16


@pytest.fixture(scope="module")
def rollouts(ray_session, tiny_model_dir):
    cfg = load_config(
        overrides=[
            "rollout.num_workers=1",
            "cluster.rollout.cpus=1",
            f"rollout.engine_kwargs={{max_num_seqs: {MAX_NUM_SEQS}}}",
        ]
    )
    group = RolloutGroup(cfg, tiny_model_dir, abortable=True)
    yield group
    group.shutdown()


@pytest.fixture(scope="module")
def call_ids():
    """Call ids grow through the module: an abort covers every call id up to its own."""
    return itertools.count(1)


@pytest.fixture(scope="module")
def weights(tiny_model_dir):
    """``(initial, perturbed)`` state dicts: the tiny model, and a copy with noise on every weight
    (enough to change sampled tokens). Tied tensors stay tied."""
    from transformers import AutoModelForCausalLM

    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    perturbed = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in perturbed.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return initial.state_dict(), perturbed.state_dict()


def make_prompts(count: int, seed: int = 0) -> list[Prompt]:
    rng = random.Random(seed)
    return [
        Prompt(f"p{i}", [rng.randrange(4, 60) for _ in range(rng.randrange(3, 12))], "", {"i": i})
        for i in range(count)
    ]


def stream(rollouts: RolloutGroup, prompts, sampling, group_ids, call_id):
    return rollouts.workers.stream(
        0, RolloutWorker.generate_stream, prompts, sampling, list(group_ids), call_id
    )


def drain(gen) -> list:
    return [ray.get(ref) for ref in gen]


def _next(gen):
    return ray.get(next(gen))


def generate(rollouts: RolloutGroup, prompts, sampling, group_ids) -> list[Rollout]:
    return rollouts.workers.call(RolloutWorker.generate, prompts, sampling, 0, list(group_ids))[0]


def by_group(rollouts: list[Rollout]) -> dict[int, list[Rollout]]:
    groups: dict[int, list[Rollout]] = {}
    for r in rollouts:
        groups.setdefault(r.group_id, []).append(r)
    return groups


def _unfinished(worker: RolloutWorker) -> int:
    return worker.llm.llm_engine.get_num_unfinished_requests()


def unfinished_requests(rollouts: RolloutGroup) -> int:
    return ray.get(rollouts.workers.actors[0].__ray_call__.remote(_unfinished))


def split(items: list) -> tuple[list[list[Rollout]], Aborted | None]:
    """The streamed groups, and the final ``Aborted`` (None when the stream was not aborted)."""
    aborted = items[-1] if items and isinstance(items[-1], Aborted) else None
    groups = items[:-1] if aborted else items
    assert not any(isinstance(i, Aborted) for i in groups), "Aborted must be the last item only"
    return groups, aborted


# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 4])
def test_stream_yields_each_group_once_exactly_as_generate(rollouts, call_ids, n):
    prompts = make_prompts(10)
    group_ids = [3 * i + 100 for i in range(len(prompts))][::-1]  # neither contiguous nor sorted
    sampling = SamplingSettings(n=n, temperature=1.0, max_new_tokens=24, seed=11)
    expected = by_group(generate(rollouts, prompts, sampling, group_ids))

    groups, aborted = split(drain(stream(rollouts, prompts, sampling, group_ids, next(call_ids))))

    assert aborted is None
    assert sorted(g[0].group_id for g in groups) == sorted(group_ids)  # each group exactly once
    for group in groups:
        assert len(group) == n and len({r.group_id for r in group}) == 1
        # token for token: ids, logprobs, finish reason, version, prompt, text, metadata
        assert group == expected[group[0].group_id]
    assert {r.policy_version for g in groups for r in g} == set(rollouts.versions())
    assert rollouts.abortable
    assert unfinished_requests(rollouts) == 0


def test_abort_ends_the_stream_with_the_unfinished_groups_and_frees_the_engine(
    rollouts, call_ids, weights
):
    prompts = make_prompts(24, seed=1)
    group_ids = range(len(prompts))
    sampling = SamplingSettings(n=4, temperature=1.0, max_new_tokens=128, seed=3)
    call = next(call_ids)

    gen = stream(rollouts, prompts, sampling, group_ids, call)
    first = _next(gen)  # the first group is done: the call is running, most groups are not done
    rollouts.request_abort(call)
    groups, aborted = split([first, *drain(gen)])

    assert aborted is not None and aborted.group_ids  # cut short
    assert aborted.group_ids == sorted(aborted.group_ids)
    finished = [g[0].group_id for g in groups]
    assert len(finished) >= 1
    assert sorted(finished + aborted.group_ids) == list(group_ids)  # a partition of the call
    assert all(len(g) == sampling.n for g in groups)  # a returned group is whole
    assert unfinished_requests(rollouts) == 0

    # the engine takes new weights (load_weights resets the prefix cache: no request may be left)
    # and samples again as if nothing had happened
    version = max(rollouts.versions()) + 1
    make_weight_sync("object_store").push(weights[0], version, rollouts.workers.actors)
    small = make_prompts(6, seed=2)
    quick = SamplingSettings(n=2, temperature=1.0, max_new_tokens=16, seed=5)
    groups, aborted = split(drain(stream(rollouts, small, quick, range(6), next(call_ids))))
    assert aborted is None and len(groups) == 6
    assert all(r.policy_version == version for g in groups for r in g)
    expected = by_group(generate(rollouts, small, quick, range(6)))
    assert {g[0].group_id: g for g in groups} == expected


def test_abort_covers_calls_up_to_its_id_and_never_a_later_one(rollouts, call_ids):
    long_prompts, small = make_prompts(24, seed=3), make_prompts(5, seed=4)
    long_sampling = SamplingSettings(n=4, temperature=1.0, max_new_tokens=128, seed=8)
    sampling = SamplingSettings(n=2, temperature=1.0, max_new_tokens=16, seed=9)
    c = next(call_ids)
    later = next(call_ids)

    running = stream(rollouts, long_prompts, long_sampling, range(24), c)
    queued = stream(rollouts, small, sampling, range(50, 55), c)  # waits behind `running`
    after = stream(rollouts, small, sampling, range(60, 65), later)
    first = _next(running)
    rollouts.request_abort(c)

    groups, aborted = split([first, *drain(running)])
    assert aborted is not None
    assert sorted([g[0].group_id for g in groups] + aborted.group_ids) == list(range(24))
    # queued with an id the abort covers: it never starts, every group comes back to re-issue
    assert drain(queued) == [Aborted([50, 51, 52, 53, 54])]
    # call c + 1 is not touched by an abort up to c
    groups, aborted = split(drain(after))
    assert aborted is None and sorted(g[0].group_id for g in groups) == list(range(60, 65))
    assert all(len(g) == 2 for g in groups)
    assert unfinished_requests(rollouts) == 0


def test_load_weights_submitted_during_a_stream_waits_for_it(rollouts, call_ids, weights):
    prompts = make_prompts(16, seed=5)
    group_ids = range(200, 216)
    sampling = SamplingSettings(n=4, temperature=1.0, max_new_tokens=64, seed=13)
    (old_version,) = rollouts.versions()
    expected = by_group(generate(rollouts, prompts, sampling, group_ids))  # the old weights' tokens

    gen = stream(rollouts, prompts, sampling, group_ids, next(call_ids))
    first = _next(gen)  # the stream runs
    new_version = old_version + 1
    refs = [ray.put(pack_bucket(b)) for b in plan_buckets(weights[1], 64 * 1024)]
    load = rollouts.workers.submit(RolloutWorker.load_weights, refs, new_version)
    groups, aborted = split([first, *drain(gen)])
    assert rollouts.workers.gather(load)[0]["version"] == new_version

    assert aborted is None and len(groups) == len(group_ids)
    # every group was sampled by the old weights, to the last token: the load ran after the stream
    assert all(r.policy_version == old_version for g in groups for r in g)
    assert {g[0].group_id: g for g in groups} == expected
    fresh = generate(rollouts, prompts, sampling, group_ids)
    assert all(r.policy_version == new_version for r in fresh)
    old_tokens = [r.completion_ids for g in group_ids for r in expected[g]]
    assert [r.completion_ids for r in fresh] != old_tokens  # the new weights sample other tokens


def _take_one_then_close(worker: RolloutWorker, prompts, sampling) -> tuple[int, int, bool]:
    """In the actor: consume one group of a stream, drop the stream (as a failing consumer does)."""
    gen = worker.generate_stream(prompts, sampling, list(range(len(prompts))), call_id=10**9)
    next(gen)
    during = _unfinished(worker)
    gen.close()
    return during, _unfinished(worker), worker.llm.reset_prefix_cache()


def test_a_closed_stream_leaves_no_request_and_bad_prompts_raise(rollouts):
    actor = rollouts.workers.actors[0]
    prompts = make_prompts(24, seed=6)
    sampling = SamplingSettings(n=4, temperature=1.0, max_new_tokens=64, seed=1)
    during, after, reset = ray.get(actor.__ray_call__.remote(_take_one_then_close, prompts, sampling))
    assert during > 0 and after == 0 and reset

    bad = [*make_prompts(2), Prompt("empty", [])]
    with pytest.raises(Exception, match="no token ids"):
        drain(stream(rollouts, bad, sampling, range(3), 10**9 + 1))
    with pytest.raises(Exception, match="2 group ids for 3 prompts"):
        drain(stream(rollouts, make_prompts(3), sampling, range(2), 10**9 + 2))
    with pytest.raises(ValueError, match="no concurrency group 'ctrl'.*control"):
        rollouts.workers.call_in_group("ctrl", RolloutWorker.request_abort, 0)
