"""SFT killed with SIGKILL at chosen points, then restarted: the final weights equal an uninterrupted
run's bit for bit (fp32, CPU), nothing is left running, and no half checkpoint is ever loaded.

One case runs in the default suite (one process, a kill between save and prune); the others, with
two DeepSpeed ranks under torchrun, are ``-m slow``."""

from __future__ import annotations

import signal
import time

import pytest

from rexthinker.train import checkpoint
from tests.reliability import harness

CONFIG = "recipes/configs/sft_demo.yaml"


def overrides(tiny_model_path, sft_data, *extra: str) -> list[str]:
    return [
        f"model.path={tiny_model_path}", f"data.train=[{sft_data / 'train'}]", f"data.val=[{sft_data / 'val'}]",
        "learner.precision=fp32", "optim.lr=1e-3", "optim.warmup_ratio=0.0", "trainer.max_steps=4",
        "trainer.save_every=2", "trainer.keep_checkpoints=1", "trainer.grad_accum=1", "trainer.report_to=[jsonl]",
        "data.max_length=4096", "eval.enabled=false", *extra,
    ]  # fmt: skip


ONE = ["trainer.nproc=1", "learner.strategy=single", "trainer.per_device_batch_size=4"]
TWO = ["trainer.nproc=2", "learner.strategy=zero2", "trainer.per_device_batch_size=2"]


@pytest.fixture(scope="module")
def straight_one(tiny_model_path, sft_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "one"
    assert harness.run("rexthinker.sft", CONFIG, overrides(tiny_model_path, sft_data, *ONE), out) == 0, harness.tail(out)
    return out


def test_a_kill_between_save_and_prune_resumes_to_the_same_weights(tiny_model_path, sft_data, straight_one, tmp_path):
    out = tmp_path / "killed"
    harness.killed_then_resumed("rexthinker.sft", CONFIG, overrides(tiny_model_path, sft_data, *ONE), out, "commit.prune@2")
    assert "resumed from" in harness.tail(out) and "step-2 at step 2" in harness.tail(out)
    harness.same_weights(straight_one, out)
    assert [s for s, _ in checkpoint.step_dirs(out / "checkpoints")] == [4]


def test_a_second_run_on_the_same_output_folder_is_refused(tiny_model_path, sft_data, tmp_path):
    out = tmp_path / "busy"
    lock = checkpoint.RunLock(out)  # held as a running trainer holds it
    try:
        start = time.monotonic()
        code = harness.run("rexthinker.sft", CONFIG, overrides(tiny_model_path, sft_data, *ONE), out, timeout=300)
        assert code != 0 and "is in use by another run" in harness.tail(out), harness.tail(out)
        assert time.monotonic() - start < 120
    finally:
        lock.release()


@pytest.fixture(scope="module")
def straight_two(tiny_model_path, sft_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "two"
    assert harness.run("rexthinker.sft", CONFIG, overrides(tiny_model_path, sft_data, *TWO), out) == 0, harness.tail(out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["step.mid@3", "step.mid@3#1", "commit.stamped@2", "commit.prune@2", "eval.end",
                                   "commit.swap@4", "commit.delete_old@4"])  # fmt: skip
def test_two_ranks_killed_then_resumed_end_on_the_same_weights(tiny_model_path, sft_data, straight_two, tmp_path, fault):
    """``eval.end`` kills after the final save; the restart saves step 4 again, so its commit replaces
    a complete checkpoint of the same step. The last two cases kill inside that replacement (the
    first run is killed in the final evaluation, the second inside the commit of step 4)."""
    out = tmp_path / "killed"
    extra = [*TWO, "eval.enabled=true", "eval.num_samples=2", "eval.backend=hf", "eval.max_new_tokens=8"]
    args = overrides(tiny_model_path, sft_data, *extra)
    if fault.startswith(("commit.swap@4", "commit.delete_old@4")):
        code = harness.run("rexthinker.sft", CONFIG, args, out, fault="eval.end")
        assert code != 0, harness.tail(out)
    harness.killed_then_resumed("rexthinker.sft", CONFIG, args, out, fault)
    harness.same_weights(straight_two, out)
    assert checkpoint.latest(out / "checkpoints") == out / "checkpoints" / "step-4"


@pytest.mark.slow
def test_killing_the_launcher_leaves_no_rank_running(tiny_model_path, sft_data, straight_two, tmp_path):
    """SIGKILL to the command a user started (it relaunched itself under torchrun): torchrun and both
    ranks go too, and a restart resumes."""
    out = tmp_path / "launcher"
    args = overrides(tiny_model_path, sft_data, *TWO, "trainer.max_steps=4")
    proc = harness.start("rexthinker.sft", CONFIG, args, out)
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "step-2" / "COMPLETE").exists():
        assert proc.poll() is None and time.monotonic() < deadline, harness.tail(out)
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = harness.wait_until_gone(proc.pid, timeout=30)
    assert not left, left
    assert harness.run("rexthinker.sft", CONFIG, args, out) == 0, harness.tail(out)
    harness.same_weights(straight_two, out)
