"""Row-level error handling shared by every reader.

A reader meets bad rows in real data: a line that is not JSON, a base64 cell that does not decode,
an image cut short by an interrupted download. Each reader takes ``on_error``:

- ``"raise"`` stops at the first bad row with a :class:`DataError` naming the file and the line;
- ``"skip"`` records a :class:`RowError` in an :class:`ErrorReport` and goes on with the next row.

Nothing is dropped silently: a caller that skips rows either passes its own report and reads it, or
gets the report's summary logged as a warning when the reader finishes.
"""

from __future__ import annotations

import io
import logging
import math
from collections import Counter
from dataclasses import dataclass, field

from PIL import Image

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
    """The bad rows a reader skipped, in the order met."""

    errors: list[RowError] = field(default_factory=list)

    def add(self, file: str, line: int, reason: str, kind: str = "invalid", unit: str = "line") -> RowError:
        error = RowError(str(file), line, reason, kind, unit)
        self.errors.append(error)
        return error

    def summary(self) -> dict[str, int]:
        """Number of errors per kind, most frequent first."""
        return dict(Counter(e.kind for e in self.errors).most_common())

    def __len__(self) -> int:
        return len(self.errors)

    def __str__(self) -> str:
        if not self.errors:
            return "no errors"
        kinds = ", ".join(f"{kind}: {count}" for kind, count in self.summary().items())
        return f"{len(self.errors)} bad rows ({kinds}); first: {self.errors[0]}"


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

    def finish(self, what: str) -> None:
        """Log the skipped rows when nobody else will see the report."""
        if self.report.errors and not self.caller_owns_report:
            logger.warning("%s: skipped %s", what, self.report)


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
