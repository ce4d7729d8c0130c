"""Draw samples of a data file as one PNG: HumanRef JSONL, HumanRef-CoT TSV or GRPO parquet.

- HumanRef: a grid of images with hint box k labelled "k", answer boxes thicker in magenta and the
  answer masks (``answer_segmentations``, RLE or polygons) painted over them; captions give the
  domain, the referring expression and the answer's hint numbers.
- HumanRef-CoT: one panel per sample, the image with its boxes numbered as the trace counts them
  ("Person k" is box k) beside the referring expression, the answer and the whole trace, with ✅,
  ❌ and ⚠ drawn in green, red and amber (as vector shapes where the font has no glyph).
- GRPO parquet: the same grid as HumanRef, with the model-frame boxes mapped back onto the image
  (pass the --min/--max-pixels the file was written for).

The format is guessed from the path as ``inspect`` does. Samples are the --num rows from --start
(CoT rows are reached by seeking), or the ones named by --ids. Rows that cannot be read are skipped
and counted.

Examples:
  python -m data_tools visualize data/synthref/val/humanref --out /tmp/humanref.png --num 8
  python -m data_tools visualize data/synthref/val/cot/synthref --out /tmp/cot.png --num 2 --cols 1
  python -m data_tools visualize data/refcocog/val/grpo.parquet --out /tmp/grpo.png --start 100
"""

from __future__ import annotations

import argparse
from pathlib import Path

from data_tools.inspect_data import FORMATS, iter_samples, resolve
from rexthinker.coords import TRAIN_MAX_PIXELS, TRAIN_MIN_PIXELS
from rexthinker.data.cot_tsv import CotTsvReader
from rexthinker.data.errors import ErrorReport
from rexthinker.data.sample import RefSample
from rexthinker.viz import render_grid, render_panels, render_trace_panel

HELP = "draw samples of a HumanRef / HumanRef-CoT / GRPO parquet file as a PNG grid"


def select_samples(
    fmt: str, path: Path, start: int = 0, num: int = 8, ids: set[str] | None = None,
    image_root: Path | None = None, min_pixels: int = TRAIN_MIN_PIXELS, max_pixels: int = TRAIN_MAX_PIXELS,
    report: ErrorReport | None = None,
) -> list[RefSample]:  # fmt: skip
    """The samples to draw: ``num`` from sample ``start`` on (CoT: from row ``start``), or every
    sample whose id is in ``ids``."""
    report = report if report is not None else ErrorReport()
    if fmt == "cot" and not ids:
        images = Path(str(path)[: -len(".annotations.tsv")] + ".images.tsv")
        chosen: list[RefSample] = []
        with CotTsvReader(images, path, on_error="skip", report=report) as reader:
            for index in range(start, len(reader)):
                chosen.extend(reader.samples(index))
                if len(chosen) >= num:
                    break
        return chosen[:num]
    chosen = []
    for position, (_, sample) in enumerate(iter_samples(fmt, path, report, image_root, min_pixels, max_pixels)):
        if ids is not None:
            if sample.id in ids:
                chosen.append(sample)
                if len(chosen) == len(ids):
                    break
        elif position >= start:
            chosen.append(sample)
            if len(chosen) >= num:
                break
    return chosen


def render(fmt: str, samples: list[RefSample], out: Path, cols: int | None = None, tile: tuple[int, int] = (320, 240)):
    """Write the picture for ``samples`` of format ``fmt`` to ``out``; returns the image."""
    if fmt == "cot":
        return render_panels([render_trace_panel(s) for s in samples], out, cols or 1)
    return render_grid(samples, out, cols=cols or 4, tile_size=tile, masks=fmt == "humanref")


def _tile(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return w, h


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path", type=Path, help="annotations.jsonl (or its folder), <prefix>.annotations.tsv (or <prefix>), *.parquet"
    )
    parser.add_argument("--out", required=True, type=Path, help="PNG to write")
    parser.add_argument("--format", choices=FORMATS, help="override the format guessed from the path")
    parser.add_argument("--num", type=int, default=8, help="samples to draw (default 8)")
    parser.add_argument("--start", type=int, default=0, help="first sample (CoT: first row) to draw")
    parser.add_argument("--ids", help="comma-separated sample ids to draw instead of --start/--num")
    parser.add_argument("--cols", type=int, help="grid columns (default 4; 1 for CoT panels)")
    parser.add_argument("--tile", type=_tile, default=(320, 240), help="grid tile size WxH (default 320x240)")
    parser.add_argument("--image-root", type=Path, help="HumanRef image folder (default: images/ beside the file)")
    frame_help = "pixel limits the parquet boxes were written for (default: training limits)"
    parser.add_argument("--min-pixels", type=int, default=TRAIN_MIN_PIXELS, help=frame_help)
    parser.add_argument("--max-pixels", type=int, default=TRAIN_MAX_PIXELS, help=frame_help)


def run(args: argparse.Namespace) -> int:
    fmt, path = resolve(args.path, args.format)
    ids = {s.strip() for s in args.ids.split(",") if s.strip()} if args.ids else None
    report = ErrorReport()
    samples = select_samples(
        fmt, path, args.start, args.num, ids, args.image_root, args.min_pixels, args.max_pixels, report
    )
    if report.errors:
        print(f"unreadable rows: {report}")
    if not samples:
        raise SystemExit(
            f"no sample to draw in {path}" + (f" with ids {sorted(ids)}" if ids else f" from {args.start}")
        )
    if ids is not None and len(samples) < len(ids):
        print(f"ids not found: {sorted(ids - {s.id for s in samples})}")
    image = render(fmt, samples, args.out, args.cols, args.tile)
    print(f"wrote {args.out} ({image.width}x{image.height}, {len(samples)} samples)")
    return 0
