"""The TensorBoard and wandb sinks against the real packages, read back from what they wrote.

No Ray, no network: wandb runs offline (``WANDB_MODE=offline``, every wandb directory in tmp) and its
``run-<id>.wandb`` file is parsed here. That file is wandb's transaction log: a LevelDB-style log
(https://github.com/google/leveldb/blob/main/doc/log_format.md) with a 7-byte ``:W&B`` header, of
serialized ``wandb.proto.wandb_internal_pb2.Record`` messages. The Python reader that wandb used to
ship (``wandb.sdk.internal.datastore``) is gone from recent versions (the Go core writes the file), so
``read_wandb_records`` below is a ~25-line reader of that documented format with CRC checks; a
format change fails its header or CRC assertions loudly instead of passing silently.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from pathlib import Path

import pytest

from launch.sinks import TensorBoardSink
from launch.wandb_sink import WandbSink
from rlft.config import RunConfig

REWARDS = {1: 0.25, 2: 0.5, 3: 0.75}
SAMPLES = [
    {"step": 3, "stage": "rl0", "prompt_id": "p7", "prompt": "What is 2+3?", "completion": "5",
     "reward": 1.0, "rewards": {"accuracy": 1.0, "format": 0.5}, "finish_reason": "stop",
     "num_tokens": 1, "policy_version": 2, "category": "add"},
    {"step": 3, "stage": "rl0", "prompt_id": "p8", "prompt": "What is 4+4?", "completion": "9|x",
     "reward": None, "rewards": {"accuracy": None, "format": 0.0}, "finish_reason": "length",
     "num_tokens": 3, "policy_version": 2, "category": "add"},
]


def log_a_few_steps(sink) -> None:
    for step, reward in REWARDS.items():
        sink.log(step, {"step": float(step), "stage": "rl0", "reward/mean": reward, "learner/loss": -step / 10})
    sink.log(3, {"eval/accuracy": 0.5, "eval/pass@4": 0.75})  # an evaluation at the step just trained
    sink.log_samples(3, SAMPLES)


# -------------------------------------------------------------------------------------------------


def test_tensorboard_scalars_and_samples_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sink = TensorBoardSink(tmp_path)
    log_a_few_steps(sink)
    sink.close()

    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert {"reward/mean", "learner/loss", "eval/accuracy", "eval/pass@4"} <= set(scalars)
    assert "stage" not in scalars and "step" not in scalars
    assert {e.step: e.value for e in acc.Scalars("reward/mean")} == pytest.approx(REWARDS)
    assert [(e.step, e.value) for e in acc.Scalars("eval/accuracy")] == [(3, 0.5)]

    (text,) = acc.Tensors("samples/text_summary")
    assert text.step == 3
    table = text.tensor_proto.string_val[0].decode()
    assert "| prompt | completion | reward | accuracy | format |" in table
    assert "| What is 2+3? | 5 | 1 | 1 | 0.5 |" in table
    assert "| What is 4+4? | 9\\|x | – | – | 0 |" in table


# -------------------------------------------------------------------------------------------------


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """wandb with no way to the network: offline mode, no key, all of its directories in tmp."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # were anything to try, it fails at once
    for var, sub in (("WANDB_DIR", "wandb-dir"), ("WANDB_CONFIG_DIR", "wandb-config"),
                     ("WANDB_CACHE_DIR", "wandb-cache"), ("WANDB_DATA_DIR", "wandb-data")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    return tmp_path


def read_wandb_records(path: Path) -> list:
    """Every ``Record`` of a ``run-<id>.wandb`` file (LevelDB log format, 32 KiB blocks)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), "unknown .wandb header"
    records, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's trailer too small for a header is zero padding
            pos += block - pos % block
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if pos + 7 + length > len(data):  # a record still being written
            break
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0:  # zero padding at the end of a block or file
            continue
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc, f"bad CRC at offset {pos}"
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL/FIRST start, MIDDLE/LAST extend
        if kind in (1, 4):  # FULL or LAST: one whole record
            record = Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def history_rows(records) -> dict[int, dict]:
    """``_step`` -> row; a media value (a table) arrives flattened into nested keys, rebuilt here."""
    rows = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            row: dict = {}
            for item in r.history.item:
                *parents, leaf = item.nested_key or [item.key]
                node = row
                for p in parents:
                    node = node.setdefault(p, {})
                node[leaf] = json.loads(item.value_json)
            rows[row["_step"]] = row
    return rows


def wandb_files(run_dir: Path, run_id: str) -> list[Path]:
    """The run's offline files, oldest first (directory names are start timestamps; a restart within
    the same second gets a ``-1`` suffix)."""
    return sorted((run_dir / "wandb").glob(f"offline-run-*-{run_id}*/run-{run_id}.wandb"), key=lambda p: p.parent.name)


def finished_records(path: Path, timeout_s: float = 30.0) -> list:
    """The records of ``path`` once its ``exit`` record is on disk. ``run.finish()`` returns when
    wandb-core has handled the exit record, but the core writes this file through a buffer that it
    flushes when it closes the stream a moment later (measured: now and then only the 7-byte header
    was on disk right after ``finish``), so wait for it rather than read a half-written file."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = read_wandb_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def test_wandb_offline_history_read_back_and_resume_continues_the_run(offline_wandb):
    run_dir = offline_wandb / "run-42"
    run_dir.mkdir()
    cfg = RunConfig.model_validate({"name": "sinks-test", "logging": {"backends": ["wandb"], "wandb": {
        "project": "rlft-tests", "tags": ["ci"], "mode": "auto"}}})

    sink = WandbSink(run_dir, cfg)
    assert sink.mode == "offline"
    run_id = sink.run_id
    assert (run_dir / "wandb_run_id").read_text().strip() == run_id
    assert "offline" in sink.location and str(run_dir / "wandb") in sink.location
    log_a_few_steps(sink)
    sink.close()

    (first,) = wandb_files(run_dir, run_id)
    records = finished_records(first)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.run_id == run_id and run.display_name == "run-42" and run.project == "rlft-tests"
    assert list(run.tags) == ["ci"]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["name"] == "sinks-test" and config["logging"]["wandb"]["project"] == "rlft-tests"

    rows = history_rows(records)
    assert sorted(rows) == [1, 2, 3]
    assert {s: row["reward/mean"] for s, row in rows.items()} == REWARDS
    # the evaluation and the samples logged at step 3 merged into step 3's row, not dropped
    assert rows[3]["eval/accuracy"] == 0.5 and rows[3]["eval/pass@4"] == 0.75
    assert rows[3]["samples"]["_type"] == "table-file" and rows[3]["samples"]["nrows"] == 2
    assert "stage" not in rows[1] and "step" not in rows[1]
    table = next(run_dir.glob("wandb/offline-run-*/files/media/table/samples_*.table.json"))
    content = json.loads(table.read_text())
    assert content["columns"][:7] == ["step", "stage", "prompt", "completion", "reward", "reward/accuracy",
                                      "reward/format"]
    assert content["data"][0][:7] == [3, "rl0", "What is 2+3?", "5", 1.0, 1.0, 0.5]

    # a later start in the same run directory (a resumed run) continues the same wandb run
    again = WandbSink(run_dir, cfg)
    assert again.run_id == run_id
    again.log(4, {"stage": "rl0", "reward/mean": 1.0})
    again.close()
    files = wandb_files(run_dir, run_id)
    assert len(files) == 2 and files[0] == first  # offline: a second file for the same run id
    records = finished_records(files[1])
    assert [r.run.run_id for r in records if r.WhichOneof("record_type") == "run"] == [run_id]
    assert {s: row["reward/mean"] for s, row in history_rows(records).items()} == {4: 1.0}
