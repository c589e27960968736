"""The learner group on real Ray actors (gloo over localhost, CPU, fp32): data-parallel parity,
reference-model KL, weight changes and sync format, skipping non-finite steps, and the off-policy
metrics of stale samples."""

from __future__ import annotations

import dataclasses
import math
import socket

import pytest
import torch

from actors.learner import LearnerWorker
from rlft.config import AlgoConfig, KLConfig, LearnerConfig, ModelConfig, PolicyLossChoice, SFTLossChoice
from rlft.types import TrainBatch, TrainSample

MODEL = ModelConfig()  # float32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_batch(n: int, seed: int = 0, vocab: int = 86) -> TrainBatch:
    """``n`` samples with varied prompt/completion lengths, +-1 advantages and rollout logprobs."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n):
        p, c = 2 + i % 4, 3 + (5 * i) % 7
        ids = torch.randint(4, vocab, (p + c,), generator=g).tolist()
        rollout = (-4.0 - torch.rand(c, generator=g)).tolist()
        mask = None if i % 3 else [1] * (c - 1) + [0]  # some samples exclude their last token
        samples.append(TrainSample(ids[:p], ids[p:], [1.0 if i % 2 else -1.0] * c, rollout, mask))
    return TrainBatch(samples)


class Group:
    """``world_size`` LearnerWorker actors in one process group; closed on exit."""

    def __init__(self, ray, model_dir: str, world_size: int, learner: LearnerConfig, algo: AlgoConfig, **kw):
        self.ray, self.world_size = ray, world_size
        port = _free_port()
        actor = ray.remote(LearnerWorker).options(num_cpus=1)
        self.workers = [
            actor.remote(r, world_size, "127.0.0.1", port, model_dir, MODEL, learner, algo, **kw)
            for r in range(world_size)
        ]
        ray.get([w.get_version.remote() for w in self.workers])  # constructors done: group formed

    def train(self, batch: TrainBatch, **kw) -> list[dict[str, float]]:
        n = self.world_size
        return self.ray.get([w.train_step.remote(batch.shard(r, n), **kw) for r, w in enumerate(self.workers)])

    def call(self, method: str, *args, rank: int = 0, **kwargs):
        return self.ray.get(getattr(self.workers[rank], method).remote(*args, **kwargs))

    def call_all(self, method: str, *args, **kwargs) -> list:
        """Call every rank at once (needed under FSDP, where each model call is a collective)."""
        return self.ray.get([getattr(w, method).remote(*args, **kwargs) for w in self.workers])

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc) -> None:
        self.ray.get([w.close.remote() for w in self.workers])
        for w in self.workers:
            self.ray.kill(w)


def _max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


# Adam's first step moves every parameter with a gradient by about lr: 1e-3 makes the update
# ~100x the parity tolerance, so equal parameters mean equal gradients, not "nothing happened".
# adam_eps=1e-6: Adam divides by |g| + eps, so with the default 1e-8 the fp32 rounding noise of
# summing micro-batch gradients in another order (~1e-8 absolute) turns into updates of ~lr/10 on
# elements whose gradient is itself ~1e-8 (measured: 2.7e-5 between micro-batch sizes 8 and 2 on
# ONE rank); 1e-6 bounds that amplification (measured: 6e-7) without hiding a real difference.
# The two ranks split their shards three ways: by token budget (sorted, several passes), in fixed
# groups of 2 sequences, and packed rows; the single rank takes the batch in one padded pass.
PARITY_CASES = {
    "even-shards-token-budget": dict(n=8, split=dict(max_tokens_per_micro_batch=30),
                                     agg="token-mean", loss="ppo_clip", epochs=1, kl=0.0),
    "grad-accumulation-fixed": dict(n=8, split=dict(micro_batch_size=2, max_tokens_per_micro_batch=None),
                                    agg="seq-mean-token-mean", loss="ppo_clip", epochs=2, kl=0.0),
    "uneven-shards-packed": dict(n=7, split=dict(max_tokens_per_micro_batch=24, packing=True),
                                 agg="seq-mean-token-sum-norm", loss="cispo", epochs=1, kl=0.1),
}


@pytest.mark.parametrize("case", list(PARITY_CASES))
def test_one_rank_and_two_ranks_make_the_same_update(ray_session, tiny_model_dir, case):
    c = PARITY_CASES[case]
    batch = make_batch(c["n"])
    algo = AlgoConfig(
        loss=PolicyLossChoice(name=c["loss"]), aggregation=c["agg"], kl=KLConfig(coef=c["kl"]), tis_cap=2.0
    )
    results = {}
    one_pass = dict(micro_batch_size=None, max_tokens_per_micro_batch=None)
    for world, split in ((1, one_pass), (2, c["split"])):
        learner = LearnerConfig(lr=1e-3, adam_eps=1e-6, ppo_epochs=c["epochs"], max_grad_norm=None, **split)
        with Group(ray_session, tiny_model_dir, world, learner, algo) as group:
            before = group.call("state_dict_for_sync")
            metrics = group.train(batch)
            after = group.call("state_dict_for_sync")
            replicas = [group.call("compute_logprobs", batch.samples, rank=r) for r in range(world)]
        assert all(m == metrics[0] for m in metrics[1:]), "ranks report different metrics"
        assert replicas[1:] == replicas[:1] * (world - 1), "replicas diverged"
        results[world] = (after, metrics[0])
    assert _max_abs_diff(before, results[1][0]) > 5e-4  # the step did move the weights
    assert _max_abs_diff(results[1][0], results[2][0]) < 1e-5
    m1, m2 = results[1][1], results[2][1]
    assert m1["tokens"] == m2["tokens"] == float(batch.num_tokens())
    assert m1["optimizer_steps"] == m2["optimizer_steps"] == c["epochs"]
    lengths = [s.length for s in batch.samples]
    assert m1["padding_fraction"] == pytest.approx(1 - sum(lengths) / (len(lengths) * max(lengths)))
    assert m2["padding_fraction"] < m1["padding_fraction"] and m2["tokens_per_s"] > 0
    if c["split"].get("packing"):
        assert m2["padding_fraction"] == 0.0
    for key in ("loss", "policy_loss", "entropy", "grad_norm", "clip_fraction", "logprob_mismatch_mean",
                "logprob_mismatch_max"):
        assert m2[key] == pytest.approx(m1[key], rel=1e-4, abs=1e-6), key


def test_fsdp2_sharded_group_matches_the_replicated_learner(ray_session, tiny_model_dir, tmp_path):
    """The FSDP2 path (the GPU one) run on CPU over gloo: 2 sharded ranks with uneven shards (so
    different micro-batch counts, padded with masked-out passes), a reference model, two epochs and
    gradient clipping make the same update as one replicated rank."""
    from transformers import AutoModelForCausalLM

    batch = make_batch(5, seed=4)  # shards of 2 and 3 samples: 1 and 2 micro-batches of 2
    algo = AlgoConfig(kl=KLConfig(coef=0.1))
    learner = LearnerConfig(lr=1e-3, adam_eps=1e-6, micro_batch_size=2, ppo_epochs=2, max_grad_norm=0.5)
    with Group(ray_session, tiny_model_dir, 1, learner.model_copy(update={"micro_batch_size": 5}), algo) as one:
        m1 = one.train(batch)[0]
        w1 = one.call("state_dict_for_sync")
        lp1 = one.call("compute_logprobs", batch.samples)
    with Group(ray_session, tiny_model_dir, 2, learner, algo, fsdp=True) as two:
        m2 = two.train(batch)
        w2 = two.call_all("state_dict_for_sync")
        lp2 = two.call_all("compute_logprobs", batch.samples)
        two.call_all("save_pretrained", str(tmp_path / "fsdp-ckpt"))
    assert w2[1] == {} and _max_abs_diff(w1, w2[0]) < 1e-5
    assert m2[0] == m2[1] and m1["grad_norm"] > 0.5  # the clip was active
    for key in ("loss", "kl", "grad_norm", "entropy", "tokens"):
        assert m2[0][key] == pytest.approx(m1[key], rel=1e-4, abs=1e-6), key
    assert lp2[0] == lp2[1]
    torch.testing.assert_close(torch.tensor(sum(lp2[0], [])), torch.tensor(sum(lp1, [])), atol=1e-5, rtol=0)
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp-ckpt", dtype=torch.float32).state_dict()
    assert _max_abs_diff({k: saved[k] for k in w2[0]}, w2[0]) == 0.0


def test_bf16_compute_tracks_fp32_and_falls_back_where_the_cpu_lacks_it(ray_session, tiny_model_dir):
    """``learner.precision: bf16`` computes in bf16 (log-probs differ from fp32's, a little) where the
    CPU has bf16 instructions, says what it does, scores the reference like the policy (KL 0 at
    the start) and makes an update in the fp32 update's direction."""
    from rlft.micro_batches import cpu_bf16_support

    batch = make_batch(8, seed=2)
    algo = AlgoConfig(kl=KLConfig(coef=0.05))
    runs = {}
    for precision in ("fp32", "bf16"):
        with Group(ray_session, tiny_model_dir, 1, LearnerConfig(lr=1e-3, precision=precision), algo) as group:
            before = torch.tensor(sum(group.call("compute_logprobs", batch.samples), []))
            metrics = group.train(batch)[0]
            after = torch.tensor(sum(group.call("compute_logprobs", batch.samples), []))
            runs[precision] = (group.call("describe"), before, metrics, after - before)
    (note32, lp32, m32, move32), (note16, lp16, m16, move16) = runs["fp32"], runs["bf16"]
    native = cpu_bf16_support() is not None
    assert note32.startswith("fp32;") and note16.startswith("bf16 compute" if native else "fp32 (bf16 asked")
    diff = (lp16 - lp32).abs()
    assert diff.max() < 0.1 and (diff.max() > 0) == native
    assert m16["kl"] == 0.0 and m16["loss"] == pytest.approx(m32["loss"], abs=0.02)
    assert m16["entropy"] == pytest.approx(m32["entropy"], rel=0.01)
    assert torch.nn.functional.cosine_similarity(move16, move32, dim=0) > 0.9


def test_reference_kl_is_zero_at_the_start_and_positive_after_an_update(ray_session, tiny_model_dir):
    batch = make_batch(6, seed=1)
    algo = AlgoConfig(kl=KLConfig(estimator="k3", coef=0.05))
    learner = LearnerConfig(lr=1e-3, micro_batch_size=4)
    with Group(ray_session, tiny_model_dir, 1, learner, algo) as group:
        assert group.call("ref_kl", batch.samples) == 0.0
        initial = group.call("compute_logprobs", batch.samples)
        first = group.train(batch)[0]
        assert first["kl"] == 0.0 and first["kl_loss"] == 0.0
        assert group.call("ref_kl", batch.samples) > 1e-6
        second = group.train(batch)[0]
        assert second["kl"] > 1e-6
        assert second["kl_loss"] == pytest.approx(0.05 * second["kl"], rel=1e-5)  # token-mean, one pass
        # the reference stays frozen at the initial weights while the policy moves
        assert group.call("compute_logprobs", batch.samples, reference=True) == initial
        assert group.call("compute_logprobs", batch.samples) != initial
        assert group.call("get_version") == 2


def test_sft_objectives_and_demonstration_tokens_on_the_real_learner(ray_session, tiny_model_dir):
    """One learner with mixed-policy guidance and an anchored SFT objective in the run:

    * each SFT step's loss is its objective's token mean over the log-probs the step started from,
      and ASFT's anchor is the reference copy the learner loads for it without a KL term;
    * in an RL step a demonstration's tokens are trained through LUFFY's shaped weight plus the SFT
      term, the sampled ones through the clipped ratio, and the engine mismatch metric reads the
      sampled tokens only (a demonstration's rollout log-probs are 0 by convention)."""
    batch = TrainBatch([dataclasses.replace(s, loss_mask=None) for s in make_batch(6, seed=2).samples])
    asft = SFTLossChoice(name="asft", params={"kl_coef": 0.5, "estimator": "k3"})
    algo = AlgoConfig(guidance={"name": "mixed", "params": {"gamma": 0.1, "sft_coef": 0.5}})  # no KL term
    with Group(ray_session, tiny_model_dir, 1, LearnerConfig(lr=1e-3), algo, anchor_reference=True) as group:
        ref = [torch.tensor(x) for x in group.call("compute_logprobs", batch.samples, reference=True)]

        def expected(kind: str) -> float:
            lp = torch.cat([torch.tensor(x) for x in group.call("compute_logprobs", batch.samples)])
            anchor = torch.cat(ref)
            per_token = {"nll": -lp, "dft": -lp.exp() * lp,
                         "asft": -lp.exp() * lp + 0.5 * ((anchor - lp).exp() - 1 - (anchor - lp))}[kind]
            return float(per_token.mean())

        want = expected("asft")  # the policy is the reference: the anchor term is 0
        first = group.train(batch, sft=asft)[0]
        assert first["loss"] == pytest.approx(want, rel=1e-5) and first["kl"] == 0.0
        want = expected("asft")
        second = group.train(batch, sft=asft)[0]
        assert second["kl"] > 1e-6 and second["loss"] == pytest.approx(want, rel=1e-4)
        for kind in ("dft", "nll"):
            want = expected(kind)
            assert group.train(batch, sft=SFTLossChoice(name=kind))[0]["loss"] == pytest.approx(want, rel=1e-5)
        # the anchor stayed where the run started
        after = group.call("compute_logprobs", batch.samples, reference=True)
        assert all(torch.equal(torch.tensor(a), r) for a, r in zip(after, ref))

        base = [dataclasses.replace(s, policy_version=5) for s in batch.samples[:4]]
        mixed = TrainBatch([*base[:2], *[dataclasses.replace(s, demo_tokens=len(s.completion_ids),
                                                             rollout_logprobs=[0.0] * len(s.completion_ids))
                                         for s in base[2:]]])
        lps = [torch.tensor(x) for x in group.call("compute_logprobs", mixed.samples)]
        per_token = []
        for s, lp in zip(mixed.samples, lps):
            adv = torch.tensor(s.advantages)
            per_token.append(-adv * lp.exp() / (lp.exp() + 0.1) - 0.5 * lp if s.demo_tokens else -adv)
        metrics = group.train(mixed)[0]
        assert metrics["loss"] == pytest.approx(float(torch.cat(per_token).mean()), rel=1e-5)
        sampled = torch.cat([(lp - torch.tensor(s.rollout_logprobs)).abs() for s, lp in zip(mixed.samples[:2], lps[:2])])
        assert metrics["logprob_mismatch_mean"] == pytest.approx(float(sampled.mean()), rel=1e-4)


def test_a_step_changes_weights_and_syncs_in_hugging_face_format(ray_session, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    batch = make_batch(6, seed=2)
    learner = LearnerConfig(lr=1e-3, micro_batch_size=3, warmup_steps=2, lr_schedule="cosine")
    with Group(ray_session, tiny_model_dir, 1, learner, AlgoConfig(), total_steps=10) as group:
        before = group.call("state_dict_for_sync")
        metrics = group.train(batch)[0]
        after = group.call("state_dict_for_sync")
        logprobs = group.call("compute_logprobs", batch.samples)
        saved = group.call("save_pretrained", str(tmp_path / "ckpt"))

    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert metrics["lr"] == pytest.approx(0.5e-3)  # first of two warm-up steps
    assert metrics["skipped_steps"] == 0 and metrics["version"] == 1
    assert metrics["tokens"] == batch.num_tokens() and metrics["entropy"] > 0
    assert _max_abs_diff(before, after) > 1e-4
    # a fresh Hugging Face model loads the synced weights (strictly) and computes the same logprobs
    fresh = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    fresh.load_state_dict(after, strict=True)
    reloaded = AutoModelForCausalLM.from_pretrained(saved, dtype=torch.float32).eval()
    for model in (fresh, reloaded):
        for sample, expected in zip(batch.samples, logprobs):
            ids = torch.tensor([sample.prompt_ids + sample.completion_ids])
            with torch.no_grad():
                lp = torch.log_softmax(model(ids).logits[0, :-1], -1).gather(-1, ids[0, 1:, None])[:, 0]
            got = lp[len(sample.prompt_ids) - 1 :]
            torch.testing.assert_close(got, torch.tensor(expected), atol=1e-5, rtol=0)


def test_non_finite_loss_skips_the_step_on_every_rank(ray_session, tiny_model_dir):
    good = make_batch(8, seed=3)
    # NaN advantages only in rank 1's shard: rank 0's loss is finite, yet both ranks must skip
    poisoned = TrainBatch(
        good.samples[:4]
        + [TrainSample(s.prompt_ids, s.completion_ids, [math.nan] * len(s.completion_ids), s.rollout_logprobs)
           for s in good.samples[4:]]
    )
    learner = LearnerConfig(lr=1e-3, micro_batch_size=2)
    with Group(ray_session, tiny_model_dir, 2, learner, AlgoConfig()) as group:
        before = group.call("state_dict_for_sync")
        metrics = group.train(poisoned)
        unchanged = group.call("state_dict_for_sync")
        assert all(m["skipped_steps"] == 1 for m in metrics)
        assert _max_abs_diff(before, unchanged) == 0.0
        replicas = [group.call("compute_logprobs", good.samples, rank=r) for r in range(2)]
        assert replicas[0] == replicas[1]
        # the optimizer state was not poisoned: the next finite batch trains normally
        after_good = group.train(good)
        assert all(m["skipped_steps"] == 0 and math.isfinite(m["loss"]) for m in after_good)
        assert _max_abs_diff(unchanged, group.call("state_dict_for_sync")) > 1e-4


def test_lag0_mismatch_leaves_out_stale_samples_on_one_and_two_ranks(ray_session, tiny_model_dir):
    """A step at learner version 1 on samples of version 1 whose rollout log-probs are the learner's
    own, and samples of version 0 whose rollout log-probs are the learner's own + 0.5: the lag-0
    mismatch sees only the (here ~0) engine numerics, the all-sample mismatch also the 0.5 shift.
    With 2 ranks, rank 1's shard holds no lag-0 sample: the global metrics must not change."""
    warmup, base = make_batch(4, seed=5), make_batch(6, seed=6)
    learner = LearnerConfig(lr=1e-3, micro_batch_size=2)  # several micro-batches per rank
    counted = [len(s.completion_ids) if s.loss_mask is None else sum(s.loss_mask) for s in base.samples]
    stale_tokens, all_tokens = sum(counted[3:]), sum(counted)
    results = {}
    for world in (1, 2):
        with Group(ray_session, tiny_model_dir, world, learner, AlgoConfig()) as group:
            first = group.train(warmup)[0]  # version 0 -> 1; samples without a version
            assert not any(k.startswith(("logprob_mismatch_lag0", "version_lag")) for k in first)
            own = group.call("compute_logprobs", base.samples)
            samples = [
                dataclasses.replace(s, rollout_logprobs=lp, policy_version=1) if i < 3
                else dataclasses.replace(s, rollout_logprobs=[x + 0.5 for x in lp], policy_version=0)
                for i, (s, lp) in enumerate(zip(base.samples, own))
            ]
            metrics = group.train(TrainBatch(samples))  # shards: samples 0-2 (lag 0) and 3-5 (lag 1)
        assert all(m == metrics[0] for m in metrics[1:]), "ranks report different metrics"
        results[world] = m = metrics[0]
        assert m["logprob_mismatch_lag0_mean"] < 1e-3 and m["logprob_mismatch_lag0_max"] < 1e-3
        # |own + 0.5 - own| on the stale tokens, ~0 on the lag-0 ones
        assert m["logprob_mismatch_mean"] == pytest.approx(0.5 * stale_tokens / all_tokens, abs=1e-4)
        assert m["logprob_mismatch_max"] == pytest.approx(0.5, abs=1e-4)
        assert m["version_lag_mean"] == pytest.approx(1.0 * stale_tokens / all_tokens)  # token-weighted
        assert m["version_lag_max"] == 1.0
    for key in ("logprob_mismatch_lag0_mean", "logprob_mismatch_lag0_max", "logprob_mismatch_mean",
                "logprob_mismatch_max", "version_lag_mean", "version_lag_max"):
        assert results[2][key] == pytest.approx(results[1][key], abs=1e-5), key


def test_set_reference_makes_the_current_policy_the_reference_on_fsdp_ranks(ray_session, tiny_model_dir, tmp_path):
    """What an RL stage after SFT does (``set_reference(save=True)``) on the sharded (GPU) path, run
    on CPU over gloo: the saved snapshot becomes every rank's reference, so the KL is exactly 0 at
    the next step's start; a fresh group given the snapshot (a resume) scores with it too."""
    batch = make_batch(5, seed=2)
    algo = AlgoConfig(kl=KLConfig(coef=0.1))
    learner = LearnerConfig(lr=1e-3, micro_batch_size=2)
    snapshot = str(tmp_path / "reference")
    with Group(ray_session, tiny_model_dir, 2, learner, algo, fsdp=True) as two:
        two.train(batch)
        assert min(two.call_all("ref_kl", batch.samples)) > 1e-6  # the reference is still model.path
        two.call_all("set_reference", snapshot, save=True)
        assert two.call_all("ref_kl", batch.samples) == [0.0, 0.0]
        policy = two.call_all("compute_logprobs", batch.samples)
        assert two.call_all("compute_logprobs", batch.samples, reference=True) == policy
        assert [m["kl"] for m in two.train(batch)] == [0.0, 0.0]  # measured at the step's start
        assert min(two.call_all("ref_kl", batch.samples)) > 1e-6  # the policy moved, the reference did not
    with Group(ray_session, tiny_model_dir, 1, learner, algo) as resumed:
        resumed.call("set_reference", snapshot)
        restored = resumed.call("compute_logprobs", batch.samples, reference=True)
    torch.testing.assert_close(torch.tensor(sum(restored, [])), torch.tensor(sum(policy[0], [])), atol=1e-5, rtol=0)
