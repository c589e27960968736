"""Several training sets mixed with ``data.sources``: each prompt is tagged with its set, and the
``weighted_sources`` sampler draws the sets in the configured ratio."""

from __future__ import annotations

import json
from collections import Counter

from launch.train import load_training_records
from rlft.config import load_config
from rlft.curriculum import build_sampler
from rlft.collect import sampler_setup


def _jsonl(path, n, tag):
    path.write_text("".join(json.dumps({"prompt": f"{tag} {i}", "answer": str(i)}) + "\n" for i in range(n)))
    return str(path)


def test_sources_are_tagged_and_drawn_by_weight(tmp_path):
    a, b = _jsonl(tmp_path / "maths.jsonl", 40, "m"), _jsonl(tmp_path / "code.jsonl", 40, "c")
    cfg = load_config(overrides=[
        f"data.sources=[{{path: {a}, weight: 3}}, {{path: {b}, name: coding}}]", "curriculum.name=weighted_sources"])
    fields = dict(prompt_field="prompt", answer_field="answer", metadata_fields=[])
    records = load_training_records(cfg, fields)
    assert len(records) == 80 and len({r.prompt_id for r in records}) == 80
    assert records[0].prompt_id == "maths/maths:0" and records[0].metadata == {"source": "maths"}
    assert records[-1].metadata == {"source": "coding"}
    field, params = sampler_setup(cfg)
    assert (field, params) == ("source", {"weights": {"maths": 3.0, "coding": 1.0}})
    categories = [r.metadata[field] for r in records]
    sampler = build_sampler(cfg.curriculum.name, categories, seed=0, params=params)
    drawn = Counter(categories[i] for _ in range(25) for i in sampler.sample(8))
    assert drawn["maths"] / sum(drawn.values()) == 0.75  # 3:1, allocated per draw (6 + 2 of every 8)
