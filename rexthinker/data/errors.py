"""Row-level error handling shared by every reader.

A reader meets bad rows in real data: a line that is not JSON, a base64 cell that does not decode,
an image cut short by an interrupted download. Each reader takes ``on_error``:

- ``"raise"`` stops at the first bad row with a :class:`DataError` naming the file and the line;
- ``"skip"`` records a :class:`RowError` in an :class:`ErrorReport` and goes on with the next row.

A row that is usable but not clean (a box the prompt builder will clamp into the image) is kept in
either mode and recorded in the report's ``warnings``. Nothing is dropped or changed silently: a
caller either passes its own report and reads it (the trainers print it and write it to
``data_errors.jsonl``), or gets the report's summary logged as a warning when the reader finishes.

Boxes (:func:`check_boxes`, the same rules in every reader):

- ``swapped_box`` (x0 > x1 or y0 > y1; a negative width or height in the CoT TSV),
  ``degenerate_box`` (zero width or height) and ``answer_not_in_hints`` (a ground-truth box that is
  not an exact copy of a hint box) are errors: the row cannot teach the model to copy a hint;
- ``box_outside`` is an error: a box with no area inside the image, or, in the GRPO parquet whose
  boxes are model-frame integers used verbatim, any coordinate outside the model frame (nothing
  clamps them, and the reference reward never matches a negative number);
- ``box_clamped`` is a warning: in the original-pixel formats (HumanRef jsonl, CoT TSV) a box that
  has a negative coordinate or reaches past the right or bottom edge but still covers part of the
  image is kept; the prompt builder clamps it into the model frame, as the reference did.

Images (every reader): ``bad_image`` (unreadable, truncated) and ``bad_image_size`` (a size the
prompt builder cannot write hints for, see :func:`rexthinker.coords.check_image_size`) are errors.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

from rexthinker.coords import check_image_size

ON_ERROR_CHOICES = ("raise", "skip")

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """A malformed row met with ``on_error="raise"``; the message starts with ``file line N:``."""


@dataclass(frozen=True)
class RowError:
    """One bad row: where it is, what kind of problem it has (``bad_json``, ``bad_image``...) and a
    human-readable reason. ``line`` is 1-based for text files; for parquet ``unit`` is ``"row"`` and
    ``line`` is the 0-based row index."""

    file: str
    line: int
    reason: str
    kind: str = "invalid"
    unit: str = "line"

    def __str__(self) -> str:
        return f"{self.file} {self.unit} {self.line}: {self.reason}"


@dataclass
class ErrorReport:
    """The bad rows a reader skipped (``errors``) and the rows it kept with a warning
    (``warnings``), each in the order met. ``len()`` counts the bad rows."""

    errors: list[RowError] = field(default_factory=list)
    warnings: list[RowError] = field(default_factory=list)

    def add(self, file: str, line: int, reason: str, kind: str = "invalid", unit: str = "line") -> RowError:
        error = RowError(str(file), line, reason, kind, unit)
        self.errors.append(error)
        return error

    def summary(self) -> dict[str, int]:
        """Number of errors per kind, most frequent first."""
        return dict(Counter(e.kind for e in self.errors).most_common())

    def warning_summary(self) -> dict[str, int]:
        """Number of warnings per kind, most frequent first."""
        return dict(Counter(w.kind for w in self.warnings).most_common())

    def write_jsonl(self, path: str | os.PathLike) -> Path:
        """One JSON object per entry, errors first: ``file``, ``line``, ``unit``, ``kind``,
        ``reason`` and ``action`` ("skipped" for a bad row, "kept" for a warning)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for action, entries in (("skipped", self.errors), ("kept", self.warnings)):
                for entry in entries:
                    f.write(json.dumps({**asdict(entry), "action": action}, ensure_ascii=False) + "\n")
        return path

    def __len__(self) -> int:
        return len(self.errors)

    def __str__(self) -> str:
        if not self.errors and not self.warnings:
            return "no errors"
        parts = []
        for what, entries, counts in (("skipped {} bad rows", self.errors, self.summary()),
                                      ("kept {} rows with warnings", self.warnings, self.warning_summary())):  # fmt: skip
            if entries:
                kinds = ", ".join(f"{kind}: {count}" for kind, count in counts.items())
                parts.append(f"{what.format(len(entries))} ({kinds}); first: {entries[0]}")
        return "; ".join(parts)


