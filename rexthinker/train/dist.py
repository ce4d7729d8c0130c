"""Process-group helpers. One code path for 1 process, N CPU processes (gloo) and N GPUs (nccl).

A stage's entry point calls :func:`relaunch` first: when the config asks for several processes and
this one was not started by a launcher, it re-executes itself under ``torch.distributed.run``, so
``bash recipes/sft.sh trainer.nproc=4`` needs no launcher in the recipe.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch
import torch.distributed as torch_dist


def rank() -> int:
    return torch_dist.get_rank() if torch_dist.is_initialized() else int(os.environ.get("RANK", 0))


def world_size() -> int:
    return torch_dist.get_world_size() if torch_dist.is_initialized() else int(os.environ.get("WORLD_SIZE", 1))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    return rank() == 0


def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank())
    return torch.device("cpu")


def compute_dtype() -> torch.dtype:
    """What ``"auto"`` means for every dtype setting (learner precision, rollout, inference and
    evaluation engines): bf16 on CUDA, fp32 on CPU."""
    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def resolve_dtype(name: str) -> str:
    """A dtype name for vLLM or transformers, with ``"auto"`` replaced by :func:`compute_dtype`'s."""
    return str(compute_dtype()).removeprefix("torch.") if name == "auto" else name


_OWNED = False  # whether init() created the default group (so cleanup() may destroy it)


def init() -> None:
    """Join the process group when launched with several processes; a no-op for one."""
    global _OWNED
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not torch_dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank())
        torch_dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        _OWNED = True


def barrier() -> None:
    if torch_dist.is_initialized():
        torch_dist.barrier()


def _all_reduce(values: list[float], op) -> list[float]:
    """Element-wise reduction over ranks of a list of numbers, in one collective (float64)."""
    if not torch_dist.is_initialized():
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device() if torch.cuda.is_available() else "cpu")
    torch_dist.all_reduce(tensor, op=op)
    return tensor.tolist()


def all_reduce_sum(value: float) -> float:
    return _all_reduce([value], torch_dist.ReduceOp.SUM)[0]


def all_reduce_max(value: float) -> float:
    return _all_reduce([value], torch_dist.ReduceOp.MAX)[0]


def all_reduce_sums(values: list[float]) -> list[float]:
    """Element-wise sums over ranks of a list of numbers, in one collective."""
    return _all_reduce(values, torch_dist.ReduceOp.SUM)


def broadcast_object(obj):
    if not torch_dist.is_initialized():
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup() -> None:
    """Destroy the default group if this module created it; a group someone else made (an
    in-process vLLM engine makes one) is left alone."""
    global _OWNED
    if _OWNED and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
    _OWNED = False


def relaunch(nproc: int, module: str, argv: list[str]) -> int | None:
    """Re-run ``python -m module argv`` under torchrun with ``nproc`` processes, unless this process
    already is one of them (or ``nproc`` is 1). Returns the exit code when it relaunched."""
    if nproc <= 1 or "LOCAL_RANK" in os.environ:
        return None
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env.setdefault("DS_ACCELERATOR", "cpu")
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", module, *argv]
    print("launching: " + " ".join(cmd[2:]), flush=True)
    return subprocess.call(cmd, env=env)
