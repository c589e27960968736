"""Held-out evaluation: which answers are correct, and what one evaluation reports.

A completion is *correct* when one named reward scores at least a threshold
(``evaluation.correct: {reward: <its name in metrics>, threshold: 1.0}``); by default the reward is
the built-in task's verifier, else the first of ``reward.functions``. Accuracy and pass@k count
correct answers only, so a shaping reward (format, length) never passes for a solved prompt; the
weighted total of all the rewards is reported apart, as the mean reward:

* ``eval/accuracy``: the fraction of held-out prompts whose greedy completion is correct;
* ``eval/mean_reward``: the mean total reward of those greedy completions (failed ones left out);
* ``eval/pass@k``: the fraction of prompts with a correct answer among ``k`` sampled completions;
* ``eval/mean@k``: the fraction of those ``k`` samples that are correct (sampled accuracy);
* ``eval/mean_reward@k``: their mean total reward;
* ``eval/failed_rewards`` (greedy completions whose reward failed: never correct) and ``eval/prompts``.

>>> greedy = Scores([1.2, 0.2], per_reward={"exact": [1.0, 0.0], "format": [1.0, 1.0]})
>>> greedy_metrics(greedy, CorrectConfig(reward="exact"))
{'eval/accuracy': 0.5, 'eval/failed_rewards': 0.0, 'eval/prompts': 2.0, 'eval/mean_reward': 0.7}
"""

from __future__ import annotations

from collections.abc import Sequence

from rlft.collect import sampling_settings
from rlft.config import ConfigError, RunConfig
from rlft.config.evaluation import CorrectConfig
from rlft.roles import RewardScorer, RolloutEngine
from rlft.types import Prompt, Rollout, SamplingSettings, Scores


def correct_reward(cfg: RunConfig) -> CorrectConfig:
    """The reward (and threshold) that decides which answers are correct: ``evaluation.correct``,
    else the built-in task's verifier, else the first reward function. A ``ConfigError`` asks for a
    choice when the run names no reward at all.

    >>> from rlft.config import load_config
    >>> correct_reward(load_config(overrides=["data.train_path=builtin:arithmetic"])).reward
    'arithmetic'
    >>> two = "reward.functions=[{name: regex_format, label: fmt}, {name: exact_match}]"
    >>> correct_reward(load_config(overrides=["data.train_path=d.jsonl", two])).reward
    'fmt'
    >>> correct_reward(load_config(overrides=["data.train_path=d.jsonl", two,
    ...     "evaluation.correct={reward: exact_match, threshold: 0.5}"]))
    CorrectConfig(reward='exact_match', threshold=0.5)
    """
    if cfg.evaluation.correct is not None:
        return cfg.evaluation.correct
    functions, src = cfg.reward.functions, cfg.data.train_path
    verifier = next((f.key for f in functions if f.name == "builtin_task"), None)
    if verifier is not None:
        return CorrectConfig(reward=verifier)
    if functions:
        return CorrectConfig(reward=functions[0].key)
    if src.startswith("builtin:"):
        return CorrectConfig(reward=src.split(":")[1])
    raise ConfigError(
        "evaluation: no reward decides which answers are correct (reward.functions is empty and "
        f"data.train_path {src!r} is not a built-in task): add your reward to reward.functions and, with "
        "several, choose one with evaluation.correct: {reward: <its name>, threshold: 1.0}"
    )


def correct_flags(scores: Scores, correct: CorrectConfig) -> list[bool]:
    """Per sample: whether ``correct.reward`` scored at least ``correct.threshold`` (a failed reward
    is never correct). A scorer that reports only totals (no ``per_reward``) has one reward: its total.

    >>> s = Scores([1.5, 0.5, None], per_reward={"ok": [1.0, 0.0, None], "fmt": [1.0, 1.0, 1.0]})
    >>> correct_flags(s, CorrectConfig(reward="ok")), correct_flags(Scores([1.0, 0.4]), CorrectConfig(reward="x"))
    ([True, False, False], [True, False])
    """
    if scores.per_reward:
        if correct.reward not in scores.per_reward:
            raise ConfigError(
                f"evaluation.correct.reward '{correct.reward}' is not one of the rewards scored: "
                f"{', '.join(scores.per_reward)}; set evaluation.correct to one of them"
            )
        values = scores.per_reward[correct.reward]
    else:
        values = scores.totals
    return [v is not None and v >= correct.threshold for v in values]


def _mean_total(scores: Scores) -> float | None:
    ok = [t for t in scores.totals if t is not None]
    return sum(ok) / len(ok) if ok else None


