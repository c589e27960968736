"""``rlft train``: build the real roles on Ray from a config and run the driver.

Everything a run needs is resolved and checked before any actor starts (``prepare``): the model
(``builtin:tiny`` is built locally into the run directory), the data (loaded, templated, length
checked), the reward, and the SFT targets. Then Ray starts (embedded, or joined when an address is
given), the rollout and learner groups start, and the driver runs the stages.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launch.sinks import MultiSink, build_sinks, resolve_progress
from rlft.checkpointing import latest_checkpoint, load_driver_state
from rlft.config import RewardFunctionConfig, RunConfig, save_config
from rlft.data import load_records, prepare_prompts
from rlft.data.context import model_context
from rlft.data.loading import BUILTIN_PREFIX, DataError, Record
from rlft.compose import build_driver
from rlft.driver import Driver, RunSummary
from rlft.tasks import get_task
from rlft.types import DemoText, Prompt, TrainSample
from rewards.loading import load_rewards, reward_functions, sandbox_mode
from rewards.pool import Sample, runtime_sample

logger = logging.getLogger("rlft")


@dataclass
class Prepared:
    """What ``prepare`` resolved: model path, prompts, SFT examples and the reward functions."""

    model_path: str
    train_prompts: list[Prompt]
    eval_prompts: list[Prompt]
    sft_examples: list[TrainSample]
    rewards: list[RewardFunctionConfig]
    judge_model_path: str | None
    notes: list[str]
    tokenizer: Any = None
    demonstration_texts: list[DemoText] = field(default_factory=list)  # the SFT examples' reference texts
    solutions: list[str | None] = field(default_factory=list)  # each training prompt's reference completion


def held_out_of(train_path: str) -> str:
    """The held-out split of a built-in task: ``builtin:<task>[:<split>]`` -> ``builtin:<task>:<split>_eval``
    when the task has that split, else ``builtin:<task>:eval``; other data must name its eval_path.

    >>> held_out_of("builtin:arithmetic"), held_out_of("builtin:long_addition:train")
    ('builtin:arithmetic:eval', 'builtin:long_addition:eval')
    >>> held_out_of("builtin:long_addition:hard")
    'builtin:long_addition:hard_eval'
    """
    if not train_path.startswith(BUILTIN_PREFIX):
        raise DataError("data.eval_path is required when data.train_path is not a built-in task")
    name, _, split = train_path[len(BUILTIN_PREFIX):].partition(":")
    try:
        splits = get_task(name).splits
    except KeyError:  # loading the train path reports the unknown task, with the available ones
        splits = ()
    held_out = f"{split}_eval" if split and f"{split}_eval" in splits else "eval"
    return f"{BUILTIN_PREFIX}{name}:{held_out}"


def resolve_model(cfg: RunConfig, run_dir: Path, path: str | None = None) -> str:
    """A local model directory, as an absolute path (the actors do not run in this directory):
    ``builtin:tiny`` is built (seeded) into the run directory."""
    path = path or cfg.model.path
    if path == "builtin:tiny":
        from rlft.models import build_tiny_model

        return str(build_tiny_model(run_dir / "base-model", seed=cfg.seed).resolve())
    if path.startswith("builtin:"):
        raise DataError(f"unknown built-in model {path!r}; available: builtin:tiny")
    from launch.model_source import check_model_source

    return check_model_source(path, "model.path" if path == cfg.model.path else "reward.judge.model")


def prepare(cfg: RunConfig, run_dir: Path) -> Prepared:
    """Resolve and check the model, data, reward and SFT targets; nothing starts on Ray."""
    from transformers import AutoTokenizer

    functions = reward_functions(cfg)
    rewards = load_rewards(cfg)  # every reference resolves, every params key is known
    model_path = resolve_model(cfg, run_dir)
    judge_path = None
    if cfg.reward.judge is not None:
        judge_path = resolve_model(cfg, run_dir / "judge", path=cfg.reward.judge.model)
    from launch.model_source import check_model_source

    tokenizer = AutoTokenizer.from_pretrained(
        check_model_source(cfg.model.tokenizer, "model.tokenizer") if cfg.model.tokenizer else model_path
    )
    d = cfg.data
    fields = dict(
        prompt_field=d.prompt_field,
        answer_field=d.answer_field,
        metadata_fields=d.metadata_fields,
        solution_field=d.solution_field,
    )
    train_records = load_training_records(cfg, fields)
    eval_src = d.eval_path or held_out_of(d.sources[0].path if d.sources else d.train_path)
    eval_records = load_records(eval_src, **{**fields, "solution_field": None})  # evaluation needs none
    context = context_of(cfg, model_path)
    opts = dict(
        chat_template=d.chat_template,
        system_prompt=d.system_prompt,
        max_prompt_tokens=d.max_prompt_tokens,
        too_long=d.too_long,
        context_tokens=context,
        max_new_tokens=cfg.rollout.max_new_tokens,
    )
    train_prompts, train_report = prepare_prompts(train_records, tokenizer, **opts)
    eval_prompts, _ = prepare_prompts(eval_records, tokenizer, **opts)
    notes = [
        f"model {model_path}" + (f" (context {context} tokens)" if context else ""),
        f"data: {train_report.kept} train prompts ({train_report.skipped_too_long} skipped as too long), "
        f"{len(eval_prompts)} held-out prompts from {eval_src}; longest prompt {train_report.max_tokens} tokens "
        f"(limit {train_report.limit}), chat template {'applied' if train_report.templated else 'not applied'}",
        f"first prompt as the model sees it: {train_prompts[0].text!r}",
        "rewards: " + ", ".join(f"{r.key} (weight {r.weight:g}, timeout {r.timeout_s:g} s)" for r in rewards),
        sandbox_mode(cfg, rewards),
    ]
    sft: list[TrainSample] = []
    by_id = {r.prompt_id: r for r in train_records}
    if any(s.kind == "sft" for s in cfg.stages) or cfg.needs_demonstrations:
        sft = sft_examples(train_records, train_prompts, tokenizer, context_tokens=context)
        longest = max(len(x.prompt_ids) + len(x.completion_ids) for x in sft)
        notes.append(f"sft: {len(sft)} examples (prompt + reference completion), longest {longest} tokens")
    solutions = [by_id[p.prompt_id].solution for p in train_prompts]
    texts = [demo_text(x or "", tokenizer) for x in solutions] if sft else []
    return Prepared(model_path, train_prompts, eval_prompts, sft, functions, judge_path, notes, tokenizer, texts,
                    solutions)


def demo_text(text: str, tokenizer: Any) -> DemoText:
    """A reference completion's text with the character offset after each of its tokens (as
    ``sft_examples`` tokenizes it), so a prefix of its tokens has its text: from the tokenizer's
    offsets where it gives them, else by decoding each prefix."""
    try:
        ends = [end for _, end in tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]
    except (NotImplementedError, KeyError, TypeError, ValueError):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        ends = [len(tokenizer.decode(ids[: k + 1])) for k in range(len(ids))]
    return DemoText(text, ends)


def context_of(cfg: RunConfig, model_path: str) -> int | None:
    """The model's context length as the rollout engines will have it (None when unknown)."""
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(model_path)
    except (OSError, ValueError):  # no readable config.json: the engine will say so when it loads
        return None
    return model_context(config, max_model_len=cfg.rollout.engine_kwargs.get("max_model_len"))


