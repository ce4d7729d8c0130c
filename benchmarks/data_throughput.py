"""Throughput of the data tools on SynthRef-size images (320-480 x 200-300 PNG).

    .venv/bin/python benchmarks/data_throughput.py                    # 2,000 rows, best of 3
    .venv/bin/python benchmarks/data_throughput.py --rows 5000 --repeats 1 --workers 4

Measures, and prints as a table:

1. ``prepare`` without a detector (supplied candidates, both outputs: GRPO parquet and HumanRef),
   one worker pinned to one core: the whole job (read and check each image, match targets, convert
   boxes to the model frame, write the parts, merge) timed end to end after a warm-up run, so
   one-time imports are not counted. Target: at least 200 rows/s per core. Then the same job with
   ``--workers`` processes, to show the scaling.
2. HumanRef-CoT TSV random access: ``reader[i]`` for shuffled indices (seek, JSON, base64 decode,
   image completeness check), and the same followed by a full pixel decode (``load_image``), on
   one core and spread over ``--workers`` processes as DataLoader workers would. Target: at least
   2,000 samples/s with the decode.

The reference tools have no such measurement; these are ours.
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: it reads its settings then

import argparse
import json
import multiprocessing
import random
import shutil
import tempfile
import time
from pathlib import Path

from data_tools.row_job import PrepareOptions, jsonl_items, prepare
from rexthinker.data.cot_tsv import CotTsvReader, write_cot_tsv
from rexthinker.data.humanref import write_humanref
from rexthinker.data.synthref import generate


def make_inputs(root: Path, rows: int, seed: int) -> tuple[Path, Path, Path]:
    """SynthRef rows as a prepare input (JSONL + images) and as HumanRef-CoT TSV files."""
    samples = generate(rows, seed=seed, workers=min(4, os.cpu_count() or 1))
    write_humanref(samples, root / "src")
    with open(root / "rows.jsonl", "w") as fh:
        for s in samples:
            row = {"id": s.id, "image_name": s.image_name, "referring": s.referring, "category": s.category,
                   "ans": s.answer_boxes, "candidate_boxes": s.candidate_boxes}  # fmt: skip
            fh.write(json.dumps(row) + "\n")
    _, annotations, _ = write_cot_tsv(samples, root / "cot" / "bench")
    return root / "rows.jsonl", root / "src" / "images", annotations


def time_prepare(rows: Path, images: Path, out: Path, workers: int, repeats: int) -> float:
    """Best wall time of ``repeats`` fresh runs."""
    best = float("inf")
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        prepare(jsonl_items(rows), images, out, PrepareOptions(candidates="supplied"), workers=workers)
        best = min(best, time.perf_counter() - start)
    return best


def time_tsv(annotations: Path, decode: bool, repeats: int, seed: int) -> tuple[int, float]:
    images = Path(str(annotations).replace(".annotations.tsv", ".images.tsv"))
    best = float("inf")
    with CotTsvReader(images, annotations) as reader:
        order = list(range(len(reader)))
        random.Random(seed).shuffle(order)
        for _ in range(repeats):
            start = time.perf_counter()
            for i in order:
                sample = reader[i]
                if decode:
                    sample.load_image()
            best = min(best, time.perf_counter() - start)
    return len(order), best


_READER: CotTsvReader | None = None


def _open_reader(images: str, annotations: str) -> None:
    global _READER
    _READER = CotTsvReader(images, annotations)


def _decode(indices: list[int]) -> int:
    for i in indices:
        _READER[i].load_image()
    return len(indices)


def time_tsv_parallel(annotations: Path, workers: int, repeats: int, seed: int) -> tuple[int, float]:
    """Random access + pixel decode spread over ``workers`` processes, as DataLoader workers do
    (pool start-up not counted)."""
    images = Path(str(annotations).replace(".annotations.tsv", ".images.tsv"))
    with CotTsvReader(images, annotations) as reader:
        order = list(range(len(reader)))
    random.Random(seed).shuffle(order)
    chunks = [order[k : k + 64] for k in range(0, len(order), 64)]
    best = float("inf")
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_open_reader, initargs=(str(images), str(annotations))) as pool:
        pool.map(_decode, [order[:8]] * workers)  # start-up and imports
        for _ in range(repeats):
            start = time.perf_counter()
            assert sum(pool.map(_decode, chunks)) == len(order)
            best = min(best, time.perf_counter() - start)
    return len(order), best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for the scaling run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="rexthinker-bench-") as tmp:
        root = Path(tmp)
        rows, images, annotations = make_inputs(root, args.rows, args.seed)
        everything = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(everything)})
        try:
            time_prepare(rows, images, root / "warm", 1, 1)  # imports, page cache
            seconds = time_prepare(rows, images, root / "out1", 1, args.repeats)
            results.append(("prepare, supplied hints, 1 worker on 1 core", args.rows, seconds, ">= 200 rows/s"))
            for decode, label in (
                (False, "CoT TSV random access (seek, base64, check)"),
                (True, "CoT TSV random access + pixel decode"),
            ):
                n, seconds = time_tsv(annotations, decode, args.repeats, args.seed)
                results.append((label + ", 1 core", n, seconds, ">= 2,000 samples/s" if decode else ""))
        finally:
            os.sched_setaffinity(0, everything)
        if args.workers > 1:
            seconds = time_prepare(rows, images, root / "outn", args.workers, args.repeats)
            results.append(
                (f"prepare, supplied hints, {args.workers} workers ({len(everything)} cores)", args.rows, seconds, "")
            )
            n, seconds = time_tsv_parallel(annotations, args.workers, args.repeats, args.seed)
            results.append((f"CoT TSV random access + pixel decode, {args.workers} workers", n, seconds, ""))
    header = ("measurement", "items", "seconds", "per second", "target")
    table = [header] + [(name, f"{n:,}", f"{s:.2f}", f"{n / s:,.0f}", target) for name, n, s, target in results]
    widths = [max(len(r[k]) for r in table) for k in range(len(header))]
    for k, row in enumerate(table):
        print("  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(row, widths))))
        if k == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
