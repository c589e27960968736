"""The ``rlft`` command line.

    rlft check [CONFIG.yaml] [dotted.key=value ...]   validate a config and print it resolved

Run ``rlft <command> --help`` for each command's options.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import rlft
from rlft.algorithms import ADVANTAGES, AGGREGATION_MODES, KL_ESTIMATORS, POLICY_LOSSES
from rlft.algorithms.registry import ParamError, RegistryError
from rlft.config import ConfigError, dump_config, load_config, save_config
from rlft.plugins import PluginError


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "config",
        nargs="?",
        help="YAML config file; omitted: the built-in defaults (a config file's path ends in .yaml/.yml)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides applied after the file, e.g. algo.advantage.name=rloo learner.lr=3e-6",
    )


def _split_config(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """argparse puts a leading override into ``config``; move it back where it belongs."""
    overrides = list(args.overrides)
    config = args.config
    if config is not None and "=" in config and not Path(config).is_file():
        overrides.insert(0, config)
        config = None
    return config, overrides


def cmd_check(args: argparse.Namespace) -> int:
    config, overrides = _split_config(args)
    cfg = load_config(config, overrides)
    print(f"# rlft {rlft.__version__}: config {'defaults' if config is None else config} is valid")
    print(dump_config(cfg), end="")
    print("# registered: advantages", ", ".join(ADVANTAGES.names()))
    print("#             policy losses", ", ".join(POLICY_LOSSES.names()))
    print("#             KL estimators", ", ".join(KL_ESTIMATORS.names()))
    print("#             aggregation", ", ".join(AGGREGATION_MODES))
    if args.output:
        print(f"# resolved config written to {save_config(cfg, args.output)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlft",
        description="Reinforcement-learning fine-tuning of language models on Ray and vLLM.",
    )
    parser.add_argument("--version", action="version", version=f"rlft {rlft.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = sub.add_parser(
        "check",
        help="validate a config (keys, values, algorithm names and hyperparameters) and print it resolved",
        description="Load CONFIG (or the defaults), apply the overrides, validate everything, and print "
        "the resolved config as YAML. Exits 2 with the bad fields named when it is invalid.",
    )
    _config_args(check)
    check.add_argument("-o", "--output", help="also write the resolved config to this YAML file")
    check.set_defaults(func=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ParamError, RegistryError, PluginError) as err:
        print(f"rlft: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
