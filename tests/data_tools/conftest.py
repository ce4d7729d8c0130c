"""Fixtures of the data-tools tests: a small SynthRef set on disk as a ``prepare`` input, and the
cached tiny Grounding DINO."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from rexthinker.data.humanref import write_humanref
from rexthinker.data.sample import RefSample
from rexthinker.data.synthref import generate


@dataclass
class Domain:
    """A custom-domain input: ``rows.jsonl`` (contracts §1.5 plus supplied candidates) over
    ``images/``, made from SynthRef samples."""

    root: Path
    rows: Path
    images: Path
    samples: list[RefSample]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sample_row(s: RefSample, supplied: bool = True) -> dict:
    row = {
        "id": s.id,
        "image_name": s.image_name,
        "referring": s.referring,
        "category": s.category,
        "ans": s.answer_boxes,
    }
    if supplied:
        row["candidate_boxes"] = s.candidate_boxes
    return row


@pytest.fixture(scope="session")
def synth_samples() -> list[RefSample]:
    return generate(24, seed=5)


@pytest.fixture(scope="session")
def domain(tmp_path_factory, synth_samples) -> Domain:
    root = tmp_path_factory.mktemp("domain")
    write_humanref(synth_samples, root / "src")
    rows = write_rows(root / "rows.jsonl", [sample_row(s) for s in synth_samples])
    return Domain(root, rows, root / "src" / "images", synth_samples)


@pytest.fixture(scope="session")
def tiny_detector_path() -> Path:
    from rexthinker.detect import tiny

    return tiny.get()
