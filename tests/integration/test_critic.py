"""The PPO critic (actors/critic.py): the value model in-process (zero start, alignment with the
completion tokens, learning, value clipping, skipped steps) and the critic group on real Ray actors
(gloo over localhost, CPU, fp32): 1 rank and 2 ranks make the same update; checkpoints round-trip."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from actors.critic import CriticGroup, CriticWorker
from rlft.config import CriticConfig, ModelConfig, load_config
from rlft.types import TrainBatch, TrainSample

MODEL = ModelConfig()  # float32


def make_batch(n: int, seed: int = 0, vocab: int = 86, old_values: float | None = 0.0) -> TrainBatch:
    """``n`` samples of varied lengths; returns +-1 (one sign per sample, a ramp along the tokens);
    every third sample leaves its last token out of the loss."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n):
        p, c = 2 + i % 3, 3 + (5 * i) % 6
        ids = torch.randint(4, vocab, (p + c,), generator=g).tolist()
        sign = 1.0 if i % 2 else -1.0
        returns = [sign * (0.5 + 0.1 * k) for k in range(c)]
        mask = None if i % 3 else [1] * (c - 1) + [0]
        old = None if old_values is None else [old_values] * c
        samples.append(TrainSample(ids[:p], ids[p:], [0.0] * c, loss_mask=mask, returns=returns, old_values=old))
    return TrainBatch(samples)


def worker(model_dir: str, **critic) -> CriticWorker:
    cfg = CriticConfig(**{"lr": 1e-3, "micro_batch_size": 4, **critic})
    return CriticWorker(0, 1, "127.0.0.1", 0, model_dir, MODEL, cfg, device="cpu")


def flat(values: list[list[float]]) -> torch.Tensor:
    return torch.tensor([v for row in values for v in row], dtype=torch.float64)


# ---------------------------------------------------------------------------------------------------
# One rank, in-process
# ---------------------------------------------------------------------------------------------------


def test_values_start_at_zero_and_regress_towards_the_returns(tiny_model_dir):
    batch = make_batch(6, old_values=None)
    critic = worker(tiny_model_dir, value_clip=None)
    start = critic.values(batch.samples)
    assert [len(v) for v in start] == [len(s.completion_ids) for s in batch.samples]
    assert all(v == 0.0 for row in start for v in row)  # the zero head: exactly 0, not just small

    first = critic.train_step(batch)
    assert first["values_mean"] == 0.0 and first["skipped_steps"] == 0.0
    assert first["tokens"] == batch.num_tokens()
    counted = [r for s in batch.samples for r, m in zip(s.returns, s.loss_mask or [1] * len(s.returns)) if m]
    assert first["returns_mean"] == pytest.approx(sum(counted) / len(counted))
    # V = 0: the loss is the mean of R^2 / 2 over the counted tokens
    assert first["value_loss"] == pytest.approx(sum(r * r for r in counted) / 2 / len(counted), rel=1e-6)
    for _ in range(20):
        last = critic.train_step(batch)
    assert last["value_loss"] < 0.2 * first["value_loss"]
    assert last["explained_variance"] > 0.5
    returns = flat([s.returns for s in batch.samples])
    error = (flat(critic.values(batch.samples)) - returns).abs().mean()
    assert error < 0.5 * returns.abs().mean()


def test_the_value_of_a_completion_token_is_read_where_the_token_is_predicted(tiny_model_dir):
    critic = worker(tiny_model_dir, value_clip=None)
    critic.train_step(make_batch(6, old_values=None))  # a non-zero head
    critic.train_step(make_batch(6, old_values=None))  # and a moved backbone
    a = TrainSample([10, 11], [12, 13, 14], [0.0] * 3)
    b = TrainSample([10, 11], [20, 21, 22], [0.0] * 3)  # same prompt, other completion
    c = TrainSample([10, 11, 12], [13, 14], [0.0] * 2)  # a's first completion token moved into the prompt
    va, vb, vc = critic.values([a, b, c])
    # token 0 is valued from the prompt alone, before it is seen
    assert va[0] == pytest.approx(vb[0], abs=1e-6)
    assert va[1] != pytest.approx(vb[1], abs=1e-4)
    assert va[1:] == pytest.approx(vc, abs=1e-5)
    # batching and padding change nothing
    assert critic.values([a])[0] == pytest.approx(va, abs=1e-5)


def test_the_pessimistic_value_clip_stops_the_update(tiny_model_dir):
    batch = make_batch(6, old_values=None)
    # V = 0, R in +-[0.5, 1]: an old value 3 away on the far side of 0 from R makes the clipped
    # branch (V_old +- 0.1 - R)^2 the larger one on every token: the loss is flat in V
    beyond = TrainBatch([
        TrainSample(s.prompt_ids, s.completion_ids, s.advantages, loss_mask=s.loss_mask, returns=s.returns,
                    old_values=[-3.0 if r > 0 else 3.0 for r in s.returns])
        for s in batch.samples
    ])
    critic = worker(tiny_model_dir, value_clip=0.1)
    m = critic.train_step(beyond)
    assert m["value_clip_fraction"] == 1.0 and m["grad_norm"] == 0.0
    assert all(v == 0.0 for row in critic.values(batch.samples) for v in row)

    # From V = V_old = 0, several epochs: the clipped critic stops pulling once |V - V_old| > clip
    # (Adam's momentum carries it somewhat further), the plain one keeps regressing.
    at_zero = make_batch(6, old_values=0.0)
    moved = {}
    for clip in (0.01, None):
        critic = worker(tiny_model_dir, value_clip=clip, epochs=8)
        m = critic.train_step(at_zero)
        moved[clip] = float(flat(critic.values(at_zero.samples)).abs().max())
        assert (m["value_clip_fraction"] > 0.5) if clip else (m["value_clip_fraction"] == 0.0)
    assert moved[0.01] < 0.6 * moved[None]


