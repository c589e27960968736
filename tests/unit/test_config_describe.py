"""One set of documented defaults: the schema's. ``rlft check --describe`` prints every field with its
default and description; ``rlft check`` says whose values it shows (the embedded demo's own, or what
a config file gets on top of the schema's defaults)."""

from __future__ import annotations

import pytest

from launch.cli import EMBEDDED, main
from rlft.config import ConfigError, RunConfig, load_config
from rlft.config.describe import describe, field_docs


def test_every_field_of_the_schema_has_a_description_and_is_listed():
    docs = list(field_docs())
    assert [d.path for d in docs if not d.description.strip()] == []
    paths = {d.path for d in docs}
    # sections, nested sections, list items and optional sections are all walked
    assert {"learner.lr", "cluster.rollout.cpus", "reward.functions.*.weight", "stages.*.kind",
            "critic.lam", "algo.kl.coef", "logging.wandb.project"} <= paths
    assert len(paths) == len(docs)  # each once


def test_describe_prints_name_default_and_description(capsys):
    assert main(["check", "--describe", "learner"]) == 0
    out = capsys.readouterr().out
    assert "learner.lr: 1e-06\n    Peak learning rate of AdamW.\n" in out
    assert "learner.micro_batch_size: null\n" in out and "learner.max_tokens_per_micro_batch: 1024\n" in out
    assert "rollout." not in out  # only the section asked for
    assert main(["check", "--describe", "algo.loss.params"]) == 0  # {} keeps the function's own defaults
    text = " ".join(capsys.readouterr().out.split())
    assert "For ppo_clip (the default name): clip_low=0.2, clip_high=0.2, dual_clip=None." in text
    assert main(["check", "--describe", "stages.0.kind"]) == 0
    assert capsys.readouterr().out.startswith("stages.*.kind: (required)\n")
    assert main(["check", "--describe"]) == 0
    everything = capsys.readouterr().out
    assert everything.startswith("name: rlft\n") and "cluster.reference.placement: learner" in everything


def test_describe_of_an_unknown_section_exits_2_with_the_closest(capsys):
    assert main(["check", "--describe", "learner.lrr"]) == 2
    assert "no config field or section 'learner.lrr' (did you mean 'learner.lr'?)" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        describe("nosuch")


def test_the_defaults_shown_are_what_a_config_file_gets(tmp_path):
    """A file gets the schema's defaults (lr 1e-6, a 1024-token micro-batch budget, loss params {}),
    never the demo's."""
    own = tmp_path / "mine.yaml"
    own.write_text("name: mine\n")
    cfg = load_config(own)
    assert cfg.model_dump(exclude={"name"}) == RunConfig().model_dump(exclude={"name"})
    shown = {d.path: d.default for d in field_docs()}
    budget = "learner.max_tokens_per_micro_batch"
    assert (shown["learner.lr"], shown[budget], shown["algo.loss.params"]) == ("1e-06", "1024", "{}")
    assert (cfg.learner.lr, cfg.learner.max_tokens_per_micro_batch, cfg.algo.loss.params) == (1e-6, 1024, {})


def test_the_embedded_demo_sets_its_own_values_in_its_yaml():
    """Every value in which the demo differs from the schema's defaults is written in launch/embedded.yaml."""
    import yaml

    demo = load_config()  # no file: the schema's defaults
    embedded = load_config(EMBEDDED)
    raw = yaml.safe_load(EMBEDDED.read_text())
    assert (embedded.learner.lr, embedded.learner.micro_batch_size) == (3e-4, 256)
    assert (demo.learner.lr, demo.learner.micro_batch_size) == (1e-6, None)
    for section in ("learner", "rollout", "algo", "evaluation", "checkpoint"):
        differs = {k for k, v in getattr(embedded, section) if v != getattr(getattr(demo, section), k)}
        assert differs <= set(raw[section]), section


def test_check_says_whose_values_it_prints(tmp_path, capsys):
    assert main(["check", "--config-only"]) == 0
    out = capsys.readouterr().out
    assert "the embedded demo (launch/embedded.yaml) is valid; below: its values" in out
    assert "A config file of your own starts from the schema's defaults instead (rlft check --describe" in out
    assert "lr: 0.0003" in out
    own = tmp_path / "mine.yaml"
    own.write_text("name: mine\n")
    assert main(["check", str(own), "--config-only"]) == 0
    out = capsys.readouterr().out
    assert f"config {own} is valid; below: what it gets (its values, and the schema's defaults" in out
    assert "lr: 1.0e-06" in out and "max_tokens_per_micro_batch: 1024" in out
