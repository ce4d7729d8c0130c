"""Shared GRPO test data: a small SynthRef GRPO parquet in the tiny model's pixel limits."""

from __future__ import annotations

from pathlib import Path

import pytest


def write_tiny_grpo_parquet(root: Path, num: int) -> Path:
    from rexthinker.data.grpo_parquet import write_grpo_parquet
    from rexthinker.data.synthref import generate
    from rexthinker.models.tiny import SPECS

    spec = SPECS["tiny"]
    write_grpo_parquet(generate(num, seed=9), root / "train.parquet", spec.min_pixels, spec.max_pixels)
    return root / "train.parquet"


@pytest.fixture(scope="module")
def grpo_data(tmp_path_factory):
    return write_tiny_grpo_parquet(tmp_path_factory.mktemp("grpo_data"), 16)