def test_a_non_finite_loss_skips_the_step(tiny_model_dir):
    batch = make_batch(4)
    s = batch.samples[0]
    poisoned = TrainBatch([TrainSample(s.prompt_ids, s.completion_ids, s.advantages, loss_mask=s.loss_mask,
                                       returns=[float("nan")] * len(s.returns), old_values=s.old_values),
                           *batch.samples[1:]])
    critic = worker(tiny_model_dir, epochs=2)
    m = critic.train_step(poisoned)
    assert m["skipped_steps"] == 2.0
    assert all(v == 0.0 for row in critic.values(batch.samples) for v in row)
    assert critic.train_step(batch)["skipped_steps"] == 0.0  # the next, finite step goes through


def test_a_step_needs_returns_and_old_values_under_clipping(tiny_model_dir):
    critic = worker(tiny_model_dir, value_clip=0.2)
    with pytest.raises(ValueError, match="returns"):
        critic.train_step(TrainBatch([TrainSample([5], [6], [0.0], old_values=[0.0])]))
    with pytest.raises(ValueError, match="old_values"):
        critic.train_step(TrainBatch([TrainSample([5], [6], [0.0], returns=[1.0])]))


def test_loading_a_checkpoint_without_a_critic_names_the_missing_file(tiny_model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="value_model.pt"):
        worker(tiny_model_dir).load_checkpoint(str(tmp_path))


# ---------------------------------------------------------------------------------------------------
# The group on Ray
# ---------------------------------------------------------------------------------------------------


def group_config(ranks: int, micro_batch_size: int):
    return load_config(overrides=[
        f"critic={{lr: 3e-4, micro_batch_size: {micro_batch_size}, epochs: 3, value_clip: 0.05, num_ranks: {ranks}}}",
        "cluster.critic.cpus=0.5",
    ])


def revalued(batch: TrainBatch, values: list[list[float]]) -> TrainBatch:
    """``batch`` with the critic's current values as its ``old_values`` (what the driver sends)."""
    return TrainBatch([replace(s, old_values=v) for s, v in zip(batch.samples, values)])


def test_one_rank_and_two_ranks_make_the_same_update_and_checkpoints_round_trip(
    ray_session, tiny_model_dir, tmp_path
):
    """Three epochs: the first moves only the zero-initialised head (the backbone's gradient is 0),
    the next ones the backbone too, and by the third some values are clipped. Uneven shards (4 + 3
    samples), micro-batches of 2 against one pass of 7."""
    batch = make_batch(7)
    one = CriticGroup(group_config(1, 7), tiny_model_dir)
    two = CriticGroup(group_config(2, 2), tiny_model_dir)
    fresh = None
    try:
        assert len(two.nodes()) == 2
        m1, m2 = one.train_step(batch), two.train_step(batch)
        v1, v2 = flat(one.values(batch)), flat(two.values(batch))
        assert float(v1.abs().max()) > 1e-2  # the step did move the values
        assert float((v1 - v2).abs().max()) < 1e-5
        assert m1.keys() == m2.keys()
        for key in m1:
            assert m2[key] == pytest.approx(m1[key], rel=1e-5, abs=1e-6), key
        assert m1["tokens"] == batch.num_tokens()
        assert 0.0 < m1["value_clip_fraction"] < 1.0

        path = str(tmp_path / "ckpt")
        assert two.save_checkpoint(path) == path
        files = sorted(p.name for p in (tmp_path / "ckpt" / "critic").iterdir())
        assert files == ["optimizer-rank0.pt", "optimizer-rank1.pt", "value_model.pt"]  # no temp files left
        fresh = CriticGroup(group_config(2, 2), tiny_model_dir)
        fresh.load_checkpoint(path)
        assert flat(fresh.values(batch)).tolist() == v2.tolist()  # exactly
        # the AdamW state came back too: the next step (on freshly valued samples) is the same
        again = revalued(batch, two.values(batch))
        assert fresh.train_step(again) == two.train_step(again)
        assert flat(fresh.values(batch)).tolist() == flat(two.values(batch)).tolist()

        # fewer samples than ranks: rank 0's shard is empty and it still joins the collectives
        single = TrainBatch(batch.samples[:1])
        for group in (one, fresh):
            group.load_checkpoint(path)
            assert group.train_step(single)["tokens"] == single.num_tokens()
        assert flat(fresh.values(single)).tolist() == pytest.approx(flat(one.values(single)).tolist(), abs=1e-5)
        empty = fresh.train_step(TrainBatch([]))  # no token anywhere: no step, the values stay
        assert empty["tokens"] == 0.0 and empty["grad_norm"] == 0.0
        assert flat(fresh.values(single)).tolist() == pytest.approx(flat(one.values(single)).tolist(), abs=1e-5)
    finally:
        for group in (one, two, fresh):
            if group is not None:
                group.shutdown()
