"""RunConfig: YAML + dotted overrides, errors that name the field, round trips, plugins."""

from __future__ import annotations

import textwrap
from pathlib import Path
import typing
import uuid

import pydantic
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rlft.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    dump_config,
    load_config,
    parse_override,
    save_config,
    validate_config,
)


def _models(model: type[pydantic.BaseModel], seen: set | None = None):
    seen = set() if seen is None else seen
    if model in seen:
        return
    seen.add(model)
    yield model
    for field in model.model_fields.values():
        for arg in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(arg, type) and issubclass(arg, pydantic.BaseModel):
                yield from _models(arg, seen)


def test_defaults_are_valid_and_every_field_is_described():
    cfg = load_config()
    assert cfg.algo.advantage.name == "grpo" and cfg.algo.loss.name == "ppo_clip"
    models = list(_models(RunConfig))
    assert len(models) >= 12
    undocumented = [
        f"{m.__name__}.{name}"
        for m in models
        for name, field in m.model_fields.items()
        if not (field.description or "").strip()
    ]
    assert undocumented == []
    assert set(RunConfig.model_fields) >= {
        "model", "data", "rollout", "reward", "algo", "learner",
        "curriculum", "logging", "cluster", "checkpoint",
    }


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        textwrap.dedent(
            """
            name: exp
            algo:
              advantage: {name: rloo}
              loss: {name: ppo_clip, params: {clip_high: 0.28}}
            learner: {lr: 1.0e-5}
            reward:
              functions: [{name: exact_match}, {path: ./r.py:score, weight: 0.5}]
            """
        )
    )
    cfg = load_config(
        path,
        ["learner.lr=3e-6", "algo.loss.params.dual_clip=3", "reward.functions.1.weight=0.25",
         "rollout.stop=[END, '###']", "data.eval_path=null", "model.gradient_checkpointing=true"],
    )
    assert cfg.name == "exp" and cfg.algo.advantage.name == "rloo"
    assert cfg.learner.lr == 3e-6  # the override wins over the file
    assert cfg.algo.loss.params == {"clip_high": 0.28, "dual_clip": 3.0}
    assert [f.weight for f in cfg.reward.functions] == [1.0, 0.25]
    assert cfg.rollout.stop == ["END", "###"] and cfg.data.eval_path is None
    assert cfg.model.gradient_checkpointing is True


def _error(overrides=(), path=None) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    return str(err.value)


def test_unknown_key_names_path_and_closest_key():
    msg = _error(["learner.lrr=1e-6"])
    assert "learner.lrr: unknown key (did you mean 'lr'?)" in msg
    msg = _error(["reward.functions=[{nme: exact_match}]"])
    assert "reward.functions.0.nme: unknown key (did you mean 'name'?)" in msg
    assert "valid keys: algo, checkpoint" in _error(["algoo.loss.name=gspo"])


def test_bad_values_name_the_field():
    assert "learner.lr: Input should be greater than 0" in _error(["learner.lr=-1"])
    assert "rollout.top_p: Input should be less than or equal to 1" in _error(["rollout.top_p=1.5"])
    assert "rollout.top_k: top_k must be -1 (off) or >= 1" in _error(["rollout.top_k=0"])
    assert "learner.betas.1: Input should be less than 1" in _error(["learner.betas=[0.9, 1.0]"])
    assert "algo.aggregation: Input should be 'token-mean'" in _error(["algo.aggregation=token_mean"])
    assert "give exactly one of 'name' or 'path'" in _error(["reward.functions=[{weight: 1}]"])


def test_misspelt_algorithm_parameter_fails_at_load_naming_the_right_one():
    msg = _error(["algo.loss.params.clip_hgih=0.28"])
    assert "algo.loss.params: unknown parameter 'clip_hgih' for policy loss 'ppo_clip'" in msg
    assert "did you mean 'clip_high'" in msg
    assert "algo.loss.params: bad parameter" in _error(["algo.loss.params.clip_low=-0.1"])
    msg = _error(["algo.advantage.name=grpo", "algo.advantage.params.eps=abc"])
    assert "algo.advantage.params: bad parameter for advantage estimator 'grpo': eps" in msg


def test_unknown_algorithm_names_list_the_valid_ones():
    msg = _error(["algo.loss.name=ppo"])
    assert "algo.loss.name: unknown policy loss 'ppo'" in msg and "ppo_clip, reinforce, topr" in msg
    assert "algo.kl.estimator: unknown KL estimator 'k4'" in _error(["algo.kl.estimator=k4"])
    assert "algo.advantage.name: unknown advantage estimator" in _error(["algo.advantage.name=gpro"])


def test_cross_field_rules():
    assert "rollout.group_size must be >= 2 for the group-relative estimator 'rloo'" in _error(
        ["algo.advantage.name=rloo", "rollout.group_size=1"]
    )
    msg = _error(["rollout.prompts_per_step=1", "rollout.group_size=2", "learner.mini_batches=4"])
    assert "cannot fill learner.mini_batches x num_ranks = 4" in msg


