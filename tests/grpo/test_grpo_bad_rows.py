"""GRPOTrainer opens its parquet with ``data.on_error``: every row checked before any Ray actor
starts, bad rows left out and listed in ``data_errors.jsonl`` under ``skip``, the first one raised
under ``raise``. The trainer is stopped right after opening its data (no Ray, no vLLM)."""

from __future__ import annotations

import json
import re

import pytest

from rexthinker.config import load_config
from rexthinker.data.errors import DataError
from rexthinker.data.synthref import generate
from rexthinker.grpo import trainer as grpo_trainer
from rexthinker.grpo.config import GRPOConfig
from rexthinker.models.tiny import SPECS
from tests.data.corrupt import corrupt_grpo_parquet


class Stop(Exception):
    pass


@pytest.fixture
def corrupt(tmp_path):
    spec = SPECS["tiny"]
    return corrupt_grpo_parquet(generate(4, seed=9), tmp_path / "train.parquet", spec.min_pixels, spec.max_pixels)


def _cfg(tiny_model_path, data, out, *extra) -> GRPOConfig:
    overrides = [f"model.path={tiny_model_path}", f"data.train=[{data}]", f"trainer.output_dir={out}", "eval.enabled=false"]
    return load_config(GRPOConfig, "recipes/configs/grpo_demo.yaml", overrides + list(extra))


def test_skip_leaves_the_bad_rows_out_of_the_prompts(tiny_model_path, corrupt, tmp_path, monkeypatch, capsys):
    opened = []
    real = grpo_trainer.open_training_samples

    def open_then_stop(*args, **kwargs):
        opened.append(real(*args, **kwargs))
        raise Stop  # the trainer has its prompts: nothing after them is under test

    monkeypatch.setattr(grpo_trainer, "open_training_samples", open_then_stop)
    with pytest.raises(Stop):
        grpo_trainer.GRPOTrainer(_cfg(tiny_model_path, corrupt.path, tmp_path / "run", "data.on_error=skip"))
    (samples,) = opened
    assert [s.id for s in samples] == corrupt.kept
    assert f"[grpo] data.train: skipped {len(corrupt.errors)} bad rows" in capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "run" / "data_errors.jsonl").read_text().splitlines()]
    assert [(r["line"], r["unit"], r["kind"], r["action"]) for r in rows] == [(n, "row", k, "skipped") for n, k in corrupt.errors]


def test_raise_stops_before_any_actor_starts(tiny_model_path, corrupt, tmp_path):
    row = corrupt.errors[0][0]
    with pytest.raises(DataError, match=rf"^{re.escape(str(corrupt.path))} row {row}: "):
        grpo_trainer.GRPOTrainer(_cfg(tiny_model_path, corrupt.path, tmp_path / "run"))
