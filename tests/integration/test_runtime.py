"""The runtime end to end on a real local Ray: 2 vLLM rollout workers, a 2-rank learner group,
a real learner step, a weight push from learner rank 0, and parity of the engines with the learner."""

from __future__ import annotations

import pytest
import torch

from actors.learner import LearnerWorker
from actors.runtime import LearnerGroup, RolloutGroup, sync_metrics
from rlft.algorithms import ADVANTAGES
from rlft.config import load_config
from rlft.types import Prompt, SamplingSettings, TrainBatch, TrainSample

TEXTS = ["12+34=", "7*8=", "hello ", "99-9=", "ab", "x+y="]


@pytest.fixture(scope="module")
def runtime(ray_session, tiny_model_dir):
    cfg = load_config(
        overrides=[
            "rollout.num_workers=2",
            "rollout.group_size=4",
            "rollout.prompts_per_step=6",
            "rollout.max_new_tokens=12",
            "learner.num_ranks=2",
            "learner.lr=3e-3",
            "learner.micro_batch_size=6",
            "cluster.rollout.cpus=1",
            "cluster.learner.cpus=0.5",
        ]
    )
    rollouts = RolloutGroup(cfg, tiny_model_dir)
    learners = LearnerGroup(cfg, tiny_model_dir, total_steps=4)
    yield cfg, rollouts, learners
    learners.shutdown()
    rollouts.shutdown()


def _prompts(tiny_model_dir) -> list[Prompt]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    return [Prompt(f"p{i}", [tok.bos_token_id, *tok(t)["input_ids"]], t) for i, t in enumerate(TEXTS)]


def _batch(rollouts) -> TrainBatch:
    # A made-up but deterministic reward: the share of digits in the completion.
    rewards = torch.tensor(
        [sum(c.isdigit() for c in r.completion) / max(len(r.completion), 1) for r in rollouts]
    )
    adv = ADVANTAGES["grpo"](rewards, torch.tensor([r.group_id for r in rollouts]))
    return TrainBatch([TrainSample.from_rollout(r, float(a)) for r, a in zip(rollouts, adv)])


def test_learner_step_then_sync_gives_parity(runtime, tiny_model_dir, tmp_path):
    cfg, rollouts, learners = runtime
    prompts = _prompts(tiny_model_dir)
    sampling = SamplingSettings(n=4, temperature=1.0, max_new_tokens=12, seed=7)

    before = rollouts.generate(prompts, sampling)
    assert [r.group_id for r in before] == [g for g in range(len(prompts)) for _ in range(4)]
    assert [r.prompt_id for r in before[::4]] == [p.prompt_id for p in prompts]
    assert {r.policy_version for r in before} == {0}
    # The split across workers does not change what is sampled: group ids seed each prompt.
    assert rollouts.generate(prompts, sampling) == before

    batch = _batch(before)
    metrics = learners.train_step(batch)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert metrics["tokens"] == batch.num_tokens()
    # Step-start learner logprobs vs the engine's (same weights): the mismatch metric is tiny.
    assert metrics["logprob_mismatch_max"] < 1e-3

    stats = learners.push_weights(rollouts, version=1)
    assert stats.bytes > 0 and stats.buckets >= 1 and stats.version == 1
    assert sync_metrics(stats)["sync/bytes"] == stats.bytes
    assert rollouts.versions() == [1, 1]

    after = rollouts.generate(prompts, sampling)
    assert {r.policy_version for r in after} == {1}
    samples = [TrainSample.from_rollout(r, 0.0) for r in after]
    learner_lp = learners.workers.call(LearnerWorker.compute_logprobs, samples)[0]
    engine_lp = [r.rollout_logprobs for r in after]
    delta = max(abs(a - b) for la, lb in zip(learner_lp, engine_lp) for a, b in zip(la, lb))
    assert delta < 1e-3, f"vLLM vs learner logprobs differ by {delta} after the sync"

    # The step really changed the policy: the same tokens score differently than before.
    old = [TrainSample.from_rollout(r, 0.0) for r in before]
    new_lp = learners.workers.call(LearnerWorker.compute_logprobs, old)[0]
    moved = max(abs(a - b) for la, r in zip(new_lp, before) for a, b in zip(la, r.rollout_logprobs))
    assert moved > 1e-2

    # Greedy decoding: vLLM after the sync == Hugging Face with the learner's weights.
    from transformers import AutoModelForCausalLM

    path = learners.save_pretrained(str(tmp_path / "hf"))
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    greedy = rollouts.generate(prompts, SamplingSettings(n=1, temperature=0.0, max_new_tokens=12))
    for prompt, rollout in zip(prompts, greedy):
        out = hf.generate(
            torch.tensor([prompt.token_ids]),
            max_new_tokens=12,
            do_sample=False,
            eos_token_id=hf.config.eos_token_id,
            pad_token_id=hf.config.pad_token_id,
        )
        assert out[0, len(prompt.token_ids):].tolist() == rollout.completion_ids, prompt.text
