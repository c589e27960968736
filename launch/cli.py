"""The ``rlft`` command line.

    rlft train [CONFIG.yaml] [dotted.key=value ...]   run locally on an embedded Ray (or join a cluster)
    rlft check [CONFIG.yaml] [dotted.key=value ...]   validate config, data and model; print the config
    rlft check --describe [SECTION]                    every field's default and description
    rlft report RUN_DIR                                write the run's HTML report with plots
    rlft train --resume RUN_DIR                        continue a run from its latest checkpoint
    rlft export RUN_DIR [--step N] OUT_DIR             a checkpoint as a plain Hugging Face model
    rlft plan [CONFIG.yaml] [--address URL]            the placement a config implies, and its total resources
    rlft submit [CONFIG.yaml] --address URL            run it as a Ray Job on a cluster (launch/jobs.py)
    rlft status|logs|stop JOB_ID, rlft list            follow and control submitted jobs

Without CONFIG they use the embedded demo (``launch/embedded.yaml``): the built-in tiny model and
arithmetic task, with the values that file sets. A config file of your own starts from the schema's
defaults (``rlft check --describe``), never from the demo's.

Run ``rlft <command> --help`` for each command's options.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import rlft
from rlft.algorithms import ADVANTAGES, AGGREGATION_MODES, KL_ESTIMATORS, POLICY_LOSSES
from rlft.algorithms.registry import ParamError, RegistryError
from rlft.config import ConfigError, dump_config, load_config, save_config
from rlft.data.loading import DataError
from rlft.checkpointing import CheckpointError, resolve_resume
from rlft.driver import NonFiniteError, RewardFailureError
from rlft.placement import PlacementError
from rlft.plugins import PluginError
from launch.config_args import EMBEDDED, _config_args, _load, _split_config  # noqa: F401  (EMBEDDED: public here)
from launch.jobs import JobError, add_job_commands
from rewards.api import RewardError, reward_names


def cmd_train(args: argparse.Namespace) -> int:
    from actors.group import WorkerDiedError
    from launch.train import print_summary, train

    config, cfg, run_dir, resume_from = _train_target(args)
    run_dir.mkdir(parents=True, exist_ok=True)
    source = config or "the embedded demo (launch/embedded.yaml)"
    print(f"rlft: run '{cfg.name}' from {source} in {run_dir}", flush=True)
    try:
        summary = train(cfg, run_dir, address=args.address, quiet=args.quiet, resume_from=resume_from)
    except KeyboardInterrupt:
        print(f"rlft: interrupted; actors stopped. Run directory: {run_dir}", file=sys.stderr)
        _print_resume_hint(run_dir)
        return 130
    except (RewardFailureError, NonFiniteError) as err:
        print(f"rlft: stopped: {err}. Run directory: {run_dir}", file=sys.stderr)
        _print_resume_hint(run_dir)
        return 1
    except WorkerDiedError as err:
        print(f"rlft: stopped: {err}", file=sys.stderr)
        if err.role == "learner":
            print("rlft: a learner rank cannot be replaced mid-run (its peers hold the same step's "
                  "collective state)", file=sys.stderr)
        _print_resume_hint(run_dir)
        return 1
    print_summary(summary, run_dir)
    return 0


def _train_target(args: argparse.Namespace):
    """Config, run directory and checkpoint to resume from: ``--resume RUN_DIR`` reads the run's own
    config (overrides still apply); ``checkpoint.resume`` ``auto`` picks up the run directory's
    latest checkpoint; a path resumes from that checkpoint (or run) into the run directory."""
    from launch.train import latest_resume_point, new_run_dir

    if args.resume:
        run_dir = Path(args.resume)
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise CheckpointError(f"{run_dir} is not a run directory (no config.yaml)")
        config, overrides = _split_config(args)
        cfg = load_config(config or saved, overrides, base_dir=Path.cwd())
        return config or str(saved), cfg, run_dir, resolve_resume(run_dir)
    config, cfg = _load(args)
    run_dir = Path(args.run_dir) if args.run_dir else new_run_dir(cfg)
    resume = cfg.checkpoint.resume
    if resume == "auto":
        return config, cfg, run_dir, latest_resume_point(run_dir)
    if resume != "never":
        return config, cfg, run_dir, resolve_resume(resume)
    return config, cfg, run_dir, None


def _print_resume_hint(run_dir: Path) -> None:
    from launch.train import latest_resume_point

    latest = latest_resume_point(run_dir)
    if latest is not None:
        print(f"rlft: resume with: rlft train --resume {run_dir}   (latest checkpoint {latest.name})",
              file=sys.stderr)


def cmd_check(args: argparse.Namespace) -> int:
    if args.describe is not None:
        from rlft.config.describe import describe

        print(describe(args.describe))
        return 0
    config, cfg = _load(args)
    failed_rewards = False
    if args.config_only:
        from rewards.loading import load_rewards, sandbox_mode

        print(f"# {sandbox_mode(cfg, load_rewards(cfg))}")
    else:
        import tempfile

        from launch.train import check_samples, prepare
        from rewards.check import check_rewards, reference_warning

        with tempfile.TemporaryDirectory() as tmp:
            prepared = prepare(cfg, Path(tmp))
            for note in prepared.notes:
                print(f"# {note}")
            samples = check_samples(cfg, prepared)
            r = cfg.reward
            reports = check_rewards(
                prepared.rewards, samples, plugins=cfg.plugins, timeout_s=r.timeout_s, memory_mb=r.memory_mb,
                sandbox=r.sandbox.model_dump(),
            )
            print(f"# rewards called on {len(samples)} samples (reference completion and empty completion per row):")
            for rep in reports:
                print(f"#   {rep.line()}")
                failed_rewards |= bool(rep.errors)
            warning = reference_warning(prepared.rewards, samples, reports)
            if warning:
                print(f"rlft: warning: {warning}", file=sys.stderr)
    print(f"# rlft {rlft.__version__}: {what_check_shows(config)}")
    print(dump_config(cfg), end="")
    print("# registered: advantages", ", ".join(ADVANTAGES.names()))
    print("#             policy losses", ", ".join(POLICY_LOSSES.names()))
    print("#             KL estimators", ", ".join(KL_ESTIMATORS.names()))
    print("#             aggregation", ", ".join(AGGREGATION_MODES))
    print("#             rewards", ", ".join(reward_names()))
    if args.output:
        print(f"# resolved config written to {save_config(cfg, args.output)}")
    if failed_rewards:
        print("rlft: some reward calls failed on the check samples (see '# reward' lines above)", file=sys.stderr)
        return 1
    return 0


def what_check_shows(config: str | None) -> str:
    """The header of ``rlft check``'s config: whose values follow (the demo's are not defaults)."""
    if config is None:
        return ("the embedded demo (launch/embedded.yaml) is valid; below: its values, which that file sets "
                "for the tiny model.\n# A config file of your own starts from the schema's defaults instead "
                "(rlft check --describe lists them)")
    return (f"config {config} is valid; below: what it gets (its values, and the schema's defaults for "
            "everything it leaves out: rlft check --describe)")


def cmd_plan(args: argparse.Namespace) -> int:
    from rlft.placement import Node, embedded_cpus, fit, format_plan, plan_run

    config, cfg = _load(args)
    plan = plan_run(cfg)
    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:
        from launch.jobs import cluster_nodes

        nodes = cluster_nodes(address)
        where = f"the cluster at {address} ({len(nodes)} alive node(s), their total resources)"
    else:
        cores = os.cpu_count() or 1
        # one node: this machine's embedded Ray, which is sized for the run (rlft train)
        cpus = embedded_cpus(plan, cores, cfg.cluster.num_cpus) if args.nodes == 1 else cfg.cluster.num_cpus or cores
        shape = {"CPU": float(args.node_cpus or cpus)}
        if args.node_gpus:
            shape["GPU"] = float(args.node_gpus)
        shape.update(dict(args.node_resource or []))
        nodes = [Node(f"node-{i}", f"node-{i}", dict(shape)) for i in range(args.nodes)]
        where = f"{args.nodes} node(s) of {', '.join(f'{k} {v:g}' for k, v in shape.items())}"
    print(f"# rlft plan: {config or 'the embedded demo'} on {where}")
    try:
        placement = fit(plan, nodes)
    except PlacementError as err:
        print(format_plan(plan))
        print(f"rlft: does not fit: {err}", file=sys.stderr)
        return 1
    print(format_plan(plan, placement, nodes))
    return 0


def _resource(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        return name, float(value) if sep else 1.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"--node-resource wants NAME=AMOUNT, got {text!r}") from None


def cmd_export(args: argparse.Namespace) -> int:
    from launch.export import export

    out = export(Path(args.run_dir), Path(args.out_dir), step=args.step)
    print(f"rlft: exported {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from launch.report import main as report_main

    return report_main([args.run_dir, *(["-o", args.out] if args.out else [])])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlft",
        description="Reinforcement-learning fine-tuning of language models on Ray and vLLM.",
    )
    parser.add_argument("--version", action="version", version=f"rlft {rlft.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = sub.add_parser(
        "train",
        help="train: SFT/RL stages on an embedded local Ray, or on a cluster with --address",
        description="Run the stages of CONFIG (default: the embedded tiny model and arithmetic task). "
        "Starts and stops a local Ray unless --address or RAY_ADDRESS names a cluster. Each run writes "
        "runs/<name>-<timestamp>/ (config.yaml, metrics.jsonl, summary.json, checkpoints/). Ctrl-C stops "
        "cleanly: every actor is shut down.",
    )
    _config_args(train)
    train.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else an embedded Ray)")
    train.add_argument("--run-dir", help="run directory (default: <logging.run_root>/<name>-<timestamp>)")
    train.add_argument("-q", "--quiet", action="store_true", help="no per-step console lines")
    train.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue RUN_DIR from its latest complete checkpoint, with its own config.yaml (overrides "
        "still apply); the same as checkpoint.resume=auto with --run-dir RUN_DIR",
    )
    train.set_defaults(func=cmd_train)

    check = sub.add_parser(
        "check",
        help="validate config, data and model without training, and print the resolved config",
        description="Load CONFIG (or the embedded demo), apply the overrides, validate every key, "
        "value, algorithm name and hyperparameter, load and check the data (fields, empty and too long "
        "prompts) and the model's tokenizer, import every reward and call it on a few dataset rows "
        "(output type, value range, time per call), then print the resolved config as YAML. Exits 2 "
        "naming what is wrong, 1 when reward calls failed. With --describe, print every config field "
        "(or those of SECTION) with its default and description instead.",
    )
    _config_args(check)
    check.add_argument("-o", "--output", help="also write the resolved config to this YAML file")
    check.add_argument(
        "--config-only", action="store_true", help="validate the config alone (skip data and model checks)"
    )
    check.add_argument(
        "--describe", nargs="?", const="", metavar="SECTION",
        help="print every field (or those under SECTION, e.g. learner or cluster.rollout) with its default "
        "and description, from the schema; nothing is loaded",
    )
    check.set_defaults(func=cmd_check)

    report = sub.add_parser(
        "report",
        help="write a run's HTML report (plots, summary, sample completions)",
        description="Write RUN_DIR/report/index.html and PNG plots of reward, evaluation, KL, entropy, "
        "response length and time per phase, with the run's summary, final values and sample "
        "completions. A static page: open it in any browser, no server. Works on a running or killed run.",
    )
    report.add_argument("run_dir", help="the run directory (runs/<name>-<timestamp>)")
    report.add_argument("-o", "--out", help="output directory (default: RUN_DIR/report)")
    report.set_defaults(func=cmd_report)

    plan = sub.add_parser(
        "plan",
        help="print the placement a config implies (roles -> nodes/GPUs) and the total resources",
        description="Print each role's workers (rollout, learner, reference, reward, judge), what each "
        "reserves, its placement strategy and where the workers would land, and the run's total "
        "resources, without starting anything. With --address (or RAY_ADDRESS) on the cluster's alive "
        "nodes; otherwise on --nodes identical nodes (default: one node like this machine's embedded Ray, "
        "which rlft train sizes for the run). Exits 1 when "
        "the run does not fit, naming the role and what is missing.",
    )
    _config_args(plan)
    plan.add_argument("--address", help="Ray dashboard/job server address, e.g. http://127.0.0.1:8265")
    plan.add_argument("--nodes", type=int, default=1, help="without --address: number of identical nodes")
    plan.add_argument("--node-cpus", type=float, help="without --address: CPUs per node (default: this machine's)")
    plan.add_argument("--node-gpus", type=float, default=0, help="without --address: GPUs per node")
    plan.add_argument("--node-resource", type=_resource, action="append", metavar="NAME=AMOUNT",
                      help="without --address: a custom resource every node advertises (repeatable)")
    plan.set_defaults(func=cmd_plan)

    export = sub.add_parser(
        "export",
        help="write a checkpoint of a run as a plain Hugging Face model directory",
        description="Copy the model of RUN_DIR's latest checkpoint (or --step N) to OUT_DIR: safetensors, "
        "config and tokenizer, loadable with AutoModelForCausalLM.from_pretrained and vLLM.",
    )
    export.add_argument("run_dir", help="the run directory (or a checkpoints/step-N directory)")
    export.add_argument("out_dir", help="the model directory to write (must not exist or be empty)")
    export.add_argument("--step", type=int, help="the checkpoint's step (default: the latest)")
    export.set_defaults(func=cmd_export)
    add_job_commands(sub)
    return parser


def parse_cli(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's arguments; ``KEY=VALUE`` overrides may also follow the options
    (``rlft train my.yaml --run-dir runs/x learner.lr=1e-5``), as argparse alone would refuse.

    >>> parse_cli(["train", "my.yaml", "-q", "learner.lr=1e-5", "--run-dir", "r"]).overrides
    ['learner.lr=1e-5']
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_cli(argv)
    try:
        return args.func(args)
    except (ConfigError, ParamError, RegistryError, PluginError, DataError, RewardError, CheckpointError,
            JobError, PlacementError) as err:
        print(f"rlft: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
