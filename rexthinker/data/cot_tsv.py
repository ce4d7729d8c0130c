"""HumanRef-CoT layout (contracts §1.2): two TSV files and a byte-offset index.

- ``<prefix>.images.tsv``: ``<key> TAB <base64 of the encoded image>`` per line;
- ``<prefix>.annotations.tsv``: ``<byte offset of the image row> TAB <json>`` per line; the JSON holds
  ``gt_boxes`` (every candidate as ``[x, y, w, h]``), ``region_map`` ({referring: [0-based indices
  into gt_boxes]}), ``think``, and in files this project writes also ``id``, ``image_name``,
  ``domain``, ``sub_domain`` and any ``extra`` keys;
- ``<prefix>.annotations.tsv.lineidx``: the byte offset of each annotation row, one per line.

The real image file is about 10 GB, so :class:`CotTsvReader` never scans it: it seeks to the offsets
the index and the annotation rows give, and keeps both files open. Reading is lazy, so a bad row
would only show when met; :meth:`CotTsvReader.validate` reads and checks every row once (each image
row decoded once), which is what :func:`rexthinker.data.sources.open_samples` does when a stage
opens its data. Boxes are original pixels and are checked as :mod:`rexthinker.data.errors`
describes (reported as corners: a negative width or height is a ``swapped_box``; answers are
indices into ``gt_boxes``, so always hints).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rexthinker.coords import xywh_to_xyxy, xyxy_to_xywh
from rexthinker.data.errors import (
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
from rexthinker.data.sample import RefSample, check_original_frame

_MODELLED = ("gt_boxes", "region_map", "think", "id", "image_name", "domain", "sub_domain", "category")


def cot_paths(prefix: str | os.PathLike) -> tuple[Path, Path, Path]:
    """``(images.tsv, annotations.tsv, annotations.tsv.lineidx)`` for a prefix."""
    prefix = str(prefix)
    return Path(prefix + ".images.tsv"), Path(prefix + ".annotations.tsv"), Path(prefix + ".annotations.tsv.lineidx")


def cot_record(sample: RefSample) -> dict:
    """The annotation JSON of one sample (one region_map entry)."""
    check_original_frame(sample, _MODELLED, "HumanRef-CoT")
    candidates = [list(b) for b in sample.candidate_boxes]
    indices = []
    for box in sample.answer_boxes:
        if list(box) not in candidates:
            raise ValueError(f"sample {sample.id!r}: answer box {list(box)} is not one of the candidates")
        indices.append(candidates.index(list(box)))
    record: dict = {
        "id": sample.id,
        "image_name": sample.image_name,
        "gt_boxes": [xyxy_to_xywh(b) for b in candidates],
        "region_map": {sample.referring: indices},
    }
    if sample.think is not None:
        record["think"] = sample.think
    record["domain"] = sample.domain
    record["sub_domain"] = sample.sub_domain
    if sample.category != "person":
        record["category"] = sample.category
    record.update(sample.extra)
    return record


class CotTsvWriter:
    """Streams samples into the three HumanRef-CoT files; one annotation row per sample, one image
    row per distinct ``image_name``."""

    def __init__(self, out_prefix: str | os.PathLike):
        self.paths = cot_paths(out_prefix)
        self.paths[0].parent.mkdir(parents=True, exist_ok=True)
        self._images, self._annotations, self._lineidx = (open(p, "wb") for p in self.paths)
        self._image_rows: dict[str, tuple[bytes, int]] = {}  # key -> (digest, offset)
        self.count = 0

    def write(self, sample: RefSample) -> None:
        if sample.image_bytes is None:
            raise ValueError(f"sample {sample.id!r} carries no image bytes to write")
        key = sample.image_name or sample.id
        if any(c in key for c in "\t\r\n"):
            raise ValueError(f"sample {sample.id!r}: image key {key!r} contains a tab or newline")
        record = json.dumps(cot_record(sample), ensure_ascii=False)
        digest = hashlib.blake2b(sample.image_bytes, digest_size=16).digest()
        known = self._image_rows.get(key)
        if known is None or known[0] != digest:
            offset = self._images.tell()
            self._images.write(key.encode("utf-8") + b"\t" + base64.b64encode(sample.image_bytes) + b"\n")
            self._image_rows[key] = (digest, offset)
        else:
            offset = known[1]
        self._lineidx.write(f"{self._annotations.tell()}\n".encode())
        self._annotations.write(f"{offset}\t{record}\n".encode("utf-8"))
        self.count += 1

    def close(self) -> None:
        for fh in (self._images, self._annotations, self._lineidx):
            fh.close()

    def __enter__(self) -> CotTsvWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_cot_tsv(samples: Iterable[RefSample], out_prefix: str | os.PathLike) -> tuple[Path, Path, Path]:
    """Write samples as HumanRef-CoT TSV files; return their paths (images, annotations, lineidx)."""
    with CotTsvWriter(out_prefix) as writer:
        for sample in samples:
            writer.write(sample)
    return writer.paths


@dataclass
class CotRecord:
    """One annotation row as stored: its index, the image row's byte offset and the JSON object."""

    index: int
    image_offset: int
    annotation: dict


