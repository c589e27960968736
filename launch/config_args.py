"""The config arguments every config-taking command shares (``rlft train/check/plan/submit``): a
YAML file (else the embedded demo, ``launch/embedded.yaml``) and dotted ``KEY=VALUE`` overrides.

>>> import argparse
>>> p = argparse.ArgumentParser(); _config_args(p)
>>> _split_config(p.parse_args(["learner.lr=3e-6", "rollout.group_size=4"]))
(None, ['learner.lr=3e-6', 'rollout.group_size=4'])
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rlft.config import load_config

EMBEDDED = Path(__file__).with_name("embedded.yaml")


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "config",
        nargs="?",
        help="YAML config file; omitted: the embedded demo, launch/embedded.yaml (a config file's path ends "
        "in .yaml/.yml)",
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


def _load(args: argparse.Namespace):
    config, overrides = _split_config(args)
    # the embedded default is not the user's file: their relative paths are relative to where they are
    return config, load_config(config or EMBEDDED, overrides, base_dir=None if config else Path.cwd())