def greedy_metrics(scores: Scores, correct: CorrectConfig) -> dict[str, float]:
    """Accuracy, failed rewards, prompts and mean reward of one greedy completion per prompt
    (``eval/mean_reward`` is absent when every reward failed).

    >>> greedy_metrics(Scores([None, 0.0]), CorrectConfig(reward="x"))
    {'eval/accuracy': 0.0, 'eval/failed_rewards': 1.0, 'eval/prompts': 2.0, 'eval/mean_reward': 0.0}
    """
    flags = correct_flags(scores, correct)
    out = {
        "eval/accuracy": sum(flags) / len(flags),
        "eval/failed_rewards": float(sum(t is None for t in scores.totals)),
        "eval/prompts": float(len(flags)),
    }
    mean = _mean_total(scores)
    if mean is not None:
        out["eval/mean_reward"] = mean
    return out


def sampled_metrics(rollouts: Sequence[Rollout], scores: Scores, correct: CorrectConfig, *, k: int,
                    prompts: int) -> dict[str, float]:
    """pass@k (prompts, by ``group_id``, with a correct sample), mean@k (correct samples) and the
    samples' mean reward.

    >>> rs = [Rollout("p", g, [1], [2], [0.0], "stop", 0) for g in (0, 0, 1, 1)]
    >>> s = Scores([1.5, 0.5, 0.5, 0.5], per_reward={"ok": [1.0, 0.0, 0.0, 0.0], "fmt": [1.0] * 4})
    >>> sampled_metrics(rs, s, CorrectConfig(reward="ok"), k=2, prompts=2)
    {'eval/pass@2': 0.5, 'eval/mean@2': 0.25, 'eval/mean_reward@2': 0.75}
    """
    flags = correct_flags(scores, correct)
    solved = {r.group_id for r, ok in zip(rollouts, flags) if ok}
    out = {f"eval/pass@{k}": len(solved) / prompts, f"eval/mean@{k}": sum(flags) / max(len(flags), 1)}
    mean = _mean_total(scores)
    if mean is not None:
        out[f"eval/mean_reward@{k}"] = mean
    return out


def evaluate(
    engine: RolloutEngine,
    scorer: RewardScorer,
    prompts: list[Prompt],
    correct: CorrectConfig,
    *,
    greedy: SamplingSettings,
    sampled: SamplingSettings | None = None,
) -> dict[str, float]:
    """One evaluation on ``prompts``: a greedy completion each (``greedy_metrics``) and, with
    ``sampled`` settings, ``sampled.n`` samples each (``sampled_metrics``); {} without prompts.

    >>> class Echo:  # completion token = sample index; the scorer rewards token 1
    ...     def generate(self, prompts, sampling):
    ...         return [Rollout(p.prompt_id, g, [1], [i], [0.0], "stop", 0)
    ...                 for g, p in enumerate(prompts) for i in range(sampling.n)]
    ...     def score(self, rollouts):
    ...         return [float(r.completion_ids[0] == 1) for r in rollouts]
    >>> e = Echo()
    >>> m = evaluate(e, e, [Prompt("a", [1])], CorrectConfig(reward="r"), greedy=SamplingSettings(n=1),
    ...              sampled=SamplingSettings(n=2))
    >>> m["eval/accuracy"], m["eval/pass@2"], m["eval/mean@2"]
    (0.0, 1.0, 0.5)
    """
    if not prompts:
        return {}
    out = greedy_metrics(Scores.of(scorer.score(engine.generate(prompts, greedy))), correct)
    if sampled is not None:
        rollouts = engine.generate(prompts, sampled)
        scores = Scores.of(scorer.score(rollouts))
        out.update(sampled_metrics(rollouts, scores, correct, k=sampled.n, prompts=len(prompts)))
    return out


class Evaluator:
    """Held-out evaluation of a run: ``evaluate(engine, scorer, ...)`` on the first
    ``evaluation.num_prompts`` held-out prompts, greedy (seed step -1) and, with
    ``evaluation.pass_k``, ``k`` samples each (seed step -2); {} without held-out prompts."""

    def __init__(self, cfg: RunConfig, engine: RolloutEngine, scorer: RewardScorer, prompts: Sequence[Prompt]):
        ev = cfg.evaluation
        self.engine, self.scorer = engine, scorer
        self.prompts = list(prompts[: ev.num_prompts] if ev.num_prompts else prompts)
        self.correct = correct_reward(cfg) if self.prompts else None
        self.greedy = sampling_settings(cfg, -1, n=1, temperature=0.0)
        self.sampled = sampling_settings(cfg, -2, n=ev.pass_k, temperature=ev.temperature) if ev.pass_k else None

    def __call__(self) -> dict[str, float]:
        if self.correct is None:
            return {}
        return evaluate(self.engine, self.scorer, self.prompts, self.correct, greedy=self.greedy, sampled=self.sampled)
