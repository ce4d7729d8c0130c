"""Metric logging: JSONL rows a person (and ``json.loads``) can read, TensorBoard scalars, PNG curves."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from rexthinker.train import dist
from rexthinker.train.metrics import MetricLogger, plot_history


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_jsonl_rows_are_plain_json_one_per_line(tmp_path):
    logger = MetricLogger(tmp_path / "run", ["jsonl"], "test")
    logger.log(1, {"loss": torch.tensor(0.5), "lr": 1e-5, "grad_norm": float("nan"), "acc": np.float64(0.123456789), "epoch": 1})
    logger.log(2, {"loss": 0.25, "reward/overall": float("inf"), "tag": "eval"})
    logger.close()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    rows = [json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}")) for line in lines]
    assert list(rows[0]) == ["step", "time", "loss", "lr", "grad_norm", "acc", "epoch"]  # step first, then as logged
    # tensors and numpy scalars become numbers, floats keep 6 decimals, non-finite ones become null
    first = {"step": 1, "loss": 0.5, "lr": 1e-05, "grad_norm": None, "acc": 0.123457, "epoch": 1}
    assert {k: v for k, v in rows[0].items() if k != "time"} == first
    assert {k: v for k, v in rows[1].items() if k != "time"} == {"step": 2, "loss": 0.25, "reward/overall": None, "tag": "eval"}
    assert isinstance(rows[0]["time"], float) and rows[0]["time"] <= rows[1]["time"]
    assert logger.history == rows


def test_a_new_logger_appends_to_an_existing_file(tmp_path):
    for step in (1, 2):
        logger = MetricLogger(tmp_path, ["jsonl"], "test")
        logger.log(step, {"loss": 1.0 / step})
        logger.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 0.5)]


def test_without_jsonl_no_file_is_written_but_history_is_kept(tmp_path):
    logger = MetricLogger(tmp_path, ["console"], "test")
    logger.log(3, {"loss": 2.0})
    assert not (tmp_path / "metrics.jsonl").exists()
    assert [(r["step"], r["loss"]) for r in logger.history] == [(3, 2.0)]


def test_unknown_targets_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"unknown report_to targets \['jsonl_file', 'mlflow'\]"):
        MetricLogger(tmp_path, ["jsonl", "mlflow", "jsonl_file"], "test")


def test_only_rank_zero_logs(tmp_path, monkeypatch):
    monkeypatch.setattr(dist, "is_main", lambda: False)
    logger = MetricLogger(tmp_path / "run", ["jsonl", "tensorboard"], "test")
    logger.log(1, {"loss": 1.0})
    assert logger.history == [] and not (tmp_path / "run").exists()
    assert logger.plot(["loss"], tmp_path / "curves.png", "run") is None and not (tmp_path / "curves.png").exists()
    logger.close()


def test_tensorboard_gets_the_finite_numbers(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = MetricLogger(tmp_path, ["tensorboard"], "test")
    logger.log(1, {"loss": 1.5, "grad_norm": float("nan"), "tag": "x"})
    logger.log(2, {"loss": 0.75, "grad_norm": 3.0})
    logger.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["grad_norm", "loss"]
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 1.5), (2, 0.75)]
    assert [(e.step, e.value) for e in events.Scalars("grad_norm")] == [(2, 3.0)]


def test_plot_draws_one_panel_per_logged_key(tmp_path):
    logger = MetricLogger(tmp_path, [], "test")
    for step in (1, 2, 3):
        logger.log(step, {"loss": 1.0 / step, "lr": 1e-3 if step < 3 else float("nan")})
    path = logger.plot(["loss", "lr", "never_logged"], tmp_path / "curves.png", "run")
    assert path == tmp_path / "curves.png"
    assert _png_size(path) == (2 * 462, 352)  # 4.2 x 3.2 inches per panel at 110 dpi


def test_plot_history_leaves_out_keys_no_row_has(tmp_path):
    history = [{"step": 1, "reward/overall": 0.1}, {"step": 2, "reward/overall": 0.3, "eval/acc": 0.5}]
    assert _png_size(plot_history(history, ["reward/overall"], tmp_path / "one.png", "one")) == (462, 352)
    assert _png_size(plot_history(history, ["eval/acc", "reward/overall", "x"], tmp_path / "two.png", "two")) == (924, 352)
    assert plot_history(history, ["x", "y"], tmp_path / "none.png", "none") is None
    assert plot_history([], ["loss"], tmp_path / "empty.png", "empty") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.png", "two.png"]
