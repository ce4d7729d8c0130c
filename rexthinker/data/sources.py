"""Open any supported sample file by path, as a random-access sequence of :class:`RefSample`.

- ``<prefix>`` or ``<prefix>.annotations.tsv``: HumanRef-CoT TSV trio (seeks, never scans);
- ``*.jsonl``: HumanRef annotations (images resolved next to the file, under ``images/``);
- ``*.parquet``: GRPO rows (boxes stay in the model frame of the given pixel limits).

Several paths are concatenated (HumanRef-CoT's main and rejection files, say).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rexthinker.data.cot_tsv import CotTsvReader, cot_paths
from rexthinker.data.grpo_parquet import read_grpo_parquet
from rexthinker.data.humanref import read_humanref
from rexthinker.data.sample import RefSample


@dataclass
class DataConfig:
    """The ``data`` section of every training stage."""

    train: list[str] = field(default_factory=list)  # CoT TSV prefixes / *.annotations.tsv, HumanRef *.jsonl, GRPO *.parquet
    val: list[str] = field(default_factory=list)
    max_samples: int | None = None  # cap on training samples (after concatenation)
    template: str = "train"  # user-text variant, see rexthinker.contracts.hint.USER_TEMPLATES
    instruction: Literal["system", "user_suffix", "none"] = "system"


class CotSamples(Sequence):
    """Sample ``i`` of a HumanRef-CoT file is the first expression of annotation row ``i``."""

    def __init__(self, reader: CotTsvReader):
        self.reader = reader

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> RefSample:
        return self.reader[index]


class Concat(Sequence):
    def __init__(self, parts: list[Sequence[RefSample]]):
        self.parts = parts
        self.ends = []
        total = 0
        for part in parts:
            total += len(part)
            self.ends.append(total)

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    def __getitem__(self, index: int) -> RefSample:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        part = bisect.bisect_right(self.ends, index)
        start = self.ends[part - 1] if part else 0
        return self.parts[part][index - start]


def open_one(path: str | os.PathLike, on_error: str = "raise", min_pixels: int | None = None, max_pixels: int | None = None) -> Sequence[RefSample]:
    text = str(path)
    if text.endswith(".annotations.tsv"):
        text = text[: -len(".annotations.tsv")]
    if Path(text + ".images.tsv").exists():
        images, annotations, lineidx = cot_paths(text)
        return CotSamples(CotTsvReader(images, annotations, lineidx if lineidx.exists() else None, on_error=on_error))
    p = Path(path)
    if p.is_dir() and (p / "annotations.jsonl").exists():
        p = p / "annotations.jsonl"
    if p.suffix == ".jsonl" and p.exists():
        return read_humanref(p, image_root=p.parent / "images", on_error=on_error)
    if p.suffix == ".parquet" and p.exists():
        if (min_pixels is None) != (max_pixels is None):
            raise ValueError("pass both min_pixels and max_pixels (or neither) to read a GRPO parquet")
        return read_grpo_parquet(p, on_error=on_error, min_pixels=min_pixels, max_pixels=max_pixels)
    raise FileNotFoundError(
        f"{path}: not a HumanRef-CoT prefix (<prefix>.images.tsv), a HumanRef annotations.jsonl "
        "(or its folder) or a GRPO .parquet file"
    )


def open_samples(paths: list[str] | str, **kwargs) -> Sequence[RefSample]:
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise ValueError("no data paths given")
    parts = [open_one(p, **kwargs) for p in paths]
    return parts[0] if len(parts) == 1 else Concat(parts)


class Head(Sequence):
    """The first ``n`` items of a sequence (all of them when it is shorter)."""

    def __init__(self, items: Sequence, n: int):
        self.items, self.n = items, min(n, len(items))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.items[i]
