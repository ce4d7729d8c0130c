"""Checkpoints that are either complete or absent, and never run code when loaded.

A checkpoint is written into ``<root>/.tmp-step-<N>``. :func:`commit` writes the trainer state,
fsyncs every file, stamps ``COMPLETE`` (a manifest of every file and its size) and only then renames
the folder to ``<root>/step-<N>``. A checkpoint of the same step that is already there (a restart
that saves step N again) is first moved aside to ``.old-step-<N>`` and deleted only once the new one
is in place, so a kill at any point leaves one complete copy of every step that was complete;
:func:`recover` puts it back. :func:`latest` returns the newest checkpoint whose files match its
manifest; a run that cannot load it goes on to the next (:func:`candidates`).

Layout of ``step-<N>``::

    hf/                 Hugging Face model + processor (from_pretrained / vLLM load it)
    adapter/            LoRA runs only: the adapters in peft's format (hf/ has them merged)
    learner/            weights, optimizer, schedule (DeepSpeed shards under ZeRO)
    trainer_state.json  step, data position, anything the stage needs to resume
    rng/rank<r>.pt      RNG states of every rank, as tensors and numbers (``weights_only`` loads)
    COMPLETE            {"files": {relative path: size}}

Nothing in a checkpoint is unpickled with code: our files load with ``weights_only=True``, and
DeepSpeed's (which it unpickles in full) are checked first by :func:`check_pickles` against an
allow-list of the classes DeepSpeed writes, unless the user trusts the folder (``trust_pickle``).
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import random
import re
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from rexthinker.train import dist, faults

STEP_DIR = re.compile(r"^step-(\d+)$")
COMPLETE = "COMPLETE"

DEEPSPEED_GLOBALS = frozenset({
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
})  # fmt: skip
"""What DeepSpeed's ZeRO-2/3 model and optimizer states hold beyond tensors and plain containers."""


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint file that would run code (or import classes we do not expect) when unpickled."""


# --- writing ----------------------------------------------------------------------------------
def begin(root: Path, step: int) -> Path:
    """The temporary folder to write step ``step`` into (all ranks get the same path)."""
    tmp = Path(root) / f".tmp-step-{step}"
    if dist.is_main():
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "rng").mkdir(parents=True)
    dist.barrier()
    return tmp


def commit(tmp: Path, trainer_state: dict, keep: int | None = None) -> Path:
    """Stamp, move into place and prune; all ranks call it after writing their parts."""
    dist.barrier()
    root, final = tmp.parent, tmp.parent / tmp.name.removeprefix(".tmp-")
    step = int(STEP_DIR.match(final.name).group(1))
    if dist.is_main():
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2) + "\n")
        paths = sorted(tmp.rglob("*"))
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in paths if p.is_file()}
        for name in files:
            _fsync(tmp / name)
        _write_synced(tmp / COMPLETE, json.dumps({"files": files}) + "\n")
        for folder in [tmp, *(p for p in paths if p.is_dir())]:
            _fsync(folder)
        faults.point("commit.stamped", step)
        old = root / f".old-{final.name}"
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            _fsync(root)
            faults.point("commit.swap", step)
        tmp.rename(final)
        _fsync(root)
        if old.exists():
            _remove(old, step)
        faults.point("commit.prune", step)
        if keep:
            for _, older in step_dirs(root)[:-keep]:
                if older != final:  # never the one just written, though an earlier run here may have got further
                    _remove(older, step)
    dist.barrier()
    return final


def _remove(folder: Path, step: int) -> None:
    """Delete a checkpoint folder, its ``COMPLETE`` stamp first (a half-deleted folder is never
    taken for a checkpoint)."""
    (folder / COMPLETE).unlink(missing_ok=True)
    for i, path in enumerate(sorted(folder.rglob("*"), reverse=True)):
        path.unlink() if path.is_file() or path.is_symlink() else path.rmdir()
        if i == 1:
            faults.point("commit.delete_old", step)
    folder.rmdir()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def save_rng(folder: Path) -> None:
    """This rank's Python, NumPy, torch (and CUDA) RNG states as tensors and numbers."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "words": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    torch.save(state, Path(folder) / "rng" / f"rank{dist.rank()}.pt")


# --- finding and reading ----------------------------------------------------------------------
def step_dirs(root: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every stamped checkpoint under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and (p / COMPLETE).exists()]
    return sorted(found)


def verify(folder: Path) -> str | None:
    """Why ``folder`` does not hold every file its manifest lists, at its size; None when it does."""
    try:
        manifest = json.loads((Path(folder) / COMPLETE).read_text())
    except (OSError, ValueError) as exc:
        return f"unreadable {COMPLETE}: {exc}"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return None  # stamped before manifests existed: nothing to compare against
    for name, size in manifest["files"].items():
        path = Path(folder) / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {size}"
    return None