def check_samples(cfg: RunConfig, prepared: Prepared, rows: int = 4) -> list[Sample]:
    """Samples for ``rlft check``'s reward calls: the first ``rows`` training prompts, each with its
    reference completion (the data's solution, e.g. a built-in task's worked one; else the bare
    answer) as the completion, and with an empty completion."""
    samples = []
    solutions = prepared.solutions or [None] * len(prepared.train_prompts)
    for prompt, solution in list(zip(prepared.train_prompts, solutions))[:rows]:
        reference = solution if solution else str(prompt.metadata.get("answer", ""))
        for completion in (reference, ""):
            ids = prepared.tokenizer(completion, add_special_tokens=False)["input_ids"] if completion else []
            samples.append(
                runtime_sample(
                    prompt.text,
                    completion,
                    prompt.metadata,
                    prompt_id=prompt.prompt_id,
                    num_tokens=len(ids),
                    finish_reason="stop",
                    max_new_tokens=cfg.rollout.max_new_tokens,
                )
            )
    return samples


def load_training_records(cfg: RunConfig, fields: dict[str, Any]) -> list[Record]:
    """``data.train_path``, or every ``data.sources`` set with its name as the prompts' ``source``
    metadata (ids prefixed with it, so they stay unique across sets). A built-in task's records
    carry the task's reference completions, as a dataset's carry its ``data.solution_field``."""
    if not cfg.data.sources:
        return with_task_references(cfg.data.train_path, load_records(cfg.data.train_path, **fields))
    records = []
    for source in cfg.data.sources:
        for r in with_task_references(source.path, load_records(source.path, **fields)):
            records.append(
                dataclasses.replace(
                    r, prompt_id=f"{source.label}/{r.prompt_id}", metadata={**r.metadata, "source": source.label}
                )
            )
    return records


