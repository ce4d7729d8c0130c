"""GRPO training rows (contracts §1.4): the three-column parquet layout of RefCOCOg-RexThinker-20k.

- ``images``: one PNG-encoded RGB image (binary);
- ``problem``: ``<image>Hint: Object and its coordinates in this image: {"person": [[...], ...]}``,
  a newline, then ``Please detect <referring> in this image.``;
- ``answer``: the fenced json list of ``{"bbox_2d": [...], "label": <referring>}`` (``[]`` for a
  rejection).

Hint and answer boxes are integers in the box frame of the model family the file is written for
(:mod:`rexthinker.models.families`). For Qwen2.5-VL (the released layout, and the default) that is
the model-input frame: the ``smart_resize`` frame of each image for the ``min_pixels``/``max_pixels``
the model will be run with. The file does not record those limits, so :func:`read_grpo_parquet`
returns the integers as stored and sets ``RefSample.box_frame`` only when the caller says which
limits were used. A file written for another family (Qwen3-VL, Qwen3.5: 0-1000 relative to the
image) records its family, frame and pixel limits in the schema's metadata under ``FRAME_KEY``
(:func:`parquet_frame`), and the reader sets ``box_frame`` to ``(1000, 1000)`` from that record; a
Qwen2.5-VL file carries no record, so it stays byte-identical to the released layout.

Rows are checked as :mod:`rexthinker.data.errors` describes. The boxes are used verbatim, so any
coordinate outside the model frame is an error (``box_outside``); without pixel limits the frame is
unknown and only negative coordinates are caught.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from rexthinker.contracts.answer import answer_json, parse_answer_cell
from rexthinker.contracts.hint import grpo_problem, parse_problem
from rexthinker.coords import MODEL_PIXELS, RELATIVE_1000, RELATIVE_SCALE, TRAIN_MAX_PIXELS, TRAIN_MIN_PIXELS, model_frame_size
from rexthinker.data.errors import (
    PNG_SIGNATURE,
    BadRow,
    DataError,
    ErrorReport,
    ImageCheckError,
    RowErrorPolicy,
    as_boxes,
    check_boxes,
    check_model_image,
    checked_image_size,
)
from rexthinker.data.sample import RefSample, encode_png
from rexthinker.models.families import QWEN2_5_VL, Family, get_family

COLUMNS = ("images", "problem", "answer")
SCHEMA = pa.schema([("images", pa.binary()), ("problem", pa.string()), ("answer", pa.string())])
FRAME_KEY = b"rexthinker.box_frame"  # schema metadata: {"family", "frame", "min_pixels", "max_pixels"}


def schema_for(family: Family, min_pixels: int, max_pixels: int) -> pa.Schema:
    """The file schema for rows in ``family``'s box frame: :data:`SCHEMA` itself for a model-pixel
    family (the released layout, which records nothing), else :data:`SCHEMA` with the frame recorded
    under :data:`FRAME_KEY`."""
    if family.frame == MODEL_PIXELS:
        return SCHEMA
    record = {"family": family.name, "frame": family.frame, "min_pixels": min_pixels, "max_pixels": max_pixels}
    return SCHEMA.with_metadata({FRAME_KEY: json.dumps(record).encode()})


def parquet_frame(path: str | os.PathLike) -> dict | None:
    """The box-frame record of a GRPO parquet file (see :func:`schema_for`); None for a file without
    one, whose boxes are in Qwen2.5-VL's model-input frame (contracts §1.4)."""
    return _frame_record(Path(path), pq.read_schema(path))


