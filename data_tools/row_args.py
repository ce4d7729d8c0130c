"""Command-line options every row-making command (``prepare``, ``refcocog``, ``reallod``) takes:
outputs, candidates, detector, matching, workers; and the :class:`PrepareOptions` they build."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from data_tools.row_job import FORMATS, HINT_ORDERS, NO_MATCH, PrepareOptions
from rexthinker.detect import BACKENDS, BOX_THRESHOLD, TEXT_THRESHOLD, DetectorSpec
from rexthinker.models.families import FAMILIES, QWEN2_5_VL, Family, get_family


def add_frame_arguments(group) -> None:
    """``--family`` and ``--min/--max-pixels``: the box frame GRPO parquet rows are written in."""
    group.add_argument("--family", choices=sorted(FAMILIES), default=QWEN2_5_VL.name,
                       help="model family whose box frame the parquet boxes are written in: pixels of the resized input "
                            "(qwen2_5_vl, the default and the released layout) or 0-1000 relative (qwen3_vl, qwen3_5; "
                            "recorded in the file)")  # fmt: skip
    frame_help = "pixel limit of the model frame the parquet boxes are written in (default: the family's training limit)"
    group.add_argument("--min-pixels", type=int, help=frame_help)
    group.add_argument("--max-pixels", type=int, help=frame_help)


def frame_from_args(args: argparse.Namespace) -> tuple[Family, int, int]:
    """``(family, min_pixels, max_pixels)`` from :func:`add_frame_arguments`' options."""
    family = get_family(args.family)
    low, high = family.train_pixels
    return family, args.min_pixels or low, args.max_pixels or high


def add_common_arguments(parser: argparse.ArgumentParser, candidate_choices: tuple[str, ...], default: str) -> None:
    """Options every row-making command takes: outputs, candidates, detector, matching, workers."""
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--image-root", required=True, type=Path, help="folder the image names are relative to")
    parser.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated subset of {','.join(FORMATS)}")
    parser.add_argument(
        "--candidates", choices=candidate_choices, default=default, help=f"where hints come from (default {default})"
    )
    det = parser.add_argument_group("detector (with --candidates detector)")
    det.add_argument("--detector-backend", choices=BACKENDS, default="transformers")
    det.add_argument(
        "--detector-model",
        default="IDEA-Research/grounding-dino-base",
        help="hub id or folder (transformers) / .pth checkpoint (groundingdino-py)",
    )
    det.add_argument("--detector-config", help="groundingdino-py model config file (GroundingDINO_SwinT_OGC.py)")
    det.add_argument("--text-encoder", help="groundingdino-py: BERT folder to use instead of bert-base-uncased")
    det.add_argument("--device", default="cpu", help="torch device, e.g. cuda or cuda:1 (default cpu)")
    det.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    det.add_argument("--batch-size", type=int, default=8, help="images per detector forward pass")
    det.add_argument("--box-threshold", type=float, default=BOX_THRESHOLD)
    det.add_argument("--text-threshold", type=float, default=TEXT_THRESHOLD)
    det.add_argument("--nms-iou", type=float, help="apply NMS at this IoU (default: no NMS, as the reference)")
    det.add_argument("--top-k", type=int, help="keep the k best-scoring boxes (default: all, as the reference)")
    match = parser.add_argument_group("matching targets to candidates")
    match.add_argument(
        "--no-match", choices=NO_MATCH, default="append", help="unmatched target: append (reference), replace, drop"
    )
    match.add_argument(
        "--match-iou", type=float, default=0.5, help="IoU a candidate needs to stand for a target (default 0.5)"
    )
    match.add_argument(
        "--clip-boxes", action="store_true", help="clip boxes reaching outside the image instead of dropping the row"
    )
    match.add_argument(
        "--hint-order",
        choices=HINT_ORDERS,
        default="keep",
        help="keep detector/input order, or shuffle per row (seeded by id)",
    )
    out = parser.add_argument_group("output")
    add_frame_arguments(out)
    out.add_argument("--workers", type=int, help="processes (default: all cores; 1 with a detector)")
    out.add_argument("--chunk-size", type=int, default=256, help="rows per resumable chunk")
    out.add_argument("--overwrite", action="store_true", help="discard earlier work in --out made with other options")


def options_from_args(args: argparse.Namespace) -> tuple[PrepareOptions, int]:
    """``(options, workers)`` from parsed common arguments (``--candidates gt`` means supplied)."""
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    detector = None
    if args.candidates == "detector":
        detector = DetectorSpec(
            backend=args.detector_backend, model=args.detector_model, device=args.device, batch_size=args.batch_size,
            box_threshold=args.box_threshold, text_threshold=args.text_threshold, nms_iou=args.nms_iou,
            top_k=args.top_k, config=args.detector_config, text_encoder=args.text_encoder, dtype=args.dtype,
        )  # fmt: skip
    family, min_pixels, max_pixels = frame_from_args(args)
    options = PrepareOptions(
        candidates="detector" if args.candidates == "detector" else "supplied", detector=detector,
        no_match=args.no_match, match_iou=args.match_iou, clip_boxes=args.clip_boxes, hint_order=args.hint_order,
        formats=formats, min_pixels=min_pixels, max_pixels=max_pixels, family=family.name, chunk_size=args.chunk_size,
    )  # fmt: skip
    workers = args.workers or (1 if detector is not None else os.cpu_count() or 1)
    return options, workers


def checked_options(args: argparse.Namespace) -> tuple[PrepareOptions, int]:
    try:
        return options_from_args(args)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
