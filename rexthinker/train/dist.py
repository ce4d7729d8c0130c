"""Process-group helpers. One code path for 1 process, N CPU processes (gloo) and N GPUs (nccl).

A stage's entry point calls :func:`relaunch` first: when the config asks for several processes and
this one was not started by a launcher, it re-executes itself under ``torch.distributed.run``, so
``bash recipes/sft.sh trainer.nproc=4`` needs no launcher in the recipe.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

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
        if "TORCHELASTIC_RUN_ID" in os.environ:  # a rank of torchrun (not of a Ray actor)
            _watch_launcher()
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank())
        torch_dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo", timeout=collective_timeout())
        _OWNED = True


def collective_timeout() -> timedelta:
    """How long a collective may wait for the other ranks before it fails instead of hanging:
    ``REXTHINKER_COLLECTIVE_TIMEOUT_S`` seconds (default 1800)."""
    return timedelta(seconds=float(os.environ.get("REXTHINKER_COLLECTIVE_TIMEOUT_S", "1800")))


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
    already is one of them (or ``nproc`` is 1). Returns the exit code when it relaunched.

    The launcher dies with this process, however it dies: the kernel sends it SIGTERM when its
    parent exits (``PR_SET_PDEATHSIG``), and torchrun then stops the ranks; SIGTERM and SIGINT sent
    here are passed on. Each rank also exits when its launcher is gone (:func:`init`). So a killed
    run leaves no rank behind to race its restart."""
    if nproc <= 1 or "LOCAL_RANK" in os.environ:
        return None
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env.setdefault("DS_ACCELERATOR", "cpu")
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", module, *argv]
    print("launching: " + " ".join(cmd[2:]), flush=True)
    child = subprocess.Popen([sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *cmd], env=env)

    def forward(signum, _frame) -> None:
        child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# Run as ``python -c _DIE_WITH_PARENT <parent pid> <command...>``: ask the kernel for SIGTERM when the
# parent exits (PR_SET_PDEATHSIG, Linux; kept across exec), then become the command. A parent that
# died before the request was made is caught by the pid check.
_DIE_WITH_PARENT = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""


def _watch_launcher(interval_s: float = 1.0) -> None:
    """A rank started by torchrun exits when torchrun is gone (killed with SIGKILL, it cannot stop
    its ranks): a daemon thread polls the parent pid, which changes when the parent dies."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                print(f"[dist] rank {rank()}: launcher (pid {parent}) is gone; exiting", file=sys.stderr, flush=True)
                os._exit(1)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()