class RowErrorPolicy:
    """Applies ``on_error`` for one read: raise at once, or record and let the reader skip the row."""

    def __init__(self, on_error: str, report: ErrorReport | None):
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
        self.on_error = on_error
        self.caller_owns_report = report is not None
        self.report = report if report is not None else ErrorReport()

    def __call__(self, file: str, line: int, reason: str, kind: str = "invalid", unit: str = "line") -> None:
        error = RowError(str(file), line, reason, kind, unit)
        if self.on_error == "raise":
            raise DataError(str(error))
        self.report.errors.append(error)

    def warn(self, file: str, line: int, reason: str, kind: str, unit: str = "line") -> None:
        """Record a row kept in either mode, with what is wrong with it."""
        self.report.warnings.append(RowError(str(file), line, reason, kind, unit))

    def finish(self, what: str) -> None:
        """Log the skipped rows and the warnings when nobody else will see the report."""
        if (self.report.errors or self.report.warnings) and not self.caller_owns_report:
            logger.warning("%s: %s", what, self.report)


class BadRow(ValueError):
    """A problem that makes a row unusable, with its ``kind``; a reader hands it to its policy."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


class ImageCheckError(ValueError):
    """Encoded image bytes that do not hold a complete, readable image."""


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def checked_image_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of an encoded image after a cheap completeness check.

    PNG: every chunk is read and its CRC verified, which catches truncation and corruption without
    decompressing the pixels. JPEG: the end-of-image marker must be present. Other formats: full
    decode. Raises :class:`ImageCheckError`.
    """
    if not data:
        raise ImageCheckError("empty image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            size = image.size
            fmt = image.format
            if fmt == "PNG":
                image.verify()
            elif fmt == "JPEG":
                if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
                    raise ImageCheckError("JPEG without end-of-image marker (truncated?)")
            else:
                image.load()
    except ImageCheckError:
        raise
    except Exception as exc:  # PIL raises OSError, SyntaxError, struct.error... on bad data
        raise ImageCheckError(f"unreadable image: {type(exc).__name__}: {exc}") from exc
    return size


def as_boxes(value: object, what: str) -> list[list[float]]:
    """Check that ``value`` is a list of 4-number boxes (ints stay ints); raise ValueError naming
    ``what`` otherwise."""
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list of boxes, got {type(value).__name__}")
    boxes = []
    for k, box in enumerate(value):
        if (
            not isinstance(box, list)
            or len(box) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
        ):
            raise ValueError(f"{what}[{k}] is not a box of 4 finite numbers: {box!r}")
        boxes.append(list(box))
    return boxes


def check_model_image(size: tuple[int, int], what: str) -> None:
    """Raise :class:`BadRow` (``bad_image_size``, the reason starting with ``what``) for an image of
    ``(width, height)`` the prompt builder cannot handle."""
    try:
        check_image_size(*size)
    except ValueError as exc:
        raise BadRow("bad_image_size", f"{what}: {exc}") from None


def check_boxes(
    hints: list[list[float]], answers: list[list[float]], frame: tuple[int, int] | None, clamped: bool
) -> list[tuple[str, str]]:
    """Check a row's corner boxes against the rules in this module's docstring.

    ``frame`` is the ``(width, height)`` the boxes are in (None when unknown: only negative
    coordinates are checked against it). ``clamped`` says whether the prompt builder clamps the boxes
    into the model frame (original-pixel formats) or uses them verbatim (the GRPO parquet). Raises
    :class:`BadRow` for an error; returns the warnings as ``(kind, reason)`` pairs.
    """
    width, height = frame if frame is not None else (math.inf, math.inf)
    where = "the image" if frame is None else f"the {width}x{height} {'image' if clamped else 'model frame'}"
    outside = []
    for k, box in enumerate(hints):
        x0, y0, x1, y1 = box
        if x0 > x1 or y0 > y1:
            raise BadRow("swapped_box", f"hint box {k} {box} has swapped corners (need x0 <= x1 and y0 <= y1)")
        if x0 == x1 or y0 == y1:
            raise BadRow("degenerate_box", f"hint box {k} {box} has zero width or height")
        if x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height:
            continue
        if not clamped or x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            raise BadRow("box_outside", f"hint box {k} {box} lies outside {where}")
        outside.append(f"{k} {box}")
    hint_set = {tuple(box) for box in hints}
    for k, box in enumerate(answers):
        if tuple(box) not in hint_set:
            raise BadRow("answer_not_in_hints", f"answer box {k} {box} is not one of the hint boxes")
    if not outside:
        return []
    return [("box_clamped", f"hint boxes {', '.join(outside)} reach outside {where}; the prompt builder clamps them")]
