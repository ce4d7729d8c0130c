"""Run a training stage as a real subprocess, SIGKILL it at a chosen point, restart it, and compare.

Faults come from ``REXTHINKER_FAULT`` (:mod:`rexthinker.train.faults`): the process kills itself
with SIGKILL at the named point. :func:`killed_then_resumed` runs the stage once with the fault,
checks it died that way and left nothing running, runs it again without the fault (a restart resumes
from whatever the kill left), and returns the output folder; :func:`same_weights` compares the final
weights with an uninterrupted run's, bit for bit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from rexthinker.train import faults

REPO = Path(__file__).resolve().parents[2]


def environment(**extra: str) -> dict[str, str]:
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop(faults.ENV, None)
    return {**env, **extra}


def start(module: str, config: str, overrides: list[str], out: Path, fault: str | None = None) -> subprocess.Popen:
    """``python -m module --config config overrides trainer.output_dir=out`` in its own session
    (so the test can find everything it started), stdout and stderr to ``out.log``."""
    env = environment(**({faults.ENV: fault} if fault else {}))
    cmd = [sys.executable, "-m", module, "--config", config, *overrides, f"trainer.output_dir={out}"]
    with open(f"{out}.log", "a") as log:
        log.write(f"\n$ {faults.ENV}={fault or ''} {' '.join(cmd)}\n")
        log.flush()
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, out: Path, timeout: float = 900) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"{proc.args} did not end within {timeout} s; log: {tail(out)}") from None


def tail(out: Path, chars: int = 4000) -> str:
    path = Path(f"{out}.log")
    return path.read_text()[-chars:] if path.exists() else "(no log)"


def run(module: str, config: str, overrides: list[str], out: Path, fault: str | None = None, timeout: float = 900) -> int:
    return finish(start(module, config, overrides, out, fault), out, timeout)


def survivors(session: int) -> list[str]:
    """Processes still alive in a session (the stage's own, its ranks, its Ray cluster)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != session:
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":  # a zombie holds nothing; its parent has not reaped it yet
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {cmdline[:200]}")
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    return found


def wait_until_gone(session: int, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := survivors(session)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def killed_then_resumed(module: str, config: str, overrides: list[str], out: Path, fault: str, timeout: float = 900,
                        linger_s: float = 30) -> None:  # fmt: skip
    """Run with ``fault`` (it must die by SIGKILL, leaving no process behind within ``linger_s``),
    then again without."""
    proc = start(module, config, overrides, out, fault)
    code = finish(proc, out, timeout)
    assert code in (-signal.SIGKILL, 1, 137), f"expected a SIGKILL at {fault}, got exit code {code}; log: {tail(out)}"
    if code != -signal.SIGKILL:  # a launcher reports its rank's death as a failure: check it was the kill
        assert "Signal 9" in tail(out, 20000) or "SIGKILL" in tail(out, 20000), f"{fault}: not killed; log: {tail(out)}"
    start_wait = time.monotonic()
    left = wait_until_gone(proc.pid, linger_s)
    assert not left, f"processes left {linger_s:.0f} s after the kill at {fault}: {left}"
    with open(f"{out}.log", "a") as log:
        log.write(f"\n[harness] every process of the killed run was gone {time.monotonic() - start_wait:.1f} s after it died\n")
    code = run(module, config, overrides, out, timeout=timeout)
    assert code == 0, f"the restart after {fault} failed ({code}); log: {tail(out)}"


def same_weights(a: Path, b: Path) -> None:
    left, right = load_file(str(a / "final" / "model.safetensors")), load_file(str(b / "final" / "model.safetensors"))
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), f"{key} differs between {a} and {b}"
