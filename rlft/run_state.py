"""Where a run stands, and how it is saved and continued.

``RunState`` holds the run's position (global step, policy version, stage and step in it, the
learner steps skipped in a row, the KL reference snapshot in use, the evaluations) and writes it,
with the state of every stateful part of the step (curriculum samplers, the collector's prompts in
flight, the batch builder), into a checkpoint next to the learner's own (``checkpoint``);
``restore`` continues from one exactly. It remembers the state at each step's start, so a stop
request mid-step checkpoints the last step boundary (``checkpoint_on_interrupt``).

Checkpoint layout (``checkpoint_dir/step-<N>``): the policy in Hugging Face format, the learner's
optimizer state, and ``trainer_state/driver.json`` with ``state_dict``'s keys. A checkpoint written
before the step was split into parts (its builder state under ``ppo``) loads the same.

>>> from rlft.compose import build_driver
>>> from rlft.config import load_config
>>> from rlft.types import Prompt
>>> driver = build_driver(load_config(), engine=None, scorer=None, learner=None, weights=None,
...                       train_prompts=[Prompt("p", [1])])
>>> state = driver.state.state_dict()
>>> state["step"], state["pipeline"], state["builder"], sorted(state)[:4]
(0, [], {}, ['builder', 'consecutive_skips', 'evaluations', 'pipeline'])
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rlft.builders import BatchBuilder
from rlft.checkpointing import (
    CheckpointError,
    atomic_dir,
    list_checkpoints,
    load_driver_state,
    prune,
    rng_state,
    save_driver_state,
    set_rng_state,
    step_dir_name,
)
from rlft.collect import Collector
from rlft.config import RunConfig, StageConfig, save_config
from rlft.roles import Learner
from rlft.stopping import StopRule

logger = logging.getLogger(__name__)


def snapshots_reference(cfg: RunConfig, index: int) -> bool:
    """Whether RL stage ``index`` measures its KL against the policy as the SFT stage right before
    it left it (``algo.kl.reference: after_sft`` with a KL term), rather than the reference it had.

    >>> from rlft.config import load_config
    >>> sft_then_rl = ["algo.kl.coef=0.1", "stages=[{kind: sft, steps: 5}, {kind: rl, steps: 5}]"]
    >>> snapshots_reference(load_config(overrides=sft_then_rl), 1)
    True
    >>> snapshots_reference(load_config(overrides=[*sft_then_rl, "algo.kl.reference=base"]), 1)
    False
    """
    kl = cfg.algo.kl
    return (kl.coef > 0 and kl.reference == "after_sft" and index > 0 and cfg.stages[index].kind == "rl"
            and cfg.stages[index - 1].kind == "sft")


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class RunSummary:
    """What a run did: evaluations by name (e.g. ``before_rl1``, ``after_rl1``) and the last step."""

    evaluations: dict[str, dict[str, float]] = field(default_factory=dict)
    steps: int = 0
    version: int = 0
    checkpoints: list[str] = field(default_factory=list)


class RunState:
    """The run's position and its checkpoints; ``samplers`` maps a state key (``sampler``,
    ``sft_sampler``) to the part whose state it holds (None: the run has no such part)."""

    def __init__(self, cfg: RunConfig, *, learner: Learner, collector: Collector, builder: BatchBuilder,
                 samplers: dict[str, Stateful | None], checkpoint_dir: str | None = None,
                 reference_dir: str | None = None, log: Callable[[dict[str, float]], None] = lambda m: None):
        self.cfg, self.learner, self.collector, self.builder = cfg, learner, collector, builder
        self.samplers, self.checkpoint_dir, self.reference_dir, self.log = samplers, checkpoint_dir, reference_dir, log
        self.step = 0  # global step counter across stages (logging, checkpoints)
        self.version = 0  # learner steps applied == policy version the engines serve after a sync
        self.stage_index, self.stage_step = 0, 0  # where the run is: stage, steps done in it
        self.consecutive_skips = 0  # learner steps in a row skipped for non-finite loss/gradients
        self.reference: str | None = None  # the KL reference snapshot in use; None: model.path
        self.summary = RunSummary()
        self.failed_checkpoints = 0
        self.learner_ahead = False  # the learner (or critic) applied an update not counted yet
        self._boundary: dict[str, Any] | None = None  # the state at the current step's start
        self.stop: StopRule | None = None  # the current stage's ``until`` rule
        self._until: dict[str, Any] | None = None  # a restored stage's rule state, until the stage resumes

    def start_stage(self, stage: StageConfig) -> None:
        """Begin (or, restored mid-stage, continue) ``stage``: its ``until`` rule, with the state
        the checkpoint held for it."""
        state, self._until = (self._until if self.stage_step > 0 else None), None
        self.stop = StopRule(stage.until, state) if stage.until is not None else None

    def end_stage(self) -> None:
        self.stage_index, self.stage_step, self.stop = self.stage_index + 1, 0, None

    def begin_step(self) -> None:
        """Remember the state at the step's start (an interrupt checkpoint is taken from it)."""
        self._boundary = self.state_dict()

    def end_step(self) -> None:
        self.step += 1
        self.stage_step += 1
        self.learner_ahead, self._boundary = False, None

    def state_dict(self) -> dict[str, Any]:
        """Everything the driver's side needs to continue exactly (the learner saves its own state)."""
        return {
            "step": self.step,
            "version": self.version,
            "stage_index": self.stage_index,
            "stage_step": self.stage_step,
            "consecutive_skips": self.consecutive_skips,
            "reference": self.reference,
            **{key: part.state_dict() if part is not None else None for key, part in self.samplers.items()},
            "evaluations": copy.deepcopy(self.summary.evaluations),
            "rng": rng_state(),
            "pipeline": self.collector.state_dict(),  # prompts drawn for steps not trained yet
            "builder": self.builder.state_dict(),
            "until": self.stop.state_dict() if self.stop is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.version = state["step"], state["version"]
        self.stage_index, self.stage_step = state["stage_index"], state["stage_step"]
        self.consecutive_skips = state["consecutive_skips"]
        self.reference = state.get("reference")  # absent in checkpoints older than the snapshots
        for key, part in self.samplers.items():
            if part is not None and state.get(key) is not None:
                part.load_state_dict(state[key])
        self.summary.evaluations = copy.deepcopy(state["evaluations"])
        set_rng_state(state["rng"])
        self.collector.load_state_dict(state.get("pipeline", []))  # regenerated, not redrawn
        self.builder.load_state_dict(state["builder"] if "builder" in state else state.get("ppo"))
        self._until = state.get("until")  # the stage's rule continues from it (``start_stage``)

    def restore(self, checkpoint: str | Path) -> None:
        """Continue from ``checkpoint``: the learner's, the builder's and the run's state (the
        caller then pushes the restored weights to the engines)."""
        state = load_driver_state(Path(checkpoint))
        version = self.learner.load_checkpoint(str(checkpoint))
        if version != state["version"]:
            raise CheckpointError(f"{checkpoint}: learner version {version} != driver version {state['version']}")
        self.load_state_dict(state)
        if self.reference is not None:
            if not Path(self.reference).is_dir():
                raise CheckpointError(f"{checkpoint}: its KL reference snapshot {self.reference} is gone")
            self.learner.set_reference(self.reference)
        self.builder.load_checkpoint(str(checkpoint))
        self.summary.checkpoints = [str(p) for p in list_checkpoints(Path(checkpoint).parent, resumable=False)]

    def snapshot_reference(self, stage_name: str) -> None:
        """The policy as it stands becomes the KL reference, saved to ``reference_dir/<stage>``."""
        if self.reference_dir is None:
            raise ValueError("algo.kl.reference 'after_sft' needs a directory for the reference snapshot")
        path = str(Path(self.reference_dir) / stage_name)
        self.learner.set_reference(path, save=True)
        self.reference = path

    def checkpoint(self, state: dict[str, Any] | None = None) -> str | None:
        """Write ``checkpoint_dir/step-<N>`` atomically: the policy in Hugging Face format and (unless
        ``checkpoint.weights_only``) the learner's, the builder's and the run's state; then prune to
        ``keep_last``. A failure (a full disk, an unwritable directory) is logged and counted; the
        previous checkpoints stay intact and the run goes on."""
        if self.checkpoint_dir is None:
            return None
        state = state or self.state_dict()
        path = Path(self.checkpoint_dir) / step_dir_name(state["step"])
        if str(path) in self.summary.checkpoints:
            return str(path)
        weights_only = self.cfg.checkpoint.weights_only
        try:
            with atomic_dir(path) as tmp:
                self.learner.save_checkpoint(str(tmp), weights_only=weights_only)
                if not weights_only:
                    self.builder.save_checkpoint(str(tmp))
                    save_driver_state(tmp, state)
                    save_config(self.cfg, tmp / "trainer_state" / "config.yaml")
        except OSError as err:
            self.failed_checkpoints += 1
            logger.error("checkpoint at step %d failed, the previous ones are intact: %s", state["step"], err)
            self.log({"checkpoint/failed": float(self.failed_checkpoints)})
            return None
        self.summary.checkpoints.append(str(path))
        for old in prune(self.checkpoint_dir, self.cfg.checkpoint.keep_last):
            if str(old) in self.summary.checkpoints:
                self.summary.checkpoints.remove(str(old))
        return str(path)

    def checkpoint_on_interrupt(self) -> None:
        """A checkpoint of the last step boundary; none when the learner is ahead of the run's
        count (interrupted inside its update: the boundary's weights are gone), so a resume never
        replays or skips a step."""
        if self.learner_ahead:
            logger.warning("interrupted during a learner update: the last periodic checkpoint is the resume point")
            return
        try:
            path = self.checkpoint(self._boundary or self.state_dict())
        except Exception as err:  # the actors may be going down with the interrupt
            logger.warning("no checkpoint on interrupt: %s: %s", type(err).__name__, err)
            return
        if path:
            logger.warning("interrupted: checkpoint %s written; resume with rlft train --resume", path)
