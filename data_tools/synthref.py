"""Generate SynthRef, the procedural referring task, in all three on-disk formats.

SynthRef mirrors HumanRef's domains (attribute, position, interaction, reasoning, rejection) on
synthetic scenes of 3-9 drawn people, each with a rule-written HumanRef-CoT-style trace, so the
whole pipeline (SFT on traces, GRPO on parquet rows, HumanRef-style evaluation) can run and learn on
a CPU. Unlike HumanRef the images are cartoons, there is no celebrity domain, and the traces are
written by rule rather than by GPT-4o.

Layout under --out:
  <split>/humanref/annotations.jsonl + images/   (HumanRef benchmark layout, with masks)
  <split>/cot/synthref.{images,annotations}.tsv + .lineidx   (HumanRef-CoT layout)
  <split>/grpo/synthref.parquet   (GRPO rows; boxes in --family's frame: the model frame of
                                  --min/--max-pixels for qwen2_5_vl, 0-1000 for qwen3_vl and qwen3_5)
  synthref.json   (seed, counts, config, statistics)

Example:
  python -m data_tools synthref --out data/synthref --train 8000 --val 1000 --test 1000 --seed 0

A named level sets several at once: --level demo (small images, 2-4 people with their hint numbers
drawn on, traces that state each candidate's box: what make demo trains), --level demo-colour (the
demo level with shirt colour as the only attribute asked or drawn). Generator settings are
then overridden with trailing key=value pairs (JSON values), e.g.
  ... persons=[3,6] domain_weights.rejection=0.2
  ... trace_boxes=true   (each trace line states its box in the --min/--max-pixels model frame;
                          Qwen2.5-VL's pixels only, refused with a 0-1000 --family)
  ... marks=true         (each person's hint number drawn on the torso)
  ... trace_wants=true   (each candidate line restates what its step looks for: "(want red shirt)")
  ... trace_all_candidates=true   (every action step looks at every candidate, not only those kept)
  ... 'attributes=["color","tall"]'   (what figures vary in and questions ask about)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from data_tools.row_args import add_frame_arguments, frame_from_args
from rexthinker.coords import MODEL_PIXELS
from rexthinker.data.cot_tsv import CotTsvWriter
from rexthinker.data.grpo_parquet import GrpoParquetWriter
from rexthinker.data.humanref import HumanRefWriter
from rexthinker.data.synthref import DOMAINS, LEVELS, iter_chunks, level_config

HELP = "generate the SynthRef task in HumanRef, HumanRef-CoT and GRPO parquet formats"
FORMATS = ("humanref", "cot", "parquet")
SPLITS = ("train", "val", "test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--train", type=int, default=1000, help="training samples (default 1000)")
    parser.add_argument("--val", type=int, default=200, help="validation samples (default 200)")
    parser.add_argument("--test", type=int, default=200, help="test samples (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated subset of {','.join(FORMATS)}")
    add_frame_arguments(parser)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="generator processes")
    parser.add_argument("--level", default="full", choices=list(LEVELS),
                        help="named generator settings: full (default) or demo (small images, 2-4 marked people, boxes in traces)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="SynthRefConfig overrides")


def _open_writers(split_dir: Path, formats: list[str], frame: tuple) -> list:
    family, min_pixels, max_pixels = frame
    writers = []
    if "humanref" in formats:
        writers.append(HumanRefWriter(split_dir / "humanref"))
    if "cot" in formats:
        writers.append(CotTsvWriter(split_dir / "cot" / "synthref"))
    if "parquet" in formats:
        writers.append(GrpoParquetWriter(split_dir / "grpo" / "synthref.parquet", min_pixels, max_pixels, family=family))
    return writers


def run(args: argparse.Namespace) -> int:
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise SystemExit(f"unknown formats {unknown}; choose from {','.join(FORMATS)}")
    family, min_pixels, max_pixels = frame = frame_from_args(args)
    try:
        config = level_config(args.level, args.overrides, frame=(min_pixels, max_pixels))
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if config.trace_boxes and family.frame != MODEL_PIXELS:
        raise SystemExit(
            f"trace_boxes (on at --level {args.level} or set) writes traces that state boxes in Qwen2.5-VL's model-input "
            f"pixels, but --family {family.name} reads boxes in its {family.frame} frame; such traces are not converted, "
            "so use trace_boxes=false (and marks for the demo level) or --family qwen2_5_vl"
        )
    counts = {split: getattr(args, split) for split in SPLITS}
    if any(n < 0 for n in counts.values()):
        raise SystemExit("sample counts must be >= 0")
    args.out.mkdir(parents=True, exist_ok=True)
    stats: dict[str, dict] = {}
    start = time.perf_counter()
    pool = multiprocessing.get_context("spawn").Pool(args.workers) if args.workers > 1 else None
    try:
        with tqdm(total=sum(counts.values()), unit="sample", desc="synthref") as bar:
            for split, num in counts.items():
                if num == 0:
                    continue
                split_start = time.perf_counter()
                domains: Counter = Counter()
                targets = []
                writers = _open_writers(args.out / split, formats, frame)
                try:
                    for chunk in iter_chunks(num, args.seed, config, split, args.workers, pool=pool):
                        for sample in chunk:
                            for writer in writers:
                                writer.write(sample)
                            domains[sample.domain] += 1
                            if not sample.is_rejection:
                                targets.append(len(sample.answer_boxes))
                        bar.update(len(chunk))
                finally:
                    for writer in writers:
                        writer.close()
                stats[split] = {
                    "samples": num,
                    "domains": {d: domains.get(d, 0) for d in DOMAINS},
                    "mean_targets": sum(targets) / len(targets) if targets else 0.0,
                    "rejection_share": domains.get("rejection", 0) / num,
                    "seconds": time.perf_counter() - split_start,
                }
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    total = time.perf_counter() - start
    manifest = {
        "seed": args.seed,
        "counts": counts,
        "formats": formats,
        "family": family.name,
        "frame": family.frame,
        "min_pixels": min_pixels,
        "max_pixels": max_pixels,
        "config": dataclasses.asdict(config),
        "stats": stats,
    }
    (args.out / "synthref.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(_table(stats, total))
    print(f"wrote {', '.join(formats)} under {args.out}")
    return 0


def _table(stats: dict[str, dict], total: float) -> str:
    header = ["split", "samples", *DOMAINS, "mean targets", "rejection %", "seconds"]
    rows = [
        [
            split,
            str(s["samples"]),
            *(str(s["domains"][d]) for d in DOMAINS),
            f"{s['mean_targets']:.2f}",
            f"{100 * s['rejection_share']:.1f}",
            f"{s['seconds']:.1f}",
        ]
        for split, s in stats.items()
    ]
    rows.append(["total", str(sum(s["samples"] for s in stats.values())), *[""] * len(DOMAINS), "", "", f"{total:.1f}"])
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths)) for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