def candidates(root: Path) -> list[Path]:
    """Checkpoints to resume from, newest first, without those whose files do not match their
    manifest (each one skipped is logged)."""
    usable = []
    for _, folder in reversed(step_dirs(root)):
        problem = verify(folder)
        if problem:
            print(f"[checkpoint] skipping {folder}, it is damaged: {problem}", flush=True)
        else:
            usable.append(folder)
    return usable


def latest(root: Path) -> Path | None:
    found = candidates(root)
    return found[0] if found else None


def recover(root: Path) -> None:
    """Finish what a kill inside :func:`commit` left (main process only, before looking for a
    checkpoint). The newest stamped copy of a step wins: a stamped temporary folder whose rename did
    not happen is moved into place; an older copy moved aside is deleted when a stamped ``step-N``
    exists, or else comes back. Unstamped temporary folders are cleared."""
    root = Path(root)
    if not root.is_dir():
        return
    for path in sorted(root.iterdir()):
        if path.name.startswith(".tmp-step-"):
            final = root / path.name.removeprefix(".tmp-")
            if (path / COMPLETE).exists():
                if final.exists():
                    _remove(final, -1)
                path.rename(final)
            else:
                shutil.rmtree(path)
    for path in sorted(root.iterdir()):
        if path.name.startswith(".old-step-"):
            final = root / path.name.removeprefix(".old-")
            if not (final / COMPLETE).exists() and (path / COMPLETE).exists():
                shutil.rmtree(final, ignore_errors=True)
                path.rename(final)
            else:
                _remove(path, -1)
    _fsync(root)


def load_rng(folder: Path) -> None:
    path = Path(folder) / "rng" / f"rank{dist.rank()}.pt"
    if not path.exists():
        raise FileNotFoundError(f"no RNG state for rank {dist.rank()} in {folder} (saved with another world size?)")
    state = load_tensors(path)
    p, n = state["python"], state["numpy"]
    random.setstate((p["version"], tuple(p["words"].tolist()), p["gauss"]))
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def load_tensors(path: Path, map_location="cpu"):
    """``torch.load`` of a file that may hold only tensors and plain containers, numbers, strings;
    anything else is an :class:`UnsafeCheckpointError` naming the file, and nothing is run."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:  # what torch raises for a global outside its safe set
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"it names {found.group(1)}" if found else "it holds more than tensors and plain data"
        raise UnsafeCheckpointError(
            f"{path}: refusing to unpickle: {what}. "
            "Checkpoints written by this version hold none; was the file replaced, or written by an older version?"
        ) from exc


def check_pickles(folder: Path, trust: bool = False, allowed: frozenset[str] = DEEPSPEED_GLOBALS) -> None:
    """Before a library unpickles every ``*.pt`` under ``folder`` in full (DeepSpeed does): each must
    be a torch zip file whose pickle names no class beyond plain data, tensors and ``allowed``.
    Checked by reading the pickle's opcodes, never by running it. ``trust`` skips the check."""
    if trust:
        return
    from torch.serialization import get_unsafe_globals_in_checkpoint

    for path in sorted(Path(folder).rglob("*.pt")):
        if not zipfile.is_zipfile(path):
            raise UnsafeCheckpointError(f"{path}: not a torch zip checkpoint (a bare pickle could run code); "
                                        "pass --trust-pickle / trainer.trust_pickle=true only if you made this file")  # fmt: skip
        try:
            found = set(get_unsafe_globals_in_checkpoint(str(path)))
        except Exception as exc:
            raise UnsafeCheckpointError(f"{path}: cannot read its pickle to check it: {exc}") from exc
        unexpected = sorted(found - allowed)
        if unexpected:
            raise UnsafeCheckpointError(
                f"{path}: unpickling it would import {unexpected}, which a DeepSpeed checkpoint does not hold; refusing "
                "(pass --trust-pickle / trainer.trust_pickle=true only if you made this file)"
            )


def read_state(folder: Path) -> dict:
    return json.loads((Path(folder) / "trainer_state.json").read_text())


# --- one writer per output folder -------------------------------------------------------------
class RunLock:
    """An exclusive ``flock`` on ``<folder>/.lock``, held for a run's lifetime by its main process.

    The kernel releases it when the process dies, however it dies, so a crashed run never leaves a
    stale lock. A second run on the same folder waits up to ``wait_s`` (a restart racing the
    previous run's dying processes) and is then refused, naming the holder."""

    def __init__(self, folder: Path, wait_s: float = 15.0):
        self.path = Path(folder) / ".lock"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(self._fd, 200, 0).decode(errors="replace").strip() or "unknown"
                    os.close(self._fd)
                    raise RuntimeError(
                        f"{self.path.parent} is in use by another run ({holder}); two runs writing one output folder "
                        "would overwrite each other's checkpoints. Stop it, or choose another trainer.output_dir."
                    ) from None
                time.sleep(0.5)
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"pid {os.getpid()} on {os.uname().nodename}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