def _frame_record(path: Path, schema: pa.Schema) -> dict | None:
    raw = (schema.metadata or {}).get(FRAME_KEY)
    if raw is None:
        return None
    try:
        record = json.loads(raw)
        family = get_family(record["family"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: unreadable box-frame record {raw[:200]!r} ({exc})") from None
    if record.get("frame") != family.frame:
        raise DataError(f"{path}: records frame {record.get('frame')!r} for family {family.name}, whose frame is {family.frame!r}")
    return record


def _rgb_png(data: bytes) -> bytes:
    """The bytes unchanged when they already are an 8-bit RGB PNG, else re-encoded as one."""
    if data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and data[24] == 8 and data[25] == 2:
        return data
    with Image.open(io.BytesIO(data)) as image:
        return encode_png(image.convert("RGB"))


def grpo_row(
    sample: RefSample, min_pixels: int = TRAIN_MIN_PIXELS, max_pixels: int = TRAIN_MAX_PIXELS, family: Family = QWEN2_5_VL
) -> dict:
    """``{"images", "problem", "answer"}`` for one sample, boxes mapped into ``family``'s box frame
    (the model-input frame of these pixel limits for Qwen2.5-VL, 0-1000 for Qwen3-VL and Qwen3.5)."""
    if sample.image_bytes is None:
        raise ValueError(f"sample {sample.id!r} carries no image bytes to write")
    size = sample.image_size or checked_image_size(sample.image_bytes)
    frame = family.box_frame(size[0], size[1], min_pixels, max_pixels)
    if sample.box_frame is None:
        hints = [frame.encode(b, size) for b in sample.candidate_boxes]
        answers = [frame.encode(b, size) for b in sample.answer_boxes]
    elif tuple(sample.box_frame) == frame.size:
        hints = [[int(v) for v in b] for b in sample.candidate_boxes]
        answers = [[int(v) for v in b] for b in sample.answer_boxes]
    else:
        raise ValueError(
            f"sample {sample.id!r}: boxes are in frame {tuple(sample.box_frame)}, but {family.name}'s {frame.kind} frame "
            f"at these pixel limits is {frame.size}"
        )
    return {
        "images": _rgb_png(sample.image_bytes),
        "problem": grpo_problem(sample.referring, sample.category, hints),
        "answer": answer_json(answers, sample.referring),
    }


class GrpoParquetWriter:
    """Streams samples into a GRPO parquet file, ``row_group_size`` rows per row group, boxes in
    ``family``'s frame (recorded in the file unless it is Qwen2.5-VL's, see :func:`schema_for`)."""

    def __init__(
        self,
        path: str | os.PathLike,
        min_pixels: int = TRAIN_MIN_PIXELS,
        max_pixels: int = TRAIN_MAX_PIXELS,
        row_group_size: int = 1000,
        family: Family = QWEN2_5_VL,
    ):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.min_pixels, self.max_pixels, self.row_group_size = min_pixels, max_pixels, row_group_size
        self.family = family
        self.schema = schema_for(family, min_pixels, max_pixels)
        self._writer = pq.ParquetWriter(self.path, self.schema)
        self._rows: dict[str, list] = {c: [] for c in COLUMNS}
        self.count = 0

    def write(self, sample: RefSample) -> None:
        row = grpo_row(sample, self.min_pixels, self.max_pixels, self.family)
        for column in COLUMNS:
            self._rows[column].append(row[column])
        self.count += 1
        if len(self._rows["images"]) >= self.row_group_size:
            self._flush()

    def _flush(self) -> None:
        if self._rows["images"]:
            self._writer.write_table(pa.table(self._rows, schema=self.schema))
            self._rows = {c: [] for c in COLUMNS}

    def close(self) -> None:
        self._flush()
        self._writer.close()

    def __enter__(self) -> GrpoParquetWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_grpo_parquet(
    samples: Iterable[RefSample],
    path: str | os.PathLike,
    min_pixels: int = TRAIN_MIN_PIXELS,
    max_pixels: int = TRAIN_MAX_PIXELS,
    family: Family = QWEN2_5_VL,
) -> Path:
    """Write samples as GRPO rows whose boxes are in ``family``'s frame for these pixel limits."""
    with GrpoParquetWriter(path, min_pixels, max_pixels, family=family) as writer:
        for sample in samples:
            writer.write(sample)
    return writer.path


def read_grpo_parquet(
    path: str | os.PathLike,
    on_error: str = "raise",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    report: ErrorReport | None = None,
) -> list[RefSample]:
    """Read GRPO rows back into samples.

    Boxes are the stored frame integers. A file that records a 0-1000 frame (:func:`parquet_frame`)
    gets ``box_frame`` ``(1000, 1000)`` whatever the limits passed. For a file without a record (Qwen2.5-VL's
    model-input frame), pass the ``min_pixels`` and ``max_pixels`` it was written for to get ``box_frame``
    set to each image's model frame; without them ``box_frame`` stays None even though the boxes are not
    in original pixels (the file cannot tell). Sample ids
    are ``<file stem>-<row>``; ``domain``, ``sub_domain`` and ``think`` are not stored and stay empty.
    Bad rows are reported with their 0-based row index.
    """
    return [sample for _, sample in iter_grpo_parquet(path, on_error, min_pixels, max_pixels, report)]


def iter_grpo_parquet(
    path: str | os.PathLike,
    on_error: str = "raise",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    report: ErrorReport | None = None,
) -> Iterator[tuple[int, RefSample]]:
    """:func:`read_grpo_parquet` one row at a time, as ``(0-based row index, sample)`` pairs, so a
    large file is never held in memory."""
    if (min_pixels is None) != (max_pixels is None):
        raise ValueError("pass both min_pixels and max_pixels, or neither")
    path = Path(path)
    fail = RowErrorPolicy(on_error, report)
    parquet = pq.ParquetFile(path)
    missing = [c for c in COLUMNS if c not in parquet.schema_arrow.names]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; a GRPO file has {list(COLUMNS)}")
    record = _frame_record(path, parquet.schema_arrow)
    relative = record is not None and record["frame"] == RELATIVE_1000
    row = -1
    for batch in parquet.iter_batches(batch_size=512, columns=list(COLUMNS)):
        cells = {c: batch.column(c).to_pylist() for c in COLUMNS}
        for image, problem, answer in zip(cells["images"], cells["problem"], cells["answer"]):
            row += 1
            sample = _parse_row(path, row, image, problem, answer, fail)
            if sample is None:
                continue
            try:
                check_model_image(sample.image_size, "images cell")
                if relative:
                    sample.box_frame = (RELATIVE_SCALE, RELATIVE_SCALE)
                elif min_pixels is not None:
                    sample.box_frame = model_frame_size(*sample.image_size, min_pixels, max_pixels)
                warnings = check_boxes(sample.candidate_boxes, sample.answer_boxes, sample.box_frame, clamped=False)
            except BadRow as bad:
                fail(path, row, bad.reason, bad.kind, unit="row")
                continue
            for kind, reason in warnings:
                fail.warn(path, row, reason, kind, unit="row")
            yield row, sample
    fail.finish(str(path))


def _parse_row(path: Path, row: int, image, problem, answer, fail: RowErrorPolicy) -> RefSample | None:
    def bad(reason: str, kind: str) -> None:
        fail(path, row, reason, kind, unit="row")

    if isinstance(image, dict):
        image = image.get("bytes")
    if not isinstance(image, (bytes, bytearray)):
        bad(f"images cell holds no bytes ({type(image).__name__})", "bad_image")
        return None
    try:
        size = checked_image_size(bytes(image))
    except ImageCheckError as exc:
        bad(str(exc), "bad_image")
        return None
    if not isinstance(problem, str):
        bad(f"problem must be a string, got {type(problem).__name__}", "bad_problem")
        return None
    try:
        referring, category, hints = parse_problem(problem)
        hints = as_boxes(hints, "hint")
    except ValueError as exc:
        bad(str(exc), "bad_problem")
        return None
    try:
        answers = as_boxes(parse_answer_cell(answer), "answer")
    except (ValueError, TypeError, AttributeError) as exc:
        bad(f"bad answer: {exc}", "bad_answer")
        return None
    return RefSample(
        id=f"{path.stem}-{row}",
        image_name=f"{path.stem}/{row}.png",
        referring=referring,
        candidate_boxes=hints,
        answer_boxes=answers,
        category=category,
        image_bytes=bytes(image),
        image_size=size,
    )
