"""Prepare a new domain: referring rows + images -> GRPO parquet and/or HumanRef-layout JSONL.

Input (contracts §1.5): one JSON object per line,
  {"image_name": "street/0001.jpg", "referring": "the man in a red helmet", "category": "person",
   "ans": [x0, y0, x1, y1]  |  [[x0, y0, x1, y1], ...]  |  []}
with boxes in original pixels; "ans": [] is a rejection (nothing in the image fits). Optional keys:
"id" (default <input stem>-<line>), "candidate_boxes" (read with --candidates supplied), "domain",
"sub_domain", "image_size" ([width, height]: checked against the image). Other keys are kept in the
HumanRef rows.

Candidate boxes (the hints) come from an open-vocabulary detector prompted with the row's category
(--candidates detector; reference thresholds box 0.25 / text 0.25, no NMS, no top-k) or from the row
(--candidates supplied). Each target is matched one-to-one to the candidate it overlaps most
(IoU >= --match-iou, best pairs first) and the answer becomes that candidate, so an answer is always
a verbatim copy of a hint. A target no candidate overlaps is handled by --no-match:
  append   add the target box to the hints (the reference behaviour; the added box sits last
           unless --hint-order shuffle, and it is an exact ground-truth box among detections)
  replace  put the target box in place of the candidate it overlaps most (appended if it overlaps
           none), so no near-duplicate of the target stays in the hints
  drop     leave the row out and report it

Bad input never stops the job and is never dropped silently: a missing or corrupt image, a line
that is not JSON, a malformed box, a box outside the image (or clipped into it with --clip-boxes),
an unmatched target under --no-match drop, a row left without candidates: each is listed with its
file and line in problems.jsonl, and the summary counts each kind.

Work is split into chunks of --chunk-size rows, processed by --workers processes (each builds its
detector once) and merged in input order, so the output does not depend on the number of workers.
A re-run with the same input and options skips finished chunks (resumable) and never duplicates a
row; other options are refused unless --overwrite.

Layout under --out:
  grpo.parquet                     GRPO rows; boxes in --family's frame: pixels of the model frame of
                                   --min/--max-pixels (qwen2_5_vl, the default), or 0-1000 (qwen3_vl,
                                   qwen3_5; the frame is recorded in the file's metadata)
  humanref/annotations.jsonl + images/    HumanRef layout; boxes in original pixels
  problems.jsonl                   every dropped or changed row, with its file and line
  prepare.json                     options and summary
  .prepare/                        manifest and per-chunk parts (safe to delete when done)

Examples:
  python -m data_tools prepare --input rows.jsonl --image-root imgs --out data/helmets \\
      --detector-model IDEA-Research/grounding-dino-base --device cuda --batch-size 16
  python -m data_tools prepare --input rows.jsonl --image-root imgs --out data/x --candidates supplied
"""

from __future__ import annotations

import argparse
from pathlib import Path

from data_tools.row_args import add_common_arguments, checked_options
from data_tools.row_job import format_summary, jsonl_items, prepare

HELP = "turn referring rows of a new domain into GRPO parquet / HumanRef rows (detector or supplied hints)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="JSONL rows {image_name, referring, category, ans}")
    add_common_arguments(parser, ("detector", "supplied"), "detector")


def run(args: argparse.Namespace) -> int:
    options, workers = checked_options(args)
    if not args.input.exists():
        raise SystemExit(f"input {args.input} does not exist")
    with open(args.input, "rb") as fh:
        total = sum(1 for line in fh if line.strip())
    summary = prepare(jsonl_items(args.input), args.image_root, args.out, options, workers, args.overwrite, total)
    print(format_summary(summary, args.out))
    return 0
