"""Shared inputs for the metric tests: the contracts §4 golden case and a HumanRef-like set."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

GOLDEN_GT = [
    {
        "id": "a", "image_name": "a.jpg", "referring": "two people", "domain": "attribute", "sub_domain": "attr",
        "candidate_boxes": [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]],
        "answer_boxes": [[0, 0, 10, 10], [20, 20, 30, 30]],
    },
    {
        "id": "b", "image_name": "b.jpg", "referring": "the left one", "domain": "position", "sub_domain": "pos",
        "candidate_boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "answer_boxes": [[0, 0, 10, 10]],
    },
    {
        "id": "c", "image_name": "c.jpg", "referring": "nobody", "domain": "rejection", "sub_domain": "rej",
        "candidate_boxes": [[0, 0, 10, 10]], "answer_boxes": [],
    },
    {
        "id": "d", "image_name": "d.jpg", "referring": "nobody", "domain": "rejection", "sub_domain": "rej",
        "candidate_boxes": [[0, 0, 10, 10]], "answer_boxes": [],
    },
]  # fmt: skip
GOLDEN_PRED = [
    {"id": "a", "extracted_predictions": [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [1, 1, 9, 9]]},
    {"id": "b", "extracted_predictions": [[0, 0, 10, 8]]},
    {"id": "d", "extracted_predictions": [[0, 0, 10, 10]]},
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def golden_files(tmp_path):
    return write_jsonl(tmp_path / "annotations.jsonl", GOLDEN_GT), write_jsonl(tmp_path / "pred.jsonl", GOLDEN_PRED)


@pytest.fixture(scope="session")
def humanref_like():
    """(ground truth, box predictions, point predictions) from the speed benchmark's generator, 400
    samples: overlapping people, a tail of many targets, missing ids, duplicates, [] and [[]]."""
    spec = importlib.util.spec_from_file_location("metric_speed", ROOT / "benchmarks" / "metric_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_benchmark(400, seed=1)