def with_task_references(spec: str, records: list[Record]) -> list[Record]:
    """``records`` of a ``builtin:<task>`` source with the task's reference completions as their
    ``solution``; other sources' records as they are."""
    if not spec.startswith(BUILTIN_PREFIX):
        return records
    task = get_task(spec[len(BUILTIN_PREFIX):].split(":")[0])
    return [dataclasses.replace(r, solution=task.reference_completion(r)) for r in records]


def sft_examples(
    records: list[Record], prompts: list[Prompt], tokenizer: Any, *, context_tokens: int | None = None
) -> list[TrainSample]:
    """Prompt + reference completion (+ EOS) pairs; the loss covers the completion tokens only.

    Every prompt's record must carry its reference completion (``Record.solution``: the dataset's
    ``data.solution_field``, a chat row's closing assistant message, or a built-in task's own).
    """
    by_id = {r.prompt_id: r for r in records}
    missing = [p.prompt_id for p in prompts if by_id[p.prompt_id].solution is None]
    if missing:
        raise DataError(
            f"sft stages need a reference completion for every training prompt, and {len(missing)} of "
            f"{len(prompts)} have none (first: '{missing[0]}'): set data.solution_field to the field that "
            f"holds them, or end each chat prompt with the assistant's reply (builtin: tasks bring their own)"
        )
    eos = tokenizer.eos_token_id
    out = []
    for p in prompts:
        ids = list(tokenizer(by_id[p.prompt_id].solution, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
        if not ids:
            raise DataError(
                f"prompt '{p.prompt_id}': the reference completion is empty and the tokenizer has no EOS token"
            )
        total = len(p.token_ids) + len(ids)
        if context_tokens is not None and total > context_tokens:
            raise DataError(
                f"prompt '{p.prompt_id}': prompt + reference completion are {total} tokens, over the model's "
                f"context of {context_tokens}; shorten the reference or drop the row"
            )
        out.append(TrainSample(list(p.token_ids), ids, [1.0] * len(ids)))
    return out


def new_run_dir(cfg: RunConfig, root: str | None = None) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(root or cfg.logging.run_root) / f"{cfg.name}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = path.with_name(f"{cfg.name}-{stamp}-{suffix}")
    path.mkdir(parents=True)
    return path


def train(
    cfg: RunConfig,
    run_dir: Path,
    *,
    address: str | None = None,
    quiet: bool = False,
    resume_from: Path | None = None,
) -> RunSummary:
    """Run ``cfg`` in ``run_dir`` (from the checkpoint ``resume_from`` when given); actors are stopped
    and an embedded Ray shut down on any exit."""
    run_dir = Path(run_dir).resolve()  # the actors do not run in this directory: every path they get is absolute
    resumed_step = load_driver_state(resume_from)["step"] if resume_from else 0
    if resume_from:
        truncate_logs(run_dir, resumed_step)  # rows of steps after the checkpoint are logged again
        carry_logger_ids(Path(resume_from).parent.parent, run_dir)
    save_config(cfg, run_dir / "config.yaml")
    handler = logging.FileHandler(run_dir / "train.log")  # warnings of the driver and launcher
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        prepared = prepare(cfg, run_dir)
        for note in prepared.notes:
            print(f"rlft: {note}", flush=True)
        sink = build_sinks(cfg, run_dir, quiet=quiet, start_step=resumed_step)  # fails here, before Ray
        for backend, where in sink.locations().items():
            print(f"rlft: {backend}: {where}", flush=True)
        try:
            return _run_on_ray(cfg, run_dir, prepared, sink, address=address, quiet=quiet, resume_from=resume_from)
        finally:
            sink.close()
            if cfg.logging.report:
                _write_report(run_dir)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def truncate_logs(run_dir: Path, step: int) -> None:
    """Drop the rows of steps after ``step`` from ``metrics.jsonl`` and ``samples.jsonl`` (a run
    killed after its last checkpoint logged them; the resumed run logs them again)."""
    for name in ("metrics.jsonl", "samples.jsonl"):
        path = run_dir / name
        if not path.exists():
            continue
        kept = []
        for line in path.read_text().splitlines():
            try:
                row_step = json.loads(line).get("step", 0)
            except json.JSONDecodeError:  # a line cut off by the kill
                continue
            if row_step <= step:
                kept.append(line)
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        tmp.replace(path)


def carry_logger_ids(source_run: Path, run_dir: Path) -> None:
    """Resuming another run's checkpoint into a new run directory continues that run's wandb run."""
    source, target = source_run / "wandb_run_id", run_dir / "wandb_run_id"
    if source.is_file() and not target.exists() and source_run.resolve() != run_dir.resolve():
        target.write_text(source.read_text())


def latest_resume_point(run_dir: Path) -> Path | None:
    """The newest resumable checkpoint of a run directory, or None."""
    return latest_checkpoint(run_dir / "checkpoints")


def _write_report(run_dir: Path) -> None:
    """The HTML run report, also after a failed or interrupted run; a failure here only warns."""
    if not (run_dir / "metrics.jsonl").exists():
        return
    try:
        from launch.report import write_report

        print(f"rlft: report {write_report(run_dir)}", flush=True)
    except Exception as err:  # the run's results are on disk either way
        logger.warning("writing the run report failed: %s: %s", type(err).__name__, err)


def _run_on_ray(
    cfg: RunConfig,
    run_dir: Path,
    prepared: Prepared,
    sink: MultiSink,
    *,
    address: str | None,
    quiet: bool,
    resume_from: Path | None,
) -> RunSummary:
    import ray

    from actors.runtime import Colocation, LearnerGroup, RewardGroup, RolloutGroup, WeightPush

    address = address or cfg.cluster.address or os.environ.get("RAY_ADDRESS")
    started_ray = not ray.is_initialized()
    if started_ray:
        from launch.ray_session import start_ray

        # worker output would tear a progress bar apart; it stays in Ray's session logs
        to_driver = not quiet and resolve_progress(cfg.logging.progress) != "bar"
        context = start_ray(cfg, address, log_to_driver=to_driver)  # embedded: sized for the run's plan
        if context.dashboard_url:
            print(f"rlft: Ray dashboard at http://{context.dashboard_url} (actors: rollout-N, learner-N, reward-N)",
                  flush=True)
    groups: list[Any] = []
    stream: Any = None
    stop = _StopRequest()
    previous = {sig: signal.signal(sig, stop.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        from launch.ray_session import alive_nodes, check_run_fits

        check_run_fits(cfg, alive_nodes(), "the cluster at " + address if address else "this machine's Ray")
        from rlft.placement import plan_run

        plan = plan_run(cfg)  # every group is placed from this one plan (what rlft plan prints)
        colocation = Colocation(cfg, plan) if plan.shares_group("rollout") else None
        if colocation is not None:
            groups.append(colocation)
        asynchronous = cfg.rollout.max_staleness > 0
        abort = asynchronous and cfg.rollout.inflight_updates == "abort"
        rollouts = RolloutGroup(cfg, prepared.model_path, plan=plan, colocation=colocation, abortable=abort)
        groups.append(rollouts)
        # the roles in rlft.placement's order (rlft plan simulates them in this order)
        total = sum(s.steps for s in cfg.stages)
        learners = LearnerGroup(cfg, prepared.model_path, total_steps=total, plan=plan, colocation=colocation)
        groups.append(learners)
        print(f"rlft: learner: {learners.describe()}", flush=True)
        critic = None
        if cfg.critic is not None:
            from actors.critic import CriticGroup

            critic = CriticGroup(cfg, prepared.model_path, plan=plan)
            groups.append(critic)
        scorer = RewardGroup(cfg, prepared.rewards, judge_model_path=prepared.judge_model_path, plan=plan)
        groups.append(scorer)
        learners.check_sees(str((run_dir / "config.yaml").resolve()))
        write_placement(run_dir, {"rollout": rollouts.workers, "learner": learners.workers,
                                  "reward": scorer.workers,
                                  **({"reference": learners.reference} if learners.reference else {}),
                                  **({"critic": critic.workers} if critic else {})})
        weights: Any = WeightPush(learners, rollouts)
        if asynchronous:  # generation of upcoming steps overlaps training (rlft.pipeline)
            from actors.stream import AbortThenPush, StreamingRollouts

            stream = StreamingRollouts(rollouts, scorer)
            weights = AbortThenPush(weights, stream) if abort else weights
        driver = build_driver(
            cfg,
            engine=rollouts,
            scorer=scorer,
            learner=learners,
            weights=weights,
            train_prompts=prepared.train_prompts,
            eval_prompts=prepared.eval_prompts,
            sft_examples=prepared.sft_examples,
            demonstration_texts=prepared.demonstration_texts,
            sink=sink,
            checkpoint_dir=str((run_dir / "checkpoints").resolve()),  # the learner ranks write there
            reference_dir=str((run_dir / "reference").resolve()),  # KL reference snapshots, likewise
            critic=critic,
            stream=stream,
        )
        stop.driver = driver
        if resume_from is not None:
            driver.restore(resume_from)
            s = driver.state
            print(f"rlft: resumed from {resume_from} (step {s.step}, policy version {s.version})", flush=True)
        summary = driver.run()
        (run_dir / "summary.json").write_text(json.dumps(_summary_dict(summary), indent=2))
        return summary
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if stream is not None:  # generation for steps that will not run
            try:
                stream.cancel()
            except Exception as err:
                logger.warning("cancelling the rollout stream failed: %s", err)
        for group in reversed(groups):
            try:
                group.shutdown()
            except Exception as err:  # keep shutting the others down
                logger.warning("shutting down %s failed: %s", type(group).__name__, err)
        if started_ray:
            ray.shutdown()


def write_placement(run_dir: Path, groups: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """``RUN_DIR/placement.json``: the node every worker of every role runs on (``rlft plan``
    shows where they were meant to go)."""
    where = {role: group.nodes() for role, group in groups.items()}
    (run_dir / "placement.json").write_text(json.dumps(where, indent=2))
    ips = {role: "/".join(sorted({w["node_ip"] for w in workers})) for role, workers in where.items()}
    roles = ", ".join(f"{role} on {ip}" for role, ip in ips.items())
    print(f"rlft: placement: {roles} ({run_dir / 'placement.json'})", flush=True)
    return where


class _StopRequest:
    """Ctrl-C / SIGTERM (a scheduler's pre-emption notice): the first one asks the driver to stop at
    the end of the current step, so the interrupt checkpoint is exact; a second one (or one before
    the driver runs) stops at once."""

    def __init__(self) -> None:
        self.driver: Driver | None = None

    def handle(self, signum: int, frame: Any) -> None:
        if self.driver is None or self.driver.stop_requested:
            raise KeyboardInterrupt(f"signal {signum}")
        self.driver.stop_requested = True
        print(f"\nrlft: {signal.Signals(signum).name}: stopping after the current step "
              "(a checkpoint is written); again to stop at once", file=sys.stderr, flush=True)


def _summary_dict(summary: RunSummary) -> dict[str, Any]:
    return {
        "steps": summary.steps,
        "version": summary.version,
        "evaluations": summary.evaluations,
        "checkpoints": summary.checkpoints,
    }


def print_summary(summary: RunSummary, run_dir: Path, out: Any = sys.stdout) -> None:
    """Held-out accuracy before and after each RL stage, and where the run lives."""
    print("\n=== rlft run summary ===", file=out)
    for label, metrics in summary.evaluations.items():
        parts = [f"{k.split('/')[-1]} {v:.3f}" for k, v in metrics.items() if k != "eval/prompts"]
        print(f"  {label:<16} " + ", ".join(parts), file=out)
    rl = [k[len("before_"):] for k in summary.evaluations if k.startswith("before_")]
    for name in rl:
        before = summary.evaluations[f"before_{name}"].get("eval/accuracy")
        after = summary.evaluations.get(f"after_{name}", {}).get("eval/accuracy")
        if before is not None and after is not None:
            print(
                f"  held-out accuracy before {name}: {before:.1%}, after: {after:.1%} "
                f"({(after - before) * 100:+.1f} points)",
                file=out,
            )
    print(f"  steps {summary.steps}, final checkpoint {summary.checkpoints[-1] if summary.checkpoints else '-'}",
          file=out)
    print(f"  run directory: {run_dir}", file=out)