def test_bad_overrides_and_files(tmp_path):
    with pytest.raises(ConfigError, match="must look like dotted.key=value"):
        parse_override("learner.lr")
    with pytest.raises(ConfigError, match="empty key segment"):
        parse_override("learner..lr=1")
    with pytest.raises(ConfigError, match="is not an index"):
        apply_overrides({"reward": {"functions": []}}, ["reward.functions.3.weight=1"])
    with pytest.raises(ConfigError, match="'learner.lr' is a value, not a section"):
        apply_overrides({"learner": {"lr": 1.0}}, ["learner.lr.x=1"])
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("a: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")


def test_config_is_frozen():
    cfg = load_config()
    with pytest.raises(pydantic.ValidationError):
        cfg.learner.lr = 1.0  # type: ignore[misc]


OVERRIDE_CHOICES = [
    "algo.advantage.name=rloo",
    "algo.advantage.params.eps=1e-4",
    "algo.loss.name=gspo",
    "algo.aggregation=seq-mean-token-sum-norm",
    "algo.kl.coef=0.01",
    "algo.tis_cap=2.0",
    "learner.betas=[0.8, 0.95]",
    "learner.max_grad_norm=null",
    "rollout.stop=['\\n\\n', END]",
    "rollout.engine_kwargs={enforce_eager: true, max_num_seqs: 64}",
    "reward.functions=[{name: exact_match, params: {strip: true}}, {path: './r.py:f', weight: -0.5}]",
    "checkpoint.keep_last=null",
    "logging.backends=[console, jsonl, tensorboard]",
    "data.metadata_fields=[category, difficulty]",
]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(OVERRIDE_CHOICES), unique=True))
def test_dump_and_reload_gives_an_equal_config(overrides):
    if "algo.advantage.params.eps=1e-4" in overrides and "algo.advantage.name=rloo" in overrides:
        overrides.remove("algo.advantage.params.eps=1e-4")  # rloo has no eps
    cfg = load_config(overrides=overrides)
    again = validate_config(yaml.safe_load(dump_config(cfg)))
    assert again == cfg


