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
    monkeypatch.setattr(dist.subprocess, "call", lambda cmd, env: calls.append((cmd, env)) or 7)
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
    assert cmd == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "rexthinker.sft", *argv]
    if not torch.cuda.is_available():
        assert env["DS_ACCELERATOR"] == "cpu"
        assert env["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert "launching: torch.distributed.run --standalone --nproc_per_node=2 -m rexthinker.sft a=1 b=x y" in capsys.readouterr().out


def test_auto_dtype_is_bf16_on_cuda_and_fp32_on_cpu():
    expected = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    assert dist.compute_dtype() == expected
    assert dist.resolve_dtype("auto") == {torch.bfloat16: "bfloat16", torch.float32: "float32"}[expected]
    assert dist.resolve_dtype("float16") == "float16" and dist.resolve_dtype("bfloat16") == "bfloat16"
