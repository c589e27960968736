"""ReferenceWorker: the frozen reference policy on its own actor (``cluster.reference.placement:
separate``).

By default every learner rank keeps a reference copy next to the policy it trains; a large policy
may not leave room for that copy on the learner's GPUs. A separate reference actor holds the one
frozen copy with its own resources (``cluster.reference``: cpus, gpus, custom resources); before each
RL learner step the learner group asks it for the batch's completion-token log-probs, which travel
with the samples (``TrainSample.ref_logprobs``) into the KL term. The two placements give the same
loss: the log-probs come from the same weights at the same temperature.

Example (in-process, no Ray)::

    ref = ReferenceWorker("path/to/model", ModelConfig(), temperature=1.0)
    ref.logprobs([TrainSample([5, 6], [7, 8], [0.0, 0.0])])   # [[lp(7 | 5 6), lp(8 | 5 6 7)]]
"""

from __future__ import annotations

from actors.distributed import DTYPES, resolve_device, load_causal_lm
from rlft.config import LearnerConfig, ModelConfig
from rlft.micro_batches import Precision, cpu_bf16_support, resolve_precision, sequence_logprobs
from rlft.types import TrainSample


_LEARNER = LearnerConfig()  # the learner's micro-batching and precision defaults, which this copy mirrors


class ReferenceWorker:
    """One frozen copy of the reference model (the base model, or an SFT snapshot) that scores completions."""

    def __init__(
        self,
        model_path: str,
        model_cfg: ModelConfig,
        *,
        temperature: float = 1.0,
        micro_batch_size: int | None = _LEARNER.micro_batch_size,
        max_tokens_per_micro_batch: int | None = _LEARNER.max_tokens_per_micro_batch,
        precision: Precision = _LEARNER.precision,
        device: str = "auto",
    ) -> None:
        self.device = resolve_device(device)
        self.model_cfg = model_cfg
        self.load(model_path)
        self.pad_id = self.model.config.pad_token_id or 0
        # greedy rollouts are scored at temperature 1, as the learner does
        self.temperature = temperature if temperature > 0 else 1.0
        self.micro_batch_size, self.max_tokens = micro_batch_size, max_tokens_per_micro_batch
        # the policy's precision, so the KL term compares like with like
        cpu = cpu_bf16_support() if self.device.type == "cpu" else None
        self.precision = resolve_precision(precision, self.device.type, cpu)[0]

    def load(self, path: str) -> None:
        """Replace the reference weights with the model at ``path`` (an RL stage after an SFT
        stage measures its KL against the SFT policy)."""
        self.model = None
        self.model = load_causal_lm(path, self.model_cfg, DTYPES[self.model_cfg.dtype]).requires_grad_(False)
        self.model.to(self.device).eval()

    def ready(self) -> bool:
        return True

    def logprobs(self, samples: list[TrainSample]) -> list[list[float]]:
        """Completion-token log-probs of each sample under the reference weights."""
        return sequence_logprobs(self.model, samples, pad_id=self.pad_id, device=self.device,
                                 temperature=self.temperature, max_tokens=self.max_tokens,
                                 max_seqs=self.micro_batch_size, precision=self.precision)
