"""``actors.vllm_ext.keep_seeds_on_discard`` on a stand-in for vLLM's model runner (no vLLM).

The stand-in keeps only what the patch touches, with vLLM 0.32's behaviour: ``_sample`` draws noise
from each seeded request's generator, ``_bookkeeping_sync`` rewinds the generators of the requests
whose token is discarded (a partial prefill chunk) by a CUDA Philox offset, which a CPU generator
does not have. The real engine is covered by
``tests/integration/test_rollout.py::test_full_seeded_batches_survive_chunked_prefill_and_replay``.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from actors.vllm_ext import discarded_cpu_generators, keep_seeds_on_discard


class FakeRunner:
    def __init__(self, seeds: list[int | None], discard: list[bool]) -> None:
        generators = {
            i: torch.Generator().manual_seed(s) for i, s in enumerate(seeds) if s is not None
        }
        self.input_batch = SimpleNamespace(num_reqs=len(seeds), generators=generators)
        # vLLM's buffer is longer than the batch: rows past num_reqs are stale
        self.discard_request_mask = SimpleNamespace(np=np.array(discard + [True, True]))

    def _sample(self) -> dict[int, torch.Tensor]:
        generators = self.input_batch.generators
        return {i: torch.empty(4).exponential_(generator=g) for i, g in generators.items()}

    def _bookkeeping_sync(self) -> str:  # vLLM's rewind, verbatim
        for i in np.nonzero(self.discard_request_mask.np[: self.input_batch.num_reqs])[0]:
            gen = self.input_batch.generators.get(int(i))
            if gen is not None:
                gen.set_offset(gen.get_offset() - 4)
        return "bookkept"

    def step(self) -> dict[int, torch.Tensor]:
        noise = self._sample()
        assert self._bookkeeping_sync() == "bookkept"
        return noise


def first_draws(seed: int, steps: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.empty(4).exponential_(generator=generator) for _ in range(steps)]


def test_vllm_rewind_fails_on_a_discarded_seeded_cpu_sample():
    runner = FakeRunner([5, 6], [True, False])
    with pytest.raises(RuntimeError, match="does not use offset"):
        runner.step()


def test_a_discarded_sample_leaves_its_generator_where_it_was():
    # row 0 is mid-prefill (token discarded), row 1 decodes, row 2 is unseeded and discarded
    runner = FakeRunner([5, 6, None], [True, False, True])
    assert keep_seeds_on_discard(runner)
    generators = dict(runner.input_batch.generators)
    runner.step()
    runner.discard_request_mask.np[0] = False  # the prefill is complete: its first real token
    noise = runner.step()
    assert torch.equal(noise[0], first_draws(5, 1)[0])  # as if the discarded draw never happened
    assert torch.equal(noise[1], first_draws(6, 2)[1])  # the decoding row advanced twice
    assert runner.input_batch.generators == generators  # every generator back in its row


def test_only_discarded_seeded_cpu_rows_are_handled_and_install_is_idempotent():
    runner = FakeRunner([5, 6, None, 7], [True, False, True, True])
    assert sorted(discarded_cpu_generators(runner)) == [0, 3]
    assert keep_seeds_on_discard(runner)
    wrapped = runner._sample
    assert keep_seeds_on_discard(runner) and runner._sample is wrapped
    assert not keep_seeds_on_discard(SimpleNamespace(execute_model=None))  # another model runner
