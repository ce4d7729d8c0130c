"""Checkpoints are complete or absent: begin/commit, latest, pruning, RNG states and trainer state."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from rexthinker.train import checkpoint


def _save(root, step: int, keep: int | None = None, **state):
    tmp = checkpoint.begin(root, step)
    (tmp / "payload.txt").write_text(f"step {step}\n")
    return checkpoint.commit(tmp, {"step": step, **state}, keep=keep)


def test_begin_gives_a_hidden_temporary_folder_that_is_never_latest(tmp_path):
    tmp = checkpoint.begin(tmp_path, 7)
    assert tmp == tmp_path / ".tmp-step-7"
    assert (tmp / "rng").is_dir()
    (tmp / "payload.txt").write_text("half written")
    assert checkpoint.latest(tmp_path) is None
    assert checkpoint.step_dirs(tmp_path) == []


def test_begin_clears_what_a_crashed_save_of_the_same_step_left(tmp_path):
    stale = checkpoint.begin(tmp_path, 3)
    (stale / "learner.pt").write_text("from a crashed save")
    tmp = checkpoint.begin(tmp_path, 3)
    assert sorted(p.name for p in tmp.iterdir()) == ["rng"]


def test_commit_renames_stamps_and_writes_a_readable_trainer_state(tmp_path):
    final = _save(tmp_path, 5, total_steps=10)
    assert final == tmp_path / "step-5"
    assert not (tmp_path / ".tmp-step-5").exists()
    assert (final / "COMPLETE").read_text() == "ok\n"
    assert (final / "payload.txt").read_text() == "step 5\n"
    assert (final / "trainer_state.json").read_text() == '{\n  "step": 5,\n  "total_steps": 10\n}\n'
    assert checkpoint.read_state(final) == {"step": 5, "total_steps": 10}
    assert checkpoint.latest(tmp_path) == final


def test_commit_replaces_an_existing_checkpoint_of_the_same_step(tmp_path):
    _save(tmp_path, 4, note="first")
    final = _save(tmp_path, 4, note="second")
    assert checkpoint.read_state(final) == {"step": 4, "note": "second"}
    assert [s for s, _ in checkpoint.step_dirs(tmp_path)] == [4]


def test_latest_is_the_highest_complete_step_by_number(tmp_path):
    for step in (2, 9, 10):
        _save(tmp_path, step)
    (tmp_path / "step-12").mkdir()  # renamed but never stamped: a crash between rename and COMPLETE
    checkpoint.begin(tmp_path, 14)  # a save still in flight
    (tmp_path / "step-x").mkdir()
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert checkpoint.latest(tmp_path) == tmp_path / "step-10"  # 10 > 9 numerically, though "step-9" > "step-10" as text
    assert checkpoint.step_dirs(tmp_path) == [(2, tmp_path / "step-2"), (9, tmp_path / "step-9"), (10, tmp_path / "step-10")]


def test_latest_of_a_missing_root_is_none(tmp_path):
    assert checkpoint.latest(tmp_path / "nothing") is None
    assert checkpoint.step_dirs(tmp_path / "nothing") == []


def test_prune_keeps_the_newest_complete_checkpoints(tmp_path):
    for step in (1, 2, 3):
        _save(tmp_path, step, keep=2)
    assert [s for s, _ in checkpoint.step_dirs(tmp_path)] == [2, 3]
    (tmp_path / "step-0").mkdir()  # incomplete folders are not counted and not touched
    _save(tmp_path, 10, keep=2)
    assert [s for s, _ in checkpoint.step_dirs(tmp_path)] == [3, 10]
    assert (tmp_path / "step-0").is_dir()


@pytest.mark.parametrize("keep", [None, 0])
def test_no_keep_keeps_everything(tmp_path, keep):
    for step in (1, 2, 3):
        _save(tmp_path, step, keep=keep)
    assert [s for s, _ in checkpoint.step_dirs(tmp_path)] == [1, 2, 3]


def test_commit_never_prunes_the_checkpoint_it_just_wrote(tmp_path):
    """A run restarted with resume=false in an output folder whose older run got further: the new
    checkpoint is not among the newest ``keep`` steps, yet commit must return a folder that exists."""
    for step in (8, 10):
        _save(tmp_path, step, keep=2)
    final = _save(tmp_path, 6, keep=2)
    assert final == tmp_path / "step-6"
    assert (final / "COMPLETE").is_file() and checkpoint.read_state(final) == {"step": 6}
    assert [s for s, _ in checkpoint.step_dirs(tmp_path)] == [6, 8, 10]


def test_rng_round_trip_restores_python_numpy_and_torch(tmp_path):
    tmp = checkpoint.begin(tmp_path, 1)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    checkpoint.save_rng(tmp)
    assert sorted(p.name for p in (tmp / "rng").iterdir()) == ["rank0.pt"]

    def draw():
        return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()

    expected = draw()
    draw(), draw()
    final = checkpoint.commit(tmp, {"step": 1})
    checkpoint.load_rng(final)
    assert draw() == expected


def test_load_rng_without_this_ranks_state_fails_loudly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no RNG state for rank 0"):
        checkpoint.load_rng(tmp_path)


def test_read_state_of_a_folder_without_state_fails_loudly(tmp_path):
    with pytest.raises(FileNotFoundError):
        checkpoint.read_state(tmp_path)
    (tmp_path / "trainer_state.json").write_text(json.dumps({"step": 3, "epoch": 1}))
    assert checkpoint.read_state(tmp_path) == {"step": 3, "epoch": 1}
