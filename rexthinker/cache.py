"""The on-disk cache of built artefacts (tiny checkpoints), shared by every builder."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    """``$REXTHINKER_CACHE``, else ``~/.cache/rexthinker``."""
    return Path(os.environ.get("REXTHINKER_CACHE", Path.home() / ".cache" / "rexthinker"))


def cached_build(target: Path, marker: str, build: Callable[[Path], object]) -> Path:
    """``target`` once it holds ``marker``; otherwise ``build`` into a temporary sibling folder and
    rename it into place, so concurrent builders race safely and a crash leaves no half folder."""
    if (target / marker).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        if not (tmp / marker).exists():
            raise RuntimeError(f"the build of {target.name} did not write {marker}")
        try:
            tmp.rename(target)
        except OSError:  # another process finished first
            if not (target / marker).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
