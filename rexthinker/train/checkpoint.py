"""Checkpoints that are either complete or absent.

A checkpoint is written into ``<root>/.tmp-step-<N>``, then renamed to ``<root>/step-<N>`` and
stamped with ``COMPLETE``; a crash at any point leaves at most a temporary folder that the next save
clears. ``latest`` only ever returns complete checkpoints; ``prune`` keeps the newest ``keep``.

Layout of ``step-<N>``::

    hf/                 Hugging Face model + processor (from_pretrained / vLLM load it)
    learner/            weights, optimizer, schedule (DeepSpeed shards under ZeRO)
    trainer_state.json  step, data position, anything the stage needs to resume
    rng/rank<r>.pt      RNG states of every rank
    COMPLETE
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from rexthinker.train import dist

STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dirs(root: Path) -> list[tuple[int, Path]]:
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and (p / "COMPLETE").exists()]
    return sorted(found)


def latest(root: Path) -> Path | None:
    found = step_dirs(root)
    return found[-1][1] if found else None


def begin(root: Path, step: int) -> Path:
    """The temporary folder to write step ``step`` into (all ranks get the same path)."""
    tmp = Path(root) / f".tmp-step-{step}"
    if dist.is_main():
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "rng").mkdir(parents=True)
    dist.barrier()
    return tmp


def save_rng(folder: Path) -> None:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    torch.save(state, Path(folder) / "rng" / f"rank{dist.rank()}.pt")


def load_rng(folder: Path) -> None:
    path = Path(folder) / "rng" / f"rank{dist.rank()}.pt"
    if not path.exists():
        raise FileNotFoundError(f"no RNG state for rank {dist.rank()} in {folder} (saved with another world size?)")
    state = torch.load(path, weights_only=False)
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def commit(tmp: Path, trainer_state: dict, keep: int | None = None) -> Path:
    """Stamp, rename into place and prune; all ranks call it after writing their parts."""
    dist.barrier()
    final = tmp.parent / tmp.name.removeprefix(".tmp-")
    if dist.is_main():
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        (final / "COMPLETE").write_text("ok\n")
        if keep:
            for _, old in step_dirs(tmp.parent)[:-keep]:
                if old != final:  # never the one just written, though an earlier run here may have got further
                    shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def read_state(folder: Path) -> dict:
    return json.loads((Path(folder) / "trainer_state.json").read_text())
