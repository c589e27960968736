"""Rejection-sampling fine-tuning (RFT) with DART's difficulty-aware allocation: the pure parts.

An RFT step samples completions of the step's prompts with the current policy, keeps those the
rewards accept (total >= ``rft.threshold``), de-duplicates each prompt's accepted completions by
their reasoning path and trains on them as demonstrations (``ImitationBuilder``, the stage's SFT
objective). RFT ("Scaling Relationship on Learning Mathematical Reasoning with Large Language
Models", Yuan et al. 2023) compares reasoning paths by their list of intermediate equations
(``equations``), not the string: distinct paths are what helps. DART ("DART-Math: Difficulty-Aware
Rejection Tuning", Tong et al. 2024) gives hard prompts more trials: sampling goes on in rounds until
each prompt has the accepted completions it wants (``wanted``) or its budget is spent.

>>> from rlft.collect import Prompts, StepInfo
>>> from rlft.config import StageConfig, load_config
>>> from rlft.types import Prompt, Rollout
>>> TEXTS = ["1+1=2 so 2", "1+1=3 so 3", "1 + 1 = 2, So 2"]  # the 1st and 3rd: one path, two strings
>>> class Echo:  # engine and scorer at once: completion i says TEXTS[i % 3]; answer 2 is right
...     def generate(self, prompts, sampling):
...         return [Rollout(p.prompt_id, g, list(p.token_ids), [i, 0], [0.0, 0.0], "stop", 0,
...                         completion=TEXTS[i % 3]) for g, p in enumerate(prompts) for i in range(sampling.n)]
...     def score(self, rollouts):
...         return [float(r.completion.endswith("2")) for r in rollouts]
>>> cfg = load_config(overrides=["rollout.prompts_per_step=2"])
>>> echo = Echo()
>>> collector = RFTCollector(cfg, echo, echo, Prompts(cfg, [Prompt("a", [5]), Prompt("b", [6])]))
>>> c = collector.collect(StepInfo(0, 0, stage=StageConfig(kind="rft", steps=1, rft={"samples": 4})))
>>> kept = [(r.group_id, r.completion) for r, a in zip(c.rollouts, c.advantages) if a is not None]
>>> kept  # 3 of 4 accepted per prompt, 1 distinct path each
[(0, '1+1=2 so 2'), (1, '1+1=2 so 2')]
>>> c.metrics["rft/sampled"], c.metrics["rft/accepted"], c.metrics["rft/kept"], c.advantages[:4]
(8.0, 6.0, 2.0, [1.0, None, None, None])
>>> stage = StageConfig(kind="rft", steps=1, rft={"samples": 4, "dedup": "normalized"})
>>> c2 = collector.collect(StepInfo(1, 1, stage=stage))
>>> [r.completion for r, a in zip(c2.rollouts, c2.advantages) if a is not None]
['1+1=2 so 2', '1 + 1 = 2, So 2', '1+1=2 so 2', '1 + 1 = 2, So 2']
>>> batch, m = ImitationBuilder().build(c, version=0)
>>> batch.samples[0].completion_ids, batch.samples[0].advantages, m
([0, 0], [1.0, 1.0], {'batch/samples': 2.0, 'batch/tokens': 4.0})
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Hashable, Sequence

from rlft.batching import outcome_advantages, usable
from rlft.builders import BatchBuilder
from rlft.collect import Collected, StepInfo, SyncCollector, check_failures, restart_metrics, sampling_settings
from rlft.config.stages import RFTConfig
from rlft.timing import Phases
from rlft.types import Rollout, Scores, TrainBatch, TrainSample

DEDUP_MODES = ("none", "exact", "normalized", "equations")
ALLOCATIONS = ("fixed", "uniform", "difficulty")

# <expression>=<number>: the expression starts with a digit or "(" and holds digits, + - * / ( ),
# spaces, and "." before a digit (a decimal point, not a full stop); the result is a number,
# optionally negative or decimal. Words and full stops end an expression, so "3 apples. 3*4=12"
# yields only "3*4=12" (numbers apart only by spaces, "step 2 3*4=12", do run together).
_EQUATION = re.compile(r"[\d(](?:[\d+\-*/()\s]|\.(?=\d))*=\s*-?\d+(?:\.\d+)?")
_SPACE = re.compile(r"\s+")


def equations(text: str) -> tuple[str, ...]:
    """The intermediate equations of a completion (``<expression>=<number>``), in order, without
    whitespace: RFT's reasoning path. A leading minus sign of an expression is not part of it.

    >>> equations("7+5=12,4+8+1=13;432")
    ('7+5=12', '4+8+1=13')
    >>> equations("3 * 4 = 12 so 12+1=13"), equations("(2.5 + 1) / 7 = 0.5"), equations("x = 5, so 5")
    (('3*4=12', '12+1=13'), ('(2.5+1)/7=0.5',), ())
    >>> equations("She has 12 apples. 12*3=36. So 36")
    ('12*3=36',)
    """
    return tuple(_SPACE.sub("", m.group()) for m in _EQUATION.finditer(text))


def reasoning_key(text: str, mode: str) -> Hashable:
    """What makes two accepted completions of one prompt the same (``RFTConfig.dedup``):

    * ``none``: nothing: a fresh ``object()`` each call, equal to no other key;
    * ``exact``: the text;
    * ``normalized``: the text with whitespace collapsed, stripped, lower-cased;
    * ``equations``: the tuple of its ``equations``; the normalized text when it has none.

    >>> reasoning_key(" 1 + 1 = 2\\n So 2", "exact"), reasoning_key(" 1 + 1 = 2\\n So 2", "normalized")
    (' 1 + 1 = 2\\n So 2', '1 + 1 = 2 so 2')
    >>> reasoning_key(" 1 + 1 = 2\\n So 2", "equations"), reasoning_key("Two.", "equations")
    (('1+1=2',), 'two.')
    >>> reasoning_key("a", "none") == reasoning_key("a", "none")
    False
    """
    if mode == "none":
        return object()
    if mode == "exact":
        return text
    normalized = " ".join(text.split()).lower()
    if mode == "normalized":
        return normalized
    if mode == "equations":
        return equations(text) or normalized
    raise ValueError(f"unknown dedup mode {mode!r}; valid modes: {', '.join(DEDUP_MODES)}")


def distinct(texts: Sequence[str], mode: str, limit: int | None = None) -> list[int]:
    """Indices of the first text of each distinct ``reasoning_key``, in order, at most ``limit``.

    >>> distinct(["1+1=2 so 2", "1 + 1 = 2. So 2", "2-0=2, 2", "1+1=2 so 2"], "equations")
    [0, 2]
    >>> distinct(["a", "A ", "a", "b"], "normalized"), distinct(["a", "a", "b"], "none", limit=2)
    ([0, 3], [0, 1])
    """
    seen: set[Hashable] = set()
    out: list[int] = []
    for i, text in enumerate(texts):
        if limit is not None and len(out) >= limit:
            break
        key = reasoning_key(text, mode)
        if key not in seen:
            seen.add(key)
            out.append(i)
    return out


def wanted(accepted: int, scored: int, *, allocation: str, target: int) -> int:
    """How many accepted completions a prompt wants, from its first round: ``accepted`` of its
    ``scored`` samples (failed rewards left out) were accepted. Sampling goes on for the prompt while
    it has fewer accepted completions (before de-duplication) than this and budget left.

    * ``fixed``: what it got (no more rounds);
    * ``uniform``: ``target`` for every prompt (DART-Math's "uniform");
    * ``difficulty``: DART-Math's "prop2diff", accepted completions proportional to difficulty, the
      first-round failure rate ``f = 1 - accepted / scored``: ``max(1, ceil(target * f))``. A prompt
      that always failed wants ``target`` (the most), one that never failed wants 1; a prompt without
      a scored sample counts as the hardest.

    >>> [wanted(a, 8, allocation="difficulty", target=4) for a in (8, 7, 4, 1, 0)]
    [1, 1, 2, 4, 4]
    >>> wanted(3, 8, allocation="fixed", target=4), wanted(6, 8, allocation="uniform", target=4)
    (3, 4)
    """
    if not 0 <= accepted <= scored:
        raise ValueError(f"accepted ({accepted}) must be within [0, scored ({scored})]")
    if allocation == "fixed":
        return accepted
    if allocation == "uniform":
        return target
    if allocation == "difficulty":
        if scored == 0:
            return target
        return max(1, -(-target * (scored - accepted) // scored))  # integer ceil: no rounding error
    raise ValueError(f"unknown allocation {allocation!r}; valid allocations: {', '.join(ALLOCATIONS)}")


def accepts(total: float | None, threshold: float) -> bool:
    """Whether a completion is accepted: its reward counts (``usable``: not failed, finite) and is
    at least ``threshold``.

    >>> [accepts(x, 1.0) for x in (1.0, 0.5, None, float("nan"), 2.0)]
    [True, False, False, False, True]
    """
    return usable(total) and total >= threshold  # type: ignore[operator]


class RFTCollector(SyncCollector):
    """Collects an RFT step (a ``SyncCollector`` with another ``collect``; its construction,
    generation hook and checkpoint state are the sync collector's): the policy's accepted, de-duplicated completions of
    ``rollout.prompts_per_step`` prompts, with the running stage's ``rft`` settings
    (``StepInfo.stage``; the defaults without one).

    Round 1 samples ``rft.samples`` completions per prompt and the curriculum observes these groups.
    With ``allocation`` ``uniform`` or ``difficulty`` more rounds follow, each sampling up to
    ``rft.samples`` more (a fresh seed per round) only for the prompts that have fewer accepted
    completions than they want (``wanted``) and fewer samples than ``rft.max_samples`` (never more:
    the last round may sample fewer). The curriculum does not observe the extra rounds: its
    statistics (pass rates, pools, bandit rewards) assume each drawn prompt is seen once per step,
    with one group size, and extra rounds go to a biased subset (the prompts short of their target,
    the hard ones), which would count their failures again.

    Each prompt's accepted completions, in sampling order, are de-duplicated by ``reasoning_key``
    (the first of each key kept), at most ``rft.max_per_prompt``. The ``Collected`` holds every
    sample of the step (so rewards, the signal watch and sample logs see them all) with ``group_id``
    = its prompt's position in ``indices``; the kept ones have advantage 1, the others None (not
    trained). A step where nothing is accepted trains on nothing (the driver skips its update).
    """

    def collect(self, at: StepInfo) -> Collected:
        cfg = self.cfg
        rft = at.stage.rft_settings if at.stage is not None else RFTConfig()
        phases = Phases(self.clock, "time/generate", "time/reward")
        drawn = self.drawn.pop(at.step, None)
        indices = drawn if drawn is not None else self.prompts.draw(cfg.rollout.prompts_per_step)
        prompts = self.prompts.get(indices)
        pool: list[Rollout] = []  # every sample of the step, group_id = its prompt's position in indices
        parts: list[Scores] = []
        sampled, scored = [0] * len(indices), [0] * len(indices)
        accepted: list[list[int]] = [[] for _ in indices]  # positions in pool, sampling order
        want: list[int] = []
        active, n, rounds = list(range(len(indices))), rft.samples, 0
        while active and n > 0:
            settings = sampling_settings(cfg, at.step, n=n)
            if rounds:  # as SyncCollector's extra rounds: the same step, fresh samples
                settings = dataclasses.replace(settings, seed=(settings.seed or 0) + 1_000_003 * 7919 * rounds)
            with phases("time/generate"):
                rollouts = self.generate(at, [prompts[g] for g in active], settings)
            with phases("time/reward"):
                scores = Scores.of(self.scorer.score(rollouts))
                check_failures(scores, at.step, cfg.reward.max_failure_rate)
            if not rounds:
                advantages = outcome_advantages(rollouts, scores.totals, estimator=cfg.algo.advantage.name,
                                                params=cfg.algo.advantage.params)
                self.prompts.observe(indices, rollouts, scores, advantages)
            rounds += 1
            parts.append(scores)
            for r, total in zip(rollouts, scores.totals):
                g = active[r.group_id]
                if accepts(total, rft.threshold):
                    accepted[g].append(len(pool))
                sampled[g] += 1
                scored[g] += usable(total)
                pool.append(dataclasses.replace(r, group_id=g))
            if rounds == 1:  # the first round sets what each prompt wants
                want = [wanted(len(accepted[g]), scored[g], allocation=rft.allocation, target=rft.target)
                        for g in range(len(indices))]
            active = [g for g in active if len(accepted[g]) < want[g] and sampled[g] < rft.max_samples]
            # the prompts still active have run every round so far: they have the same budget left
            n = min(rft.samples, rft.max_samples - sampled[active[0]]) if active else 0
        kept = [[positions[j] for j in distinct([pool[p].completion for p in positions], rft.dedup,
                                                rft.max_per_prompt)] for positions in accepted]
        chosen = [p for positions in kept for p in positions]
        scores = Scores.concat(parts) if len(parts) > 1 else parts[0]
        with_any = [len(k) for k in kept if k]
        tokens = sum(len(r.completion_ids) for r in pool)
        total_sampled, total_accepted = len(pool), sum(len(a) for a in accepted)
        metrics = {
            "rft/sampled": float(total_sampled),
            "rft/accepted": float(total_accepted),
            "rft/accepted_fraction": total_accepted / max(total_sampled, 1),
            "rft/kept": float(len(chosen)),
            "rft/kept_fraction": len(chosen) / max(total_sampled, 1),
            "rft/distinct_per_prompt": sum(with_any) / max(len(with_any), 1),
            "rft/prompts_without": (len(indices) - len(with_any)) / max(len(indices), 1),
            "rft/rounds": float(rounds),
            "throughput/tokens_per_s": tokens / max(phases.timings["time/generate"], 1e-9),  # every generated token
            **restart_metrics(self.engine, self.scorer),
        }
        keep = set(chosen)
        return Collected(list(indices), pool, scores, [1.0 if p in keep else None for p in range(len(pool))],
                         metrics, phases.timings, [p.prompt_id for p in prompts])

class ImitationBuilder(BatchBuilder):
    """The kept completions as demonstrations: each one a sample with weight 1 on every
    completion token, for the stage's SFT objective (RFT). Kept are the collected completions with
    an advantage (``RFTCollector`` gives the accepted, distinct ones 1 and the others None); groups
    without reward spread are not dropped: accepted completions are the rule here, not noise.

    The completion tokens are taken as the engine returned them. vLLM keeps the token that ended a
    completion in its ``token_ids`` (``vllm.v1.core.sched.utils.check_stop`` appends the sampled token
    before checking it; the text leaves it out): a completion that finished with ``stop`` on EOS ends
    with the EOS id (``tests/integration/test_rollout.py`` asserts it), just as
    ``launch.train.sft_examples`` appends EOS to a reference, so the imitation sample teaches the
    model to stop where it stopped. One that stopped on a ``rollout.stop`` string ends with that
    string's tokens (which the model then learns to emit), and one cut at ``max_new_tokens``
    (``length``) has no end token, so nothing teaches it to stop there. No EOS is appended.

    >>> from rlft.collect import Collected
    >>> rs = [Rollout("p", 0, [1, 2], [3, 9], [-0.5, -0.1], "stop", 4)]
    >>> batch, m = ImitationBuilder().build(Collected([0], rs, Scores([1.0]), [1.0]), version=5)
    >>> s = batch.samples[0]
    >>> (s.prompt_ids, s.completion_ids, s.advantages, s.rollout_logprobs, s.policy_version), m
    (([1, 2], [3, 9], [1.0, 1.0], None, 4), {'batch/samples': 1.0, 'batch/tokens': 2.0})
    """

    def build(self, collected: Collected, version: int) -> tuple[TrainBatch, dict[str, float]]:
        samples = [TrainSample(list(r.prompt_ids), list(r.completion_ids), [1.0] * len(r.completion_ids),
                               policy_version=r.policy_version)  # kept: the learner logs the version lag
                   for r, a in zip(collected.rollouts, collected.advantages) if a is not None]
        tokens = sum(len(s.completion_ids) for s in samples)
        return TrainBatch(samples), {"batch/samples": float(len(samples)), "batch/tokens": float(tokens)}

