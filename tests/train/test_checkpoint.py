"""Checkpoints are complete or absent: begin/commit, latest, pruning, RNG states and trainer state."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from rexthinker.train import checkpoint, faults


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
    state_size = (final / "trainer_state.json").stat().st_size
    assert json.loads((final / "COMPLETE").read_text()) == {"files": {"payload.txt": 7, "trainer_state.json": state_size}}
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


# --- kills inside commit, damaged checkpoints, pickles, the run lock ---------------------------


_SAVE = """
import sys
from pathlib import Path
from rexthinker.train import checkpoint
root, step, note, keep = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]) or None
tmp = checkpoint.begin(root, step)
(tmp / "payload.txt").write_text(f"step {step}\\n")
checkpoint.commit(tmp, {"step": step, "note": note}, keep=keep)
"""


def _killed_save(root, step: int, fault: str, note: str, keep: int | None = None) -> int:
    """``_save`` in a child process that SIGKILLs itself at ``fault`` (a fresh interpreter: forking
    a test process that has threads can deadlock the child); returns the signal it died of."""
    env = dict(os.environ, **{faults.ENV: fault})
    proc = subprocess.run([sys.executable, "-c", _SAVE, str(root), str(step), note, str(keep or 0)], env=env, timeout=120)
    return -proc.returncode if proc.returncode < 0 else 0


@pytest.mark.parametrize("fault", ["commit.stamped", "commit.swap", "commit.delete_old", "commit.prune"])
def test_a_kill_inside_commit_never_leaves_a_half_checkpoint(tmp_path, fault):
    """A restart saves step 2 again (it was killed during the final evaluation); a kill at any
    point of that commit leaves step 2 complete: the old copy or the new one, never a mix."""
    _save(tmp_path, 1)
    _save(tmp_path, 2, note="first")
    assert _killed_save(tmp_path, 2, fault, note="second", keep=1) == signal.SIGKILL
    checkpoint.recover(tmp_path)
    found = checkpoint.latest(tmp_path)
    assert found == tmp_path / "step-2"
    assert checkpoint.verify(found) is None
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert checkpoint.read_state(found)["note"] == "second"  # once stamped, the new copy wins


def test_a_kill_before_any_stamp_leaves_the_previous_checkpoint(tmp_path):
    _save(tmp_path, 1)
    tmp = checkpoint.begin(tmp_path, 2)
    (tmp / "payload.txt").write_text("half written")  # the process dies here, before commit
    checkpoint.recover(tmp_path)
    assert checkpoint.latest(tmp_path) == tmp_path / "step-1"
    assert not tmp.exists()


def test_a_damaged_newest_checkpoint_is_skipped_for_the_one_before(tmp_path):
    for step in (1, 2):
        _save(tmp_path, step)
    (tmp_path / "step-2" / "payload.txt").write_text("cut")  # a torn write: size no longer matches the manifest
    assert "payload.txt has 3 bytes" in checkpoint.verify(tmp_path / "step-2")
    assert checkpoint.candidates(tmp_path) == [tmp_path / "step-1"]
    (tmp_path / "step-1" / "trainer_state.json").unlink()
    assert checkpoint.latest(tmp_path) is None


def test_rng_files_hold_only_tensors_and_numbers(tmp_path):
    tmp = checkpoint.begin(tmp_path, 1)
    checkpoint.save_rng(tmp)
    from torch.serialization import get_unsafe_globals_in_checkpoint

    assert get_unsafe_globals_in_checkpoint(str(tmp / "rng" / "rank0.pt")) == []


class _Marker:
    """Unpickling this creates a file: what a hostile checkpoint would do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_an_rng_file_that_would_run_code_is_refused_and_never_run(tmp_path):
    final = _save(tmp_path, 1)
    marker = tmp_path / "pwned"
    torch.save({"python": _Marker(marker)}, final / "rng" / "rank0.pt")
    with pytest.raises(checkpoint.UnsafeCheckpointError, match="names posix.system"):
        checkpoint.load_rng(final)
    assert not marker.exists()


def test_deepspeed_files_are_checked_against_the_allow_list(tmp_path):
    from deepspeed.runtime.zero.config import ZeroStageEnum

    torch.save({"module": {"w": torch.ones(2)}, "stage": ZeroStageEnum.gradients}, tmp_path / "mp_rank_00_model_states.pt")
    checkpoint.check_pickles(tmp_path)  # DeepSpeed's own classes pass
    marker = tmp_path / "pwned"
    torch.save({"module": _Marker(marker)}, tmp_path / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    with pytest.raises(checkpoint.UnsafeCheckpointError, match="posix.system"):
        checkpoint.check_pickles(tmp_path)
    checkpoint.check_pickles(tmp_path, trust=True)  # the user's explicit choice
    (tmp_path / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(pickle.dumps({"module": _Marker(marker)}))
    with pytest.raises(checkpoint.UnsafeCheckpointError, match="not a torch zip checkpoint"):
        checkpoint.check_pickles(tmp_path)
    assert not marker.exists()


_HOLD = """
import sys, time
from rexthinker.train import checkpoint
lock = checkpoint.RunLock(sys.argv[1])
print("ready", flush=True)
time.sleep(120)
"""


def test_a_second_run_on_the_same_folder_is_refused_until_the_first_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(RuntimeError, match=rf"in use by another run \(pid {holder.pid} "):
            checkpoint.RunLock(tmp_path, wait_s=0.5)
    finally:
        holder.kill()  # SIGKILL: the kernel drops a dead process's lock
        holder.wait()
    checkpoint.RunLock(tmp_path, wait_s=5).release()


def test_fault_points_match_name_step_and_rank(monkeypatch):
    assert faults._matches("commit.swap@4", "commit.swap", 4, 0)
    assert not faults._matches("commit.swap@4", "commit.swap", 3, 0)
    assert not faults._matches("commit.swap@4", "commit.prune", 4, 0)
    assert faults._matches("step.mid#1", "step.mid", 9, 1) and not faults._matches("step.mid#1", "step.mid", 9, 0)
    monkeypatch.delenv(faults.ENV, raising=False)
    faults.point("commit.swap", 4)  # unset: nothing happens
