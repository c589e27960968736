"""The registries: names, duplicates, user registration, and signature-checked hyperparameters."""

from __future__ import annotations

from typing import Annotated

import pytest
import torch
from annotated_types import Gt

import rlft.algorithms as A
from rlft.algorithms.registry import ParamError, Registry, RegistryError


def test_public_names_are_registered():
    assert sorted(A.ADVANTAGES) == ["dr_grpo", "grpo", "reinforce_pp_baseline", "rloo"]
    assert sorted(A.POLICY_LOSSES) == ["cispo", "decoupled_ppo", "gspo", "ppo_clip", "reinforce", "topr"]
    assert sorted(A.KL_ESTIMATORS) == ["k1", "k2", "k3"]
    assert A.AGGREGATION_MODES == ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def test_unknown_name_lists_valid_names_and_closest():
    with pytest.raises(RegistryError) as err:
        A.POLICY_LOSSES.get("ppo_clipp")
    msg = str(err.value)
    assert "unknown policy loss 'ppo_clipp'" in msg
    assert "did you mean 'ppo_clip'" in msg
    assert "cispo, decoupled_ppo, gspo, ppo_clip, reinforce, topr" in msg
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)


def test_duplicate_name_is_rejected():
    reg: Registry = Registry("thing")

    @reg.register("a")
    def a(x):
        return x

    with pytest.raises(RegistryError, match="'a' is already registered"):
        reg.register("a")(lambda x: x)
    assert reg.get("a") is a  # the first one stays
    assert reg.unregister("a") is a and "a" not in reg
    with pytest.raises(RegistryError, match="unknown thing 'a'; valid names: $"):
        reg.get("a")


def test_user_registered_function_is_usable():
    reg: Registry = Registry("advantage estimator")

    @reg.register("centred", needs_groups=False)
    def centred(rewards, group_ids, *, scale: Annotated[float, Gt(0)] = 1.0):
        return (rewards - rewards.mean()) * scale

    assert reg.names() == ["centred"] and "centred" in reg and len(reg) == 1
    assert reg.meta("centred") == {"needs_groups": False}
    out = reg["centred"](torch.tensor([1.0, 3.0]), torch.tensor([0, 0]), **reg.validate_params("centred", {"scale": "2"}))
    torch.testing.assert_close(out, torch.tensor([-2.0, 2.0]))


def test_params_are_checked_against_the_signature():
    assert A.POLICY_LOSSES.validate_params("ppo_clip", {"clip_high": "0.28"}) == {"clip_high": 0.28}
    assert A.POLICY_LOSSES.params("ppo_clip").keys() == {"clip_low", "clip_high", "dual_clip"}
    with pytest.raises(ParamError, match=r"unknown parameter 'clip_hgih'.*did you mean 'clip_high'"):
        A.POLICY_LOSSES.validate_params("ppo_clip", {"clip_hgih": 0.28})
    with pytest.raises(ParamError, match=r"dual_clip: Input should be greater than 1"):
        A.POLICY_LOSSES.validate_params("ppo_clip", {"dual_clip": 0.5})
    with pytest.raises(ParamError, match=r"clip_low: Input should be greater than 0"):
        A.POLICY_LOSSES.validate_params("ppo_clip", {"clip_low": 0})
    with pytest.raises(ParamError, match=r"scale_by_std: Input should be a valid boolean"):
        A.ADVANTAGES.validate_params("grpo", {"scale_by_std": "perhaps"})
    with pytest.raises(ParamError, match=r"valid parameters: none"):
        A.ADVANTAGES.validate_params("rloo", {"eps": 1e-6})


def test_one_did_you_mean_helper_serves_every_message():
    from pathlib import Path

    from rlft.algorithms.registry import did_you_mean

    assert did_you_mean("rlo", ["rloo", "grpo"]) == " (did you mean 'rloo'?)"
    assert did_you_mean("zzz", ["rloo", "grpo"]) == ""
    # the hint's wording lives in one place: no other module formats it by hand
    root = Path(__file__).resolve().parents[2]
    hand_made = [
        str(p.relative_to(root))
        for pkg in ("rlft", "actors", "rewards", "launch")
        for p in sorted((root / pkg).rglob("*.py"))
        if "f\" (did you mean '{" in p.read_text()
    ]
    assert hand_made == ["rlft/algorithms/registry.py"]


def test_built_in_tasks_and_weight_syncs_are_registries():
    from rlft.tasks import TASKS
    from rlft.weight_sync import WEIGHT_SYNCS

    assert isinstance(TASKS, Registry) and "arithmetic" in TASKS
    assert isinstance(WEIGHT_SYNCS, Registry) and {"shm", "object_store"} <= set(WEIGHT_SYNCS)
    with pytest.raises(RegistryError, match=r"unknown weight sync backend 'shmm' \(did you mean 'shm'\?\)"):
        WEIGHT_SYNCS.get("shmm")


def test_rewards_are_a_registry_too():
    from rewards.api import REWARDS, RewardError, reward_names

    reward_names()  # loads the built-ins
    assert isinstance(REWARDS, Registry) and "exact_match" in REWARDS
    with pytest.raises(RegistryError, match=r"unknown reward 'exact_mach' \(did you mean 'exact_match'\?\)") as err:
        REWARDS.get("exact_mach")
    assert isinstance(err.value, RewardError)


def test_snapshot_and_restore():
    reg: Registry = Registry("thing")

    @reg.register("a", tag=1)
    def a(x, *, k: int = 0):
        return x

    before = reg.snapshot()
    reg.unregister("a")
    reg.register("b")(lambda x: x)
    reg.restore(before)
    assert reg.names() == ["a"] and reg.get("a") is a and reg.meta("a") == {"tag": 1}
    assert reg.validate_params("a", {"k": "2"}) == {"k": 2}