def _strip_bytes_repr(cell: bytes) -> bytes:
    """Undo Python's ``str(bytes)`` wrapper (``b'...'``) some writers left around a cell."""
    cell = cell.strip()
    if len(cell) >= 3 and cell[:1] == b"b" and cell[1:2] in (b"'", b'"') and cell[-1:] == cell[1:2]:
        return cell[2:-1]
    return cell


class CotTsvReader:
    """Random access to a HumanRef-CoT annotation/image TSV pair.

    ``len(reader)`` is the number of annotation rows. ``record(i)`` returns row ``i`` as stored,
    ``samples(i)`` the samples it holds (one per ``region_map`` entry; [] for a bad row skipped
    under ``on_error="skip"``), ``reader[i]`` the first of them (a bad row raises
    :class:`DataError` in either mode, there being nothing to return), and iterating yields every
    sample of every good row. Candidate boxes come back as corners. :meth:`validate` checks every
    row up front. A row kept with a warning is recorded once in the report, however often it is read.

    ``lineidx`` defaults to ``<annotations>.lineidx`` when that file exists; otherwise the index is
    built in one pass over the annotation file (the only scan this class ever does).
    """

    def __init__(
        self,
        images_tsv: str | os.PathLike,
        annotations_tsv: str | os.PathLike,
        lineidx: str | os.PathLike | None = None,
        on_error: str = "raise",
        report: ErrorReport | None = None,
    ):
        self.images_path = Path(images_tsv)
        self.annotations_path = Path(annotations_tsv)
        self._policy = RowErrorPolicy(on_error, report)
        self.report = self._policy.report
        if lineidx is None and Path(str(annotations_tsv) + ".lineidx").exists():
            lineidx = str(annotations_tsv) + ".lineidx"
        self.offsets = self._read_lineidx(Path(lineidx)) if lineidx is not None else self._build_index()
        self._pid: int | None = None
        self._files: tuple[BinaryIO, BinaryIO] | None = None
        self._warned: set[int] = set()  # rows whose warnings are in the report

    @classmethod
    def from_prefix(cls, prefix: str | os.PathLike, **kwargs) -> CotTsvReader:
        images, annotations, _ = cot_paths(prefix)
        return cls(images, annotations, **kwargs)

    # -- index ---------------------------------------------------------------------------------
    @staticmethod
    def _read_lineidx(path: Path) -> list[int]:
        offsets = []
        with open(path, encoding="ascii") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    offsets.append(int(line))
                except ValueError:
                    raise DataError(f"{path} line {line_no}: not a byte offset: {line.strip()[:40]!r}") from None
        return offsets

    def _build_index(self) -> list[int]:
        offsets, position = [], 0
        with open(self.annotations_path, "rb") as fh:
            for line in fh:
                if line.strip():
                    offsets.append(position)
                position += len(line)
        return offsets

    # -- files -----------------------------------------------------------------------------------
    def _handles(self) -> tuple[BinaryIO, BinaryIO]:
        """Open files, reopened after a fork so processes never share a file position."""
        if self._files is None or self._pid != os.getpid():
            self._files = (open(self.images_path, "rb"), open(self.annotations_path, "rb"))
            self._pid = os.getpid()
        return self._files

    def close(self) -> None:
        if self._files is not None and self._pid == os.getpid():
            for fh in self._files:
                fh.close()
        self._files = None

    def __enter__(self) -> CotTsvReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_files"], state["_pid"] = None, None
        return state

    # -- access ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.offsets)

    def _checked(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"row {index} out of range for {len(self)} rows")
        return index % len(self)

    def record(self, index: int) -> CotRecord:
        """Row ``index`` as stored; raises :class:`DataError` when it cannot be parsed."""
        index = self._checked(index)
        try:
            return self._parse(index)
        except BadRow as bad:
            raise DataError(f"{self.annotations_path} line {index + 1}: {bad.reason}") from None

    def samples(self, index: int) -> list[RefSample]:
        """The samples of row ``index`` (one per referring expression of its region_map)."""
        index = self._checked(index)
        try:
            return self._to_samples(self._parse(index))
        except BadRow as bad:
            self._policy(self.annotations_path, index + 1, bad.reason, bad.kind)  # raises in "raise" mode
            return []

    def __getitem__(self, index: int) -> RefSample:
        found = self.samples(index)
        if not found:
            raise DataError(f"{self.annotations_path} line {self._checked(index) + 1}: row has no readable sample")
        return found[0]

    def __iter__(self) -> Iterator[RefSample]:
        for index in range(len(self)):
            yield from self.samples(index)
        self._policy.finish(str(self.annotations_path))

    def validate(self) -> list[int]:
        """Read and check every row once, its annotation, image row and boxes; return the indices of
        the good rows. Under ``on_error="raise"`` the first bad row raises :class:`DataError`; under
        ``"skip"`` the bad rows go to the report. Each distinct image row is decoded once."""
        good = []
        images: dict[int, tuple[int, int] | BadRow] = {}  # image offset -> size, or why it is bad
        for index in range(len(self)):
            try:
                record = self._parse(index)
                candidates, region_map = _annotation_boxes(record.annotation)
                if record.image_offset not in images:
                    try:
                        images[record.image_offset] = self._image(record.image_offset)[2]
                    except BadRow as bad:
                        images[record.image_offset] = bad
                size = images[record.image_offset]
                if isinstance(size, BadRow):
                    raise BadRow(size.kind, size.reason)
                self._check_boxes(index, candidates, region_map, size)
            except BadRow as bad:
                self._policy(self.annotations_path, index + 1, bad.reason, bad.kind)
                continue
            good.append(index)
        self._policy.finish(str(self.annotations_path))
        return good

    def _parse(self, index: int) -> CotRecord:
        _, annotations = self._handles()
        annotations.seek(self.offsets[index])
        line = annotations.readline()
        offset_text, tab, payload = line.partition(b"\t")
        if not tab:
            raise BadRow("bad_row", f"expected '<image offset> TAB <json>', got {line[:60]!r}")
        try:
            image_offset = int(offset_text)
        except ValueError:
            raise BadRow("bad_offset", f"image offset is not an integer: {offset_text[:40]!r}") from None
        try:
            annotation = json.loads(payload)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise BadRow("bad_json", f"annotation is not valid JSON: {exc}") from None
        if not isinstance(annotation, dict):
            raise BadRow("bad_json", f"annotation must be a JSON object, got {type(annotation).__name__}")
        return CotRecord(index, image_offset, annotation)

    def _image(self, image_offset: int) -> tuple[str, bytes, tuple[int, int]]:
        """``(key, encoded bytes, (width, height))`` of the image row at ``image_offset``."""
        images, _ = self._handles()
        images.seek(image_offset)
        line = images.readline()
        key, tab, cell = line.partition(b"\t")
        where = f"image row at byte {image_offset} of {self.images_path}"
        if not tab:
            raise BadRow("bad_offset", f"no {where}")
        try:
            data = base64.b64decode(_strip_bytes_repr(cell), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRow("bad_base64", f"{where}: bad base64: {exc}") from None
        try:
            size = checked_image_size(data)
        except ImageCheckError as exc:
            raise BadRow("bad_image", f"{where}: {exc}") from None
        check_model_image(size, where)
        return _strip_bytes_repr(key).decode("utf-8", "replace"), data, size

    def _check_boxes(self, index: int, candidates: list[list[float]], region_map: dict, size: tuple[int, int]) -> None:
        """Row ``index``'s boxes in its ``(width, height)`` image; its warnings recorded once."""
        answers = [candidates[i] for indices in region_map.values() for i in indices]
        warnings = check_boxes(candidates, answers, size, clamped=True)
        if index not in self._warned:
            self._warned.add(index)
            for kind, reason in warnings:
                self._policy.warn(self.annotations_path, index + 1, reason, kind)

    def _to_samples(self, record: CotRecord) -> list[RefSample]:
        ann = record.annotation
        candidates, region_map = _annotation_boxes(ann)
        key, data, size = self._image(record.image_offset)
        self._check_boxes(record.index, candidates, region_map, size)
        think = ann.get("think")
        base_id = str(ann.get("id", record.index))
        extra = {k: v for k, v in ann.items() if k not in _MODELLED}
        samples = []
        for n, (referring, indices) in enumerate(region_map.items()):
            samples.append(
                RefSample(
                    id=base_id if len(region_map) == 1 else f"{base_id}#{n}",
                    image_name=ann.get("image_name", key),
                    referring=referring,
                    candidate_boxes=[list(b) for b in candidates],
                    answer_boxes=[list(candidates[i]) for i in indices],
                    category=ann.get("category", "person"),
                    domain=ann.get("domain", ""),
                    sub_domain=ann.get("sub_domain", ""),
                    think=think.get(referring) if isinstance(think, dict) else think,
                    image_bytes=data,
                    image_size=size,
                    extra=dict(extra),
                )
            )
        return samples


def _annotation_boxes(ann: dict) -> tuple[list[list[float]], dict]:
    """``(candidate corner boxes, region_map)`` of an annotation, their structure checked."""
    try:
        candidates = [xywh_to_xyxy(b) for b in as_boxes(ann.get("gt_boxes"), "gt_boxes")]
    except ValueError as exc:
        raise BadRow("bad_box", str(exc)) from None
    region_map = ann.get("region_map")
    if not isinstance(region_map, dict) or not region_map:
        raise BadRow("missing_field", f"region_map must be a non-empty object, got {region_map!r:.60}")
    for referring, indices in region_map.items():
        if not isinstance(indices, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(candidates) for i in indices
        ):
            reason = f"region_map[{referring!r}] = {indices!r:.60} is not a list of gt_boxes indices"
            raise BadRow("bad_index", reason)
    return candidates, region_map