def test_save_config_writes_a_loadable_file(tmp_path):
    cfg = load_config(overrides=["name=saved", "algo.loss.params.clip_high=0.28"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(path) == cfg


def test_a_ppo_config_saved_by_a_run_loads_again(tmp_path):
    """A run's config.yaml is what ``--resume`` and ``rlft submit`` load: with a critic it must not
    name an advantage estimator, which a critic config refuses (found by the PPO resume test)."""
    ppo = Path(__file__).resolve().parents[2] / "examples" / "ppo.yaml"
    cfg = load_config(ppo, ["critic.warmup_steps=2"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert "advantage" not in yaml.safe_load(path.read_text())["algo"]
    assert load_config(path) == cfg and load_config(path).critic.warmup_steps == 2


def test_plugin_registers_a_loss_checked_like_builtins(tmp_path):
    name = f"my_loss_{uuid.uuid4().hex[:8]}"
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "my_losses.py").write_text(
        textwrap.dedent(
            f"""
            from typing import Annotated
            from annotated_types import Gt
            from rlft.algorithms import POLICY_LOSSES, LossOutput

            @POLICY_LOSSES.register("{name}")
            def my_loss(inputs, *, beta: Annotated[float, Gt(0)] = 1.0):
                return LossOutput(-beta * inputs.advantages * inputs.mask)
            """
        )
    )
    cfg_path = tmp_path / "exp.yaml"
    # The plugin path is relative to the config file, not to the working directory.
    cfg_path.write_text(f"plugins: [plugins/my_losses.py]\nalgo: {{loss: {{name: {name}}}}}\n")
    cfg = load_config(cfg_path, ["algo.loss.params.beta=2"])
    assert cfg.algo.loss.params == {"beta": 2.0}
    from rlft.algorithms import POLICY_LOSSES

    registered = POLICY_LOSSES.get(name)
    assert load_config(cfg_path).algo.loss.name == name  # loading again imports the plugin once:
    assert POLICY_LOSSES.get(name) is registered and POLICY_LOSSES.names().count(name) == 1  # no re-registration
    msg = _error(["algo.loss.params.betta=2"], path=cfg_path)
    assert f"unknown parameter 'betta' for policy loss '{name}' (did you mean 'beta'?)" in msg


def test_missing_plugin_is_reported(tmp_path):
    from rlft.plugins import PluginError

    with pytest.raises(PluginError, match=r"plugin file '/.*/nope.py' not found"):
        load_config(overrides=["plugins=[nope.py]"])
    with pytest.raises(PluginError, match="plugin module 'no_such_module_xyz' not found"):
        load_config(overrides=["plugins=[no_such_module_xyz]"])


def test_group_size_one_is_fine_for_an_estimator_that_needs_no_groups(tmp_path):
    name = f"plain_{uuid.uuid4().hex[:8]}"
    (tmp_path / "est.py").write_text(
        textwrap.dedent(
            f"""
            from rlft.algorithms import ADVANTAGES

            @ADVANTAGES.register("{name}")
            def plain(rewards, group_ids):
                return rewards - rewards.mean()
            """
        )
    )
    cfg = load_config(
        overrides=[f"plugins=[{tmp_path / 'est.py'}]", f"algo.advantage.name={name}", "rollout.group_size=1"]
    )
    assert cfg.rollout.group_size == 1


def test_stages_are_validated():
    assert [s.kind for s in load_config().stages] == ["rl"]
    cfg = load_config(overrides=["stages=[{kind: sft, steps: 5, lr: 0.01}, {kind: rl, steps: 2}]"])
    assert [(s.kind, s.steps, s.lr) for s in cfg.stages] == [("sft", 5, 0.01), ("rl", 2, None)]
    assert "stages: List should have at least 1 item" in _error(["stages=[]"])
    assert "stages.0.kind: Input should be 'sft', 'rl' or 'rft'" in _error(["stages=[{kind: ppo, steps: 1}]"])
    assert "stages.0.steps: Input should be greater than or equal to 1" in _error(["stages=[{kind: rl, steps: 0}]"])
    assert "stages.0.stepz: unknown key (did you mean 'steps'?)" in _error(["stages=[{kind: rl, stepz: 1}]"])
    # a stage's lr may be 0 (a control run: the policy stays), never negative; learner.lr stays positive
    assert load_config(overrides=["stages=[{kind: rl, steps: 2, lr: 0}]"]).stages[0].lr == 0.0
    assert "stages.0.lr: Input should be greater than or equal to 0" in _error(["stages=[{kind: rl, steps: 1, lr: -1}]"])
    assert "learner.lr: Input should be greater than 0" in _error(["learner.lr=0"])


# --- weight sync: a {name, params} choice over rlft.weight_sync.WEIGHT_SYNCS, checked at load -----


def test_weight_sync_old_spelling_and_name_params_spelling_load_the_same(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("rollout: {weight_sync: object_store, weight_sync_params: {bucket_bytes: 1024}}\n")
    new = tmp_path / "new.yaml"
    new.write_text("rollout: {weight_sync: {name: object_store, params: {bucket_bytes: '1024'}}}\n")
    a, b = load_config(old).rollout, load_config(new).rollout
    assert (a.weight_sync, a.weight_sync_params) == (b.weight_sync, b.weight_sync_params) == ("object_store", {"bucket_bytes": 1024})
    assert load_config(overrides=["rollout.weight_sync={name: shm}"]).rollout.weight_sync == "shm"
    # the resolved config keeps the flat keys users write
    dumped = yaml.safe_load(dump_config(load_config(new)))["rollout"]
    assert dumped["weight_sync"] == "object_store" and dumped["weight_sync_params"] == {"bucket_bytes": 1024}


def test_weight_sync_name_and_params_fail_at_load_with_the_closest_name():
    msg = _error(["rollout.weight_sync=shmm"])
    assert "rollout.weight_sync: unknown weight sync backend 'shmm' (did you mean 'shm'?); valid names: " in msg
    msg = _error(["rollout.weight_sync_params={bucket_byte: 1}"])
    assert "unknown parameter 'bucket_byte' for weight sync backend 'shm' (did you mean 'bucket_bytes'?)" in msg
    assert "bucket_bytes: Input should be greater than 0" in _error(["rollout.weight_sync_params={bucket_bytes: 0}"])
    assert "weight_sync takes 'name' and 'params'" in _error(["rollout.weight_sync={name: shm, bucket_bytes: 1}"])
    assert "give the weight-sync params once" in _error(
        ["rollout.weight_sync={name: shm, params: {}}", "rollout.weight_sync_params={root: /tmp}"]
    )


def test_plugin_registers_a_weight_sync_backend(tmp_path):
    name = f"my_sync_{uuid.uuid4().hex[:8]}"
    (tmp_path / "my_sync.py").write_text(
        textwrap.dedent(
            f"""
            from dataclasses import dataclass
            from rlft.weight_sync import WEIGHT_SYNCS

            @WEIGHT_SYNCS.register("{name}")
            @dataclass(kw_only=True)
            class MySync:
                port: int = 29600
                def push(self, state_dict, version, workers): ...
            """
        )
    )
    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(f"plugins: [my_sync.py]\nrollout: {{weight_sync: {name}, weight_sync_params: {{port: '1'}}}}\n")
    assert load_config(cfg_path).rollout.weight_sync_params == {"port": 1}
    assert f"unknown parameter 'prot' for weight sync backend '{name}' (did you mean 'port'?)" in _error(
        ["rollout.weight_sync_params={prot: 1}"], path=cfg_path
    )
