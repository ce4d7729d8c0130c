"""Validate a data file and describe it: HumanRef JSONL, HumanRef-CoT TSV or GRPO parquet.

The format follows from the path (``--format`` overrides): ``*.parquet`` is GRPO rows, a path
ending in ``.annotations.tsv`` (or a prefix with such a file) is HumanRef-CoT, ``*.jsonl`` (or a
folder holding ``annotations.jsonl``) is HumanRef. Every row is read with the project's readers,
one at a time, images included.

The report gives the sample and image counts, samples per domain, sub-domain and category, a
histogram of targets per sample, the rejection share and the number of hints per sample, then every
problem with its file and row:
  rows the reader could not use (bad JSON, a missing or corrupt image, a malformed box, ...);
  box_outside          a hint or answer box reaching outside the image (for parquet: outside
                       the model frame of --min/--max-pixels, the limits the file was written for);
  degenerate_box       a box without area;
  answer_not_in_hints  an answer box that is not a verbatim copy of a hint;
  empty_hints          a sample without candidate boxes;
  duplicate_hints      the same box twice among the hints (the answer is then ambiguous);
  trace_disagrees      a trace whose summary marks a box as target (✅) that is not in the answer,
                       or marks an answer box ❌ (only the summary lines this check can read).
The exit status is 0 when nothing was found, 1 otherwise. --json writes the report as JSON.

Examples:
  python -m data_tools inspect data/synthref/val/humanref/annotations.jsonl
  python -m data_tools inspect data/humanref_cot/humanref_cot.annotations.tsv
  python -m data_tools inspect data/refcocog/train/grpo.parquet --max-problems 50
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rexthinker.contracts.trace import summary_marks
from rexthinker.coords import TRAIN_MAX_PIXELS, TRAIN_MIN_PIXELS
from rexthinker.data.cot_tsv import CotTsvReader
from rexthinker.data.errors import ErrorReport
from rexthinker.data.grpo_parquet import iter_grpo_parquet, parquet_frame
from rexthinker.data.humanref import ANNOTATIONS_FILE, iter_humanref
from rexthinker.data.sample import RefSample

HELP = "validate a HumanRef JSONL / HumanRef-CoT TSV / GRPO parquet file and print its statistics"
FORMATS = ("humanref", "cot", "parquet")
FORMAT_NAMES = {"humanref": "HumanRef JSONL", "cot": "HumanRef-CoT TSV", "parquet": "GRPO parquet"}
TARGET_BUCKETS = [str(k) for k in range(11)] + [">10"]


def resolve(path: Path, fmt: str | None = None) -> tuple[str, Path]:
    """``(format, path to read)``: the annotations file for cot, the JSONL for humanref."""
    text = str(path)
    if fmt is None:
        if path.suffix == ".parquet":
            fmt = "parquet"
        elif text.endswith(".annotations.tsv") or Path(text + ".annotations.tsv").exists():
            fmt = "cot"
        elif path.suffix == ".jsonl" or (path / ANNOTATIONS_FILE).exists():
            fmt = "humanref"
        else:
            raise SystemExit(f"cannot tell the format of {path}; pass --format ({', '.join(FORMATS)})")
    if fmt == "cot" and not text.endswith(".annotations.tsv"):
        path = Path(text + ".annotations.tsv")
    if fmt == "humanref" and path.is_dir():
        path = path / ANNOTATIONS_FILE
    if not path.exists():
        raise SystemExit(f"{path} does not exist")
    return fmt, path


def iter_samples(
    fmt: str, path: Path, report: ErrorReport, image_root: Path | None = None,
    min_pixels: int = TRAIN_MIN_PIXELS, max_pixels: int = TRAIN_MAX_PIXELS,
) -> Iterator[tuple[str, RefSample]]:  # fmt: skip
    """``(location, sample)`` for every readable sample; unreadable rows go to ``report``."""
    if fmt == "humanref":
        for line, sample in iter_humanref(path, image_root, on_error="skip", report=report):
            yield f"{path} line {line}", sample
    elif fmt == "parquet":
        for row, sample in iter_grpo_parquet(path, "skip", min_pixels, max_pixels, report):
            yield f"{path} row {row}", sample
    else:
        images = Path(str(path)[: -len(".annotations.tsv")] + ".images.tsv")
        with CotTsvReader(images, path, on_error="skip", report=report) as reader:
            for index in range(len(reader)):
                for sample in reader.samples(index):
                    yield f"{path} line {index + 1}", sample


def _fmt_box(box) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


def sample_problems(sample: RefSample) -> list[tuple[str, str]]:
    """``(kind, reason)`` for everything wrong with one readable sample (see the module help)."""
    problems = []
    if sample.box_frame is not None:
        width, height = sample.box_frame
        frame = f"the {width}x{height} model frame"
    else:
        width, height = sample.image_size
        frame = f"the {width}x{height} image"
    hints = [list(b) for b in sample.candidate_boxes]
    if not hints:
        problems.append(("empty_hints", "no candidate boxes"))
    for what, boxes in (("hint", hints), ("answer", sample.answer_boxes)):
        for k, box in enumerate(boxes, 1):
            x0, y0, x1, y1 = box
            if not (x1 > x0 and y1 > y0):
                problems.append(("degenerate_box", f"{what} {k} {_fmt_box(box)} has no area"))
            if min(x0, y0, x1, y1) < 0 or max(x0, x1) > width or max(y0, y1) > height:
                problems.append(("box_outside", f"{what} {k} {_fmt_box(box)} reaches outside {frame}"))
    for k, box in enumerate(sample.answer_boxes, 1):
        if list(box) not in hints:
            problems.append(("answer_not_in_hints", f"answer {k} {_fmt_box(box)} is not one of the {len(hints)} hints"))
    repeated = [b for b, n in Counter(map(tuple, hints)).items() if n > 1]
    if repeated:
        problems.append(("duplicate_hints", f"hints repeat {', '.join(_fmt_box(b) for b in repeated)}"))
    if sample.think:
        problems.extend(_trace_problems(sample, hints))
    return problems


def _trace_problems(sample: RefSample, hints: list[list[float]]) -> list[tuple[str, str]]:
    try:
        marks = summary_marks(sample.think)
    except ValueError:
        return [("trace_disagrees", "the trace has no summary section")]
    answer = {i for i, box in enumerate(hints) if box in map(list, sample.answer_boxes)}
    extra = sorted(i for i, ok in marks.items() if ok and i not in answer)
    crossed = sorted(i for i, ok in marks.items() if not ok and i in answer)
    out = []
    if extra:
        out.append(("trace_disagrees", f"summary marks {_names(extra)} ✅ but the answer does not hold them"))
    if crossed:
        out.append(("trace_disagrees", f"summary marks answer {_names(crossed)} ❌"))
    return out


def _names(indices: list[int]) -> str:
    return ", ".join(f"#{i + 1}" for i in indices)


@dataclass
class Inspection:
    """Statistics and problems of one file."""

    path: str
    format: str
    samples: int = 0
    images: int = 0
    domains: Counter = field(default_factory=Counter)
    sub_domains: Counter = field(default_factory=Counter)
    categories: Counter = field(default_factory=Counter)
    targets: Counter = field(default_factory=Counter)  # bucket label -> samples
    hints: Counter = field(default_factory=Counter)  # hint count -> samples
    problems: list[dict] = field(default_factory=list)
    frame: dict | None = None  # a GRPO parquet's recorded box frame (grpo_parquet.parquet_frame); None: none recorded

    @property
    def rejection_share(self) -> float:
        return self.targets["0"] / self.samples if self.samples else 0.0

    def problem_kinds(self) -> dict[str, int]:
        return dict(Counter(p["kind"] for p in self.problems).most_common())

    def to_json(self) -> dict:
        return {
            "path": self.path, "format": self.format, "samples": self.samples, "images": self.images,
            "domains": dict(self.domains.most_common()), "sub_domains": dict(self.sub_domains.most_common()),
            "categories": dict(self.categories.most_common()),
            "targets_per_sample": {b: self.targets.get(b, 0) for b in TARGET_BUCKETS},
            "rejection_share": self.rejection_share, "hints_per_sample": dict(sorted(self.hints.items())),
            "problem_kinds": self.problem_kinds(), "problems": self.problems, "frame": self.frame,
        }  # fmt: skip


def inspect_file(
    path: Path, fmt: str | None = None, image_root: Path | None = None,
    min_pixels: int = TRAIN_MIN_PIXELS, max_pixels: int = TRAIN_MAX_PIXELS, limit: int | None = None,
    progress: bool = False,
) -> Inspection:  # fmt: skip
    """Read every row of ``path`` and collect the statistics and problems."""
    fmt, path = resolve(Path(path), fmt)
    report = ErrorReport()
    result = Inspection(str(path), fmt)
    if fmt == "parquet":
        result.frame = parquet_frame(path)  # a damaged record is a DataError, as a missing column is
    seen_images: set = set()
    rows = iter_samples(fmt, path, report, image_root, min_pixels, max_pixels)
    if progress:
        from tqdm import tqdm

        rows = tqdm(rows, unit="sample", desc="inspect", dynamic_ncols=True)
    for location, sample in rows:
        result.samples += 1
        image_key = (
            sample.image_name if fmt != "parquet" else hashlib.blake2b(sample.image_bytes, digest_size=16).digest()
        )
        seen_images.add(image_key)
        result.domains[sample.domain or "(none)"] += 1
        result.sub_domains[sample.sub_domain or "(none)"] += 1
        result.categories[sample.category] += 1
        n = len(sample.answer_boxes)
        result.targets[str(n) if n <= 10 else ">10"] += 1
        result.hints[len(sample.candidate_boxes)] += 1
        for kind, reason in sample_problems(sample):
            result.problems.append({"where": location, "id": sample.id, "kind": kind, "reason": reason})
        if limit is not None and result.samples >= limit:
            break
    result.images = len(seen_images)
    unreadable = [{"where": f"{e.file} {e.unit} {e.line}", "kind": e.kind, "reason": e.reason} for e in report.errors]
    result.problems = sorted(unreadable + result.problems, key=lambda p: int(p["where"].rsplit(" ", 1)[1]))
    return result


def _histogram(counts: dict, total: int) -> str:
    return " | ".join(f"{k}: {v:,} ({100 * v / total:.0f}%)" for k, v in counts.items() if v) or "-"


def format_inspection(result: Inspection, max_problems: int = 20) -> str:
    lines = [f"{result.path} ({FORMAT_NAMES[result.format]})"]
    lines.append(f"  samples {result.samples:,}, images {result.images:,}")
    if result.format == "parquet":
        frame = result.frame
        lines.append(f"  box frame: {frame['frame']} for {frame['family']} (recorded)" if frame else
                     "  box frame: not recorded (Qwen2.5-VL's model-input pixels of --min/--max-pixels)")  # fmt: skip
    total = max(1, result.samples)
    for label, counts in (
        ("domains", result.domains),
        ("sub-domains", result.sub_domains),
        ("categories", result.categories),
    ):
        if set(counts) == {"(none)"}:
            lines.append(f"  {label}: not recorded")
            continue
        lines.append(
            f"  {label}: "
            + (", ".join(f"{k} {v:,}" for k, v in counts.most_common(12)) or "-")
            + (f", ... ({len(counts)} in all)" if len(counts) > 12 else "")
        )
    buckets = {b: result.targets.get(b, 0) for b in TARGET_BUCKETS}
    lines.append(f"  targets per sample: {_histogram(buckets, total)}")
    lines.append(f"  rejection share: {100 * result.rejection_share:.1f}%")
    if result.hints:
        n_hints = sum(k * v for k, v in result.hints.items())
        lines.append(
            f"  hints per sample: min {min(result.hints)}, mean {n_hints / total:.2f}, max {max(result.hints)}; "
            + _histogram(dict(sorted(result.hints.items())), total)
        )
    kinds = result.problem_kinds()
    lines.append(
        f"  problems: {len(result.problems):,}"
        + (f" ({', '.join(f'{k} {v:,}' for k, v in kinds.items())})" if kinds else "")
    )
    for p in result.problems[:max_problems]:
        lines.append(f"    {p['where']}: [{p['kind']}] {p['reason']}")
    if len(result.problems) > max_problems:
        lines.append(f"    ... {len(result.problems) - max_problems:,} more (--max-problems, --json)")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path", type=Path, help="annotations.jsonl (or its folder), <prefix>.annotations.tsv (or <prefix>), *.parquet"
    )
    parser.add_argument("--format", choices=FORMATS, help="override the format guessed from the path")
    parser.add_argument("--image-root", type=Path, help="HumanRef image folder (default: images/ beside the file)")
    frame_help = "pixel limits the parquet boxes were written for (default: training limits)"
    parser.add_argument("--min-pixels", type=int, default=TRAIN_MIN_PIXELS, help=frame_help)
    parser.add_argument("--max-pixels", type=int, default=TRAIN_MAX_PIXELS, help=frame_help)
    parser.add_argument("--limit", type=int, help="look at the first N samples only")
    parser.add_argument("--max-problems", type=int, default=20, help="problems to print (all go to --json)")
    parser.add_argument("--json", type=Path, help="also write the full report here")


def run(args: argparse.Namespace) -> int:
    result = inspect_file(
        args.path, args.format, args.image_root, args.min_pixels, args.max_pixels, args.limit, progress=True
    )
    print(format_inspection(result, args.max_problems))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n")
    return 1 if result.problems else 0
