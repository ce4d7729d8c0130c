"""Open any supported sample file by path, as a random-access sequence of :class:`RefSample`.

- ``<prefix>`` or ``<prefix>.annotations.tsv``: HumanRef-CoT TSV trio (seeks, never scans);
- ``*.jsonl``: HumanRef annotations (images resolved next to the file, under ``images/``);
- ``*.parquet``: GRPO rows (boxes stay in the frame the file records, 0-1000 for Qwen3-VL / Qwen3.5,
  or else in Qwen2.5-VL's model frame of the given pixel limits).

Several paths are concatenated (HumanRef-CoT's main and rejection files, say). Every row is read
and checked when a file is opened, the CoT TSV's lazy reader included, so a bad row shows before a
training stage takes its first step: ``on_error="raise"`` stops there naming the file and line,
``"skip"`` leaves it out of the sample index (a resumed run never meets it either) and lists it in
the report (:func:`open_training_samples` prints it and writes ``data_errors.jsonl``).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rexthinker.data.cot_tsv import CotTsvReader, cot_paths
from rexthinker.data.errors import ErrorReport
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
    on_error: Literal["raise", "skip"] = "raise"  # a bad row stops the stage before step 1, or is left out and listed


class CotSamples(Sequence):
    """Sample ``i`` of a HumanRef-CoT file is the first expression of its ``i``-th good annotation
    row: every row is checked once here (:meth:`CotTsvReader.validate`), then read on demand."""

    def __init__(self, reader: CotTsvReader):
        self.reader = reader
        self.rows = reader.validate()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> RefSample:
        return self.reader[self.rows[index]]


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


def open_one(path: str | os.PathLike, on_error: str = "raise", min_pixels: int | None = None, max_pixels: int | None = None,
             report: ErrorReport | None = None) -> Sequence[RefSample]:  # fmt: skip
    """One file, every row checked; bad rows raise or, under ``"skip"``, go to ``report`` (logged
    when None)."""
    text = str(path)
    if text.endswith(".annotations.tsv"):
        text = text[: -len(".annotations.tsv")]
    if Path(text + ".images.tsv").exists():
        images, annotations, lineidx = cot_paths(text)
        return CotSamples(CotTsvReader(images, annotations, lineidx if lineidx.exists() else None, on_error=on_error, report=report))
    p = Path(path)
    if p.is_dir() and (p / "annotations.jsonl").exists():
        p = p / "annotations.jsonl"
    if p.suffix == ".jsonl" and p.exists():
        return read_humanref(p, image_root=p.parent / "images", on_error=on_error, report=report)
    if p.suffix == ".parquet" and p.exists():
        if (min_pixels is None) != (max_pixels is None):
            raise ValueError("pass both min_pixels and max_pixels (or neither) to read a GRPO parquet")
        return read_grpo_parquet(p, on_error=on_error, min_pixels=min_pixels, max_pixels=max_pixels, report=report)
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


def open_training_samples(data: DataConfig, output_dir: str | os.PathLike, stage: str, main: bool = True, **kwargs) -> Sequence[RefSample]:
    """``data.train`` for a training stage, every row checked before step 1 under ``data.on_error``.
    The bad rows left out and the rows kept with a warning are printed as a summary and, by the
    ``main`` process, written to ``<output_dir>/data_errors.jsonl`` (:meth:`ErrorReport.write_jsonl`)."""
    report = ErrorReport()
    samples = open_samples(data.train, on_error=data.on_error, report=report, **kwargs)
    path = Path(output_dir) / "data_errors.jsonl"
    if main and (report.errors or report.warnings):
        report.write_jsonl(path)
        print(f"[{stage}] data.train: {report}; every row listed in {path}", flush=True)
    elif main:
        path.unlink(missing_ok=True)  # a resumed run's data may have been fixed since
    return samples


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
