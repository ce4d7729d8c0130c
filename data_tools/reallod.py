"""Make training rows from Real-LOD data (``real-data-*.jsonl``; images from O365, OpenImages, COCO).

A Real-LOD line describes one image: ``filename``, ``height``, ``width`` and ``pairs``, a mapping
from the model that wrote the expressions (``vlm_short``, ``vlm_long``, ``llm``) to one object group:
``bboxes`` (corners, original pixels), ``category``, ``relation`` and lists of
``positive_expressions`` and ``negative_expressions``.

What becomes a sample, and the labelling assumptions behind it:

- every positive expression of a pair is a referring expression whose targets are exactly the
  pair's ``bboxes``. With --candidates gt the hints are all boxes of that category in the image
  (the union over the image's pairs, exact duplicates merged), which assumes a positive expression
  fits none of the category's other boxes. Real-LOD writes positives for the pair's objects, so
  this is what its authors intend, but it is not checked by the data.
- a negative expression is only known *not* to describe the pair's boxes. With
  --negatives rejection (default) each becomes a rejection sample:
    --negative-candidates pair      hints are the pair's own boxes only, so "none of these" is true
                                    by construction (default);
    --negative-candidates category  hints are all boxes of the category, which assumes the negative
                                    describes no other object of that category either (harder
                                    rejections, wrong whenever it does describe another one).
  --negatives skip leaves negatives out. With --candidates detector the hints come from the
  detector, so negatives need --negative-candidates category (or skip).
- --positives-per-pair / --negatives-per-pair keep the first N expressions of each pair (0 = all)
  to bound the size and the rejection share; --sources keeps only some expression writers.

A line that is not JSON, misses fields or holds malformed boxes is reported with its line number
and the job goes on; the image size in the line is checked against the image. Output goes to --out
as ``prepare`` writes it. Ids are ``reallod-<line>-<source>-p<k>`` / ``-n<k>``; domain is
``reallod`` (``rejection`` for negatives), sub_domain the source.

Example:
  python -m data_tools reallod --input real-data/real-data-o365-small.jsonl \\
      --image-root object365/images/train --out data/reallod-o365-small --negatives-per-pair 1
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from data_tools.row_args import add_common_arguments, checked_options
from data_tools.row_job import Item, format_summary, prepare
from rexthinker.data.errors import as_boxes

HELP = "Real-LOD JSONL (positive / negative expressions per object group) -> GRPO parquet / HumanRef rows"
NEGATIVES = ("rejection", "skip")
NEGATIVE_CANDIDATES = ("pair", "category")


def _strings(value: object, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of strings")
    return [v.strip() for v in value if v.strip()]


def _first(values: list[str], limit: int) -> list[str]:
    return values if limit <= 0 else values[:limit]


def line_rows(record: object, line: int, settings: argparse.Namespace) -> list[dict]:
    """The prepare rows of one Real-LOD line; raises ValueError for a malformed line."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    missing = [k for k in ("filename", "pairs") if k not in record]
    if missing:
        raise ValueError(f"missing keys {missing}")
    pairs = record["pairs"]
    if not isinstance(pairs, dict):
        raise ValueError("pairs must be an object {source: pair}")
    size = [record.get("width"), record.get("height")]
    parsed = []
    for source, pair in pairs.items():
        if settings.sources and source not in settings.sources:
            continue
        if not isinstance(pair, dict) or not isinstance(pair.get("category"), str) or not pair["category"].strip():
            raise ValueError(f"pairs[{source!r}] needs a category")
        boxes = as_boxes(pair.get("bboxes"), f"pairs[{source!r}].bboxes")
        if not boxes:
            raise ValueError(f"pairs[{source!r}] has no bboxes")
        positives = _strings(pair.get("positive_expressions"), f"pairs[{source!r}].positive_expressions")
        negatives = _strings(pair.get("negative_expressions"), f"pairs[{source!r}].negative_expressions")
        parsed.append((source, pair["category"].strip(), boxes, positives, negatives))
    by_category: dict[str, list[list[float]]] = {}
    for _, category, boxes, _, _ in parsed:
        known = by_category.setdefault(category.lower(), [])
        known.extend(b for b in boxes if b not in known)
    rows = []
    for source, category, boxes, positives, negatives in parsed:
        common = {"image_name": record["filename"], "category": category, "sub_domain": source}
        if all(isinstance(v, int) for v in size):
            common["image_size"] = size
        gt = by_category[category.lower()]
        for k, text in enumerate(_first(positives, settings.positives_per_pair)):
            row = {
                **common,
                "id": f"reallod-{line}-{source}-p{k}",
                "referring": text,
                "ans": boxes,
                "domain": "reallod",
            }
            if settings.candidates == "gt":
                row["candidate_boxes"] = gt
            rows.append(row)
        if settings.negatives == "skip":
            continue
        for k, text in enumerate(_first(negatives, settings.negatives_per_pair)):
            row = {**common, "id": f"reallod-{line}-{source}-n{k}", "referring": text, "ans": [], "domain": "rejection"}
            if settings.candidates == "gt":
                row["candidate_boxes"] = boxes if settings.negative_candidates == "pair" else gt
            rows.append(row)
    return rows


def reallod_items(path: Path, settings: argparse.Namespace) -> Iterator[Item]:
    """Prepare items for every line of a Real-LOD file, streamed (bad lines become problem items)."""
    with open(path, encoding="utf-8") as fh:
        for line_no, text in enumerate(fh, 1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                yield Item(str(path), line_no, None, problem=("bad_json", f"not valid JSON: {exc}"))
                continue
            try:
                rows = line_rows(record, line_no, settings)
            except ValueError as exc:
                yield Item(str(path), line_no, None, problem=("bad_line", str(exc)))
                continue
            for row in rows:
                yield Item(str(path), line_no, row)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="Real-LOD JSONL, e.g. real-data-o365-small.jsonl")
    parser.add_argument("--sources", help="comma-separated expression writers to keep (default: all)")
    parser.add_argument(
        "--positives-per-pair", type=int, default=0, help="first N positive expressions per pair (0 = all)"
    )
    parser.add_argument(
        "--negatives", choices=NEGATIVES, default="rejection", help="negative expressions as rejection samples, or skip"
    )
    parser.add_argument(
        "--negatives-per-pair", type=int, default=1, help="first N negative expressions per pair (0 = all; default 1)"
    )
    parser.add_argument(
        "--negative-candidates",
        choices=NEGATIVE_CANDIDATES,
        default="pair",
        help="hints of a negative: the pair's boxes (label certain) or all boxes of the category",
    )
    add_common_arguments(parser, ("gt", "detector"), "gt")


def run(args: argparse.Namespace) -> int:
    options, workers = checked_options(args)
    if args.candidates == "detector" and args.negatives == "rejection" and args.negative_candidates == "pair":
        raise SystemExit(
            "with --candidates detector, negatives need --negative-candidates category or --negatives skip"
        )
    if not args.input.exists():
        raise SystemExit(f"input {args.input} does not exist")
    args.sources = {s.strip() for s in args.sources.split(",")} if args.sources else None
    summary = prepare(
        reallod_items(args.input, args), args.image_root, args.out, options, workers, args.overwrite, desc="reallod"
    )
    print(format_summary(summary, args.out))
    return 0
