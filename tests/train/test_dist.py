"""Process-group helpers without a process group: one process, or the environment a launcher sets."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from rexthinker.train import dist


@pytest.fixture
def no_group(monkeypatch):
    """No default process group, whatever an earlier test in this session (an in-process vLLM) made."""
    monkeypatch.setattr(dist.torch_dist, "is_initialized", lambda: False)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


def test_one_process_is_rank_zero_of_one(no_group):
    assert (dist.rank(), dist.world_size(), dist.local_rank(), dist.is_main()) == (0, 1, 0, True)
    assert dist.device() == (torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))


def test_launcher_environment_sets_the_ranks(no_group, monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert (dist.rank(), dist.world_size(), dist.local_rank(), dist.is_main()) == (3, 4, 1, False)


def test_reductions_and_broadcast_are_identities_on_one_process(no_group):
    assert dist.all_reduce_sum(3) == 3.0 and isinstance(dist.all_reduce_sum(3), float)
    assert dist.all_reduce_max(-2.5) == -2.5
    assert dist.all_reduce_sums([1, 2.5, 0]) == [1.0, 2.5, 0.0]
    assert all(isinstance(v, float) for v in dist.all_reduce_sums([1, 2]))
    obj = {"path": "step-3"}
    assert dist.broadcast_object(obj) is obj
    assert dist.barrier() is None


def test_init_and_cleanup_do_nothing_for_one_process(no_group, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("no process group for one process")

    monkeypatch.setattr(dist.torch_dist, "init_process_group", refuse)
    monkeypatch.setattr(dist.torch_dist, "destroy_process_group", refuse)
    dist.init()
    assert dist._OWNED is False
    dist.cleanup()


def test_relaunch_only_when_asked_for_several_processes_and_not_launched(monkeypatch, capsys):
    calls = []

    class Launched:
        def __init__(self, cmd, env):
            calls.append((cmd, env))

        def wait(self):
            return 7

    monkeypatch.setattr(dist.subprocess, "Popen", Launched)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert dist.relaunch(1, "rexthinker.sft", ["a=1"]) is None
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert dist.relaunch(2, "rexthinker.sft", ["a=1"]) is None
    assert calls == []

    monkeypatch.delenv("LOCAL_RANK")
    argv = ["a=1", "b=x y"]
    assert dist.relaunch(2, "rexthinker.sft", argv) == 7
    ((cmd, env),) = calls
    assert cmd[:4] == [sys.executable, "-c", dist._DIE_WITH_PARENT, str(os.getpid())]  # dies with this process, then execs:
    assert cmd[4:] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "rexthinker.sft", *argv]
    if not torch.cuda.is_available():
        assert env["DS_ACCELERATOR"] == "cpu"
        assert env["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert "launching: torch.distributed.run --standalone --nproc_per_node=2 -m rexthinker.sft a=1 b=x y" in capsys.readouterr().out


def test_auto_dtype_is_bf16_on_cuda_and_fp32_on_cpu():
    expected = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    assert dist.compute_dtype() == expected
    assert dist.resolve_dtype("auto") == {torch.bfloat16: "bfloat16", torch.float32: "float32"}[expected]
    assert dist.resolve_dtype("float16") == "float16" and dist.resolve_dtype("bfloat16") == "bfloat16"


_BARRIER = """
import os, sys, time
from rexthinker.train import dist
dist.init()
if dist.rank() == 1:
    time.sleep(60)  # rank 1 hangs (a dead rank's closed socket fails at once; a hung one never answers)
    os._exit(0)
start = time.monotonic()
try:
    dist.barrier()
except Exception as exc:
    print(f"failed after {time.monotonic() - start:.1f} s: {type(exc).__name__}", flush=True)
    sys.exit(3)
"""


def test_a_collective_without_its_partner_fails_within_the_timeout(tmp_path):
    """REXTHINKER_COLLECTIVE_TIMEOUT_S bounds every collective: rank 0 waits 3 s, then raises."""
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), REXTHINKER_COLLECTIVE_TIMEOUT_S="3")  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, "-c", _BARRIER], env=env, stdout=subprocess.PIPE, text=True))
    out0, _ = procs[0].communicate(timeout=120)
    procs[1].kill()
    procs[1].wait(timeout=60)
    assert procs[0].returncode == 3, out0
    seconds = float(out0.split("failed after ")[1].split(" s")[0])
    assert 2.5 <= seconds < 30, out0
