"""A full disk at checkpoint time, for real: a 4 MiB tmpfs (mounted in a private user + mount
namespace with ``unshare -rm``) holds one checkpoint of the tiny model (weights, tokenizer and
training state: ~2.5 MB) but not two. The second fails with ENOSPC: the run reports it, the first
checkpoint stays intact and loadable, and no half-written directory is left to be mistaken for one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, logging, sys
    from pathlib import Path
    from actors.learner import LearnerWorker
    from rlft.checkpointing import latest_checkpoint, list_checkpoints
    from rlft.config import load_config
    from rlft.compose import build_driver
    from rlft.types import Prompt

    mount, model = Path(sys.argv[1]), sys.argv[2]
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    cfg = load_config(overrides=[f"model.path={model}", "checkpoint.keep_last=null"])
    learner = LearnerWorker(0, 1, "", 0, model, cfg.model, cfg.learner, cfg.algo)
    driver = build_driver(cfg, engine=None, scorer=None, learner=learner, weights=None,
                    train_prompts=[Prompt("p", [1, 2])], checkpoint_dir=str(mount / "checkpoints"))
    first = driver.state.checkpoint()
    driver.state.step = 1
    second = driver.state.checkpoint()
    print(json.dumps({
        "first": first, "second": second, "failed": driver.state.failed_checkpoints,
        "dirs": sorted(p.name for p in (mount / "checkpoints").iterdir()),
        "latest": str(latest_checkpoint(mount / "checkpoints")),
        "complete": [p.name for p in list_checkpoints(mount / "checkpoints")],
    }))
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(first)  # the surviving checkpoint still loads
    """
)


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs unprivileged user + mount namespaces (unshare -rm)")
def test_a_full_disk_at_checkpoint_time_keeps_the_previous_checkpoint(tmp_path, tiny_model_dir):
    mount = tmp_path / "small-disk"
    mount.mkdir()
    script = tmp_path / "checkpoint_twice.py"
    script.write_text(SCRIPT)
    out = subprocess.run(
        ["unshare", "-rm", "sh", "-c",
         f'mount -t tmpfs -o size=4m tmpfs "{mount}" && exec "{sys.executable}" "{script}" "{mount}" "{tiny_model_dir}"'],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["first"].endswith("step-000000") and result["second"] is None and result["failed"] == 1
    assert result["dirs"] == ["step-000000"]  # no step-000001, no step-000001.tmp
    assert result["complete"] == ["step-000000"] and result["latest"].endswith("step-000000")
    assert "No space left on device" in out.stderr and "the previous ones are intact" in out.stderr
