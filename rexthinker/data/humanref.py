"""HumanRef benchmark layout (contracts §1.1): ``annotations.jsonl`` + ``images/<image_name>``.

Each JSON line holds ``id``, ``image_name``, ``referring``, ``candidate_boxes``, ``answer_boxes``
(corners, original pixels), ``answer_segmentations``, ``domain`` and ``sub_domain``. Keys the
benchmark does not have are written only when set: ``category`` when it is not "person", ``think``
when a trace exists. Every other key of a row is kept in ``RefSample.extra`` (that is where
``answer_segmentations`` lives), so a row read and written back keeps all its keys.

The reader checks every row's boxes and image as :mod:`rexthinker.data.errors` describes (boxes
are original pixels, so a box partly outside the image is kept with a ``box_clamped`` warning);
without ``load_images`` the image size is unknown and only its checks are left out.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from rexthinker.data.errors import (
    BadRow,
    ErrorReport,
    ImageCheckError,
    RowErrorPolicy,
    as_boxes,
    check_boxes,
    check_model_image,
    checked_image_size,
)
from rexthinker.data.sample import RefSample, check_original_frame

ANNOTATIONS_FILE = "annotations.jsonl"
IMAGES_DIR = "images"
_MODELLED = (
    "id", "image_name", "referring", "candidate_boxes", "answer_boxes", "domain", "sub_domain", "category", "think"
)


def humanref_row(sample: RefSample) -> dict:
    """The JSON object of one sample, keys in the benchmark's order."""
    check_original_frame(sample, _MODELLED, "HumanRef")
    row: dict = {
        "id": sample.id,
        "image_name": sample.image_name,
        "referring": sample.referring,
        "candidate_boxes": [list(b) for b in sample.candidate_boxes],
        "answer_boxes": [list(b) for b in sample.answer_boxes],
    }
    if "answer_segmentations" in sample.extra:
        row["answer_segmentations"] = sample.extra["answer_segmentations"]
    row["domain"] = sample.domain
    row["sub_domain"] = sample.sub_domain
    if sample.category != "person":
        row["category"] = sample.category
    if sample.think is not None:
        row["think"] = sample.think
    row.update((k, v) for k, v in sample.extra.items() if k not in row)
    return row


class HumanRefWriter:
    """Streams samples into ``out_dir/annotations.jsonl`` and ``out_dir/images/``.

    Samples sharing an ``image_name`` share one image file (their bytes must be identical)."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)
        self.image_root = self.out_dir / IMAGES_DIR
        self.image_root.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.out_dir / ANNOTATIONS_FILE, "w", encoding="utf-8")
        self._written: dict[str, bytes] = {}  # image_name -> digest of its bytes
        self.count = 0

    def write(self, sample: RefSample) -> None:
        if sample.image_bytes is None:
            raise ValueError(f"sample {sample.id!r} carries no image bytes to write")
        line = json.dumps(humanref_row(sample), ensure_ascii=False)
        digest = hashlib.blake2b(sample.image_bytes, digest_size=16).digest()
        previous = self._written.get(sample.image_name)
        if previous is None:
            target = self.image_root / sample.image_name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(sample.image_bytes)
            self._written[sample.image_name] = digest
        elif previous != digest:
            raise ValueError(f"sample {sample.id!r}: image {sample.image_name!r} was already written with other bytes")
        self._jsonl.write(line + "\n")
        self.count += 1

    def close(self) -> None:
        self._jsonl.close()

    def __enter__(self) -> HumanRefWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_humanref(samples: Iterable[RefSample], out_dir: str | os.PathLike) -> Path:
    """Write samples in the HumanRef layout; return the path of ``annotations.jsonl``."""
    with HumanRefWriter(out_dir) as writer:
        for sample in samples:
            writer.write(sample)
    return writer.out_dir / ANNOTATIONS_FILE


def read_humanref(
    jsonl_path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    on_error: str = "raise",
    load_images: bool = True,
    report: ErrorReport | None = None,
) -> list[RefSample]:
    """Read a HumanRef ``annotations.jsonl``.

    ``image_root`` defaults to ``images/`` beside the file. With ``load_images`` each image is read
    into ``image_bytes`` and checked (a missing, truncated or unreadable image is a row error), and
    ``image_size`` is filled in. ``on_error="skip"`` records bad rows in ``report`` and goes on.
    """
    return [sample for _, sample in iter_humanref(jsonl_path, image_root, on_error, load_images, report)]


def iter_humanref(
    jsonl_path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    on_error: str = "raise",
    load_images: bool = True,
    report: ErrorReport | None = None,
) -> Iterator[tuple[int, RefSample]]:
    """:func:`read_humanref` one row at a time, as ``(1-based line number, sample)`` pairs, so a
    large file is never held in memory and every sample can be traced back to its line."""
    path = Path(jsonl_path)
    root = Path(image_root) if image_root is not None else path.parent / IMAGES_DIR
    fail = RowErrorPolicy(on_error, report)
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            sample = _parse_row(line, path, line_no, fail)
            if sample is None:
                continue
            if load_images:
                image_path = root / sample.image_name
                try:
                    data = image_path.read_bytes()
                except OSError as exc:
                    fail(path, line_no, f"cannot read image {image_path}: {exc.strerror or exc}", "missing_image")
                    continue
                try:
                    sample.image_size = checked_image_size(data)
                except ImageCheckError as exc:
                    fail(path, line_no, f"image {image_path}: {exc}", "bad_image")
                    continue
                sample.image_bytes = data
            try:
                if sample.image_size is not None:
                    check_model_image(sample.image_size, f"image {root / sample.image_name}")
                warnings = check_boxes(sample.candidate_boxes, sample.answer_boxes, sample.image_size, clamped=True)
            except BadRow as bad:
                fail(path, line_no, bad.reason, bad.kind)
                continue
            for kind, reason in warnings:
                fail.warn(path, line_no, reason, kind)
            yield line_no, sample
    fail.finish(str(path))


def _parse_row(line: str, path: Path, line_no: int, fail: RowErrorPolicy) -> RefSample | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        fail(path, line_no, f"not valid JSON: {exc}", "bad_json")
        return None
    if not isinstance(row, dict):
        fail(path, line_no, f"expected a JSON object, got {type(row).__name__}", "bad_json")
        return None
    missing = [k for k in ("id", "image_name", "referring", "candidate_boxes", "answer_boxes") if k not in row]
    if missing:
        fail(path, line_no, f"missing keys {missing}", "missing_field")
        return None
    try:
        candidates = as_boxes(row["candidate_boxes"], "candidate_boxes")
        answers = as_boxes(row["answer_boxes"], "answer_boxes")
    except ValueError as exc:
        fail(path, line_no, str(exc), "bad_box")
        return None
    for key in ("image_name", "referring"):
        if not isinstance(row[key], str):
            fail(path, line_no, f"{key} must be a string, got {type(row[key]).__name__}", "bad_field")
            return None
    return RefSample(
        id=str(row["id"]),
        image_name=row["image_name"],
        referring=row["referring"],
        candidate_boxes=candidates,
        answer_boxes=answers,
        category=row.get("category", "person"),
        domain=row.get("domain", ""),
        sub_domain=row.get("sub_domain", ""),
        think=row.get("think"),
        extra={k: v for k, v in row.items() if k not in _MODELLED},
    )
