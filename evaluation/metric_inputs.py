"""What the HumanRef metric reads: ground truth, its COCO run-length masks, prediction files.

:class:`GroundTruth` (or :func:`load_ground_truth` for an ``annotations.jsonl``) checks the ground
truth and packs it into arrays once; a malformed row raises. :func:`load_predictions` reads a
prediction JSONL keeping bad lines as errors, and :func:`prepare_predictions` lines a prediction set
up with a ground truth as arrays, reporting malformed, duplicate and unknown rows instead of raising.
Point predictions are tested against the answer masks through one run table (``_MaskTable``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain

import numpy as np

from evaluation.metric_results import REJECTION, bucket_of
from rexthinker import rle as rle_codec
from rexthinker.data.errors import RowError

# ------------------------------------------------------------------------------------------------
# Ground truth


class GroundTruth:
    """HumanRef ground truth checked and packed into arrays once, for any number of evaluations.

    Built from ``annotations.jsonl`` rows (dicts) or from ``RefSample`` objects in original pixels.
    A malformed row raises ``ValueError`` naming it: the ground truth must be right.
    """

    def __init__(self, rows: Iterable[Mapping | object], source: str = "<ground truth>"):
        self.source = source
        self.ids: list[str] = []
        self.domain: list[str] = []
        self.sub_domain: list[str] = []
        self.segmentations: list[list | None] = []
        answers: list[list] = []
        n_cand = []
        for k, row in enumerate(rows, 1):
            item = _gt_fields(row, f"{source} row {k}")
            self.ids.append(item["id"])
            self.domain.append(item["domain"])
            self.sub_domain.append(item["sub_domain"])
            self.segmentations.append(item["segmentations"])
            answers.append(item["answers"])
            n_cand.append(item["n_candidates"])
        self.index = {sample_id: i for i, sample_id in enumerate(self.ids)}
        if len(self.index) != len(self.ids):
            seen: set[str] = set()
            dup = next(i for i in self.ids if i in seen or seen.add(i))
            raise ValueError(f"{source}: ground-truth id {dup!r} appears more than once")
        self.boxes = _numeric_boxes(answers, 4)
        if self.boxes is None:
            k = next(k for k, boxes in enumerate(answers) if not all(_is_numbers(b, 4) for b in boxes))
            raise ValueError(
                f"{source} row {k + 1} (id {self.ids[k]!r}): answer_boxes must be [x0, y0, x1, y1] lists of finite numbers"
            )
        self.n_gt = np.array([len(a) for a in answers], dtype=np.int64)
        self.n_candidates = np.asarray(n_cand, dtype=np.int64)
        self.box_start = np.cumsum(self.n_gt) - self.n_gt
        self.rejection = np.array([d == REJECTION for d in self.domain], dtype=bool)
        empty = np.flatnonzero(~self.rejection & (self.n_gt == 0))
        if empty.size:
            i = int(empty[0])
            raise ValueError(
                f"{source}: sample {self.ids[i]!r} (domain {self.domain[i]!r}) has no answer boxes; "
                "only the rejection domain may be empty"
            )
        self.scored = np.flatnonzero(~self.rejection)  # samples with targets, in file order
        # Positions (within ``scored``) of each group's samples, groups in the order the official
        # script meets them (its pooled means add domain after domain in that order).
        self.groups: dict[str, dict[str, list[int]]] = {"domain": {}, "subdomain": {}, "bucket": {}}
        for pos, s in enumerate(self.scored.tolist()):
            self.groups["domain"].setdefault(self.domain[s], []).append(pos)
            self.groups["subdomain"].setdefault(self.sub_domain[s], []).append(pos)
            self.groups["bucket"].setdefault(bucket_of(int(self.n_gt[s])), []).append(pos)
        self.subdomain_domain: dict[str, str] = {}
        for dom, sub in zip(self.domain, self.sub_domain):
            self.subdomain_domain.setdefault(sub, dom)
        self._masks: _MaskTable | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def masks(self) -> _MaskTable:
        """Every answer mask decoded into one table (built on first use, then kept)."""
        if self._masks is None:
            self._masks = _MaskTable.build(self)
        return self._masks


_GT_KEYS = frozenset(("id", "answer_boxes", "candidate_boxes", "domain", "sub_domain"))


def _gt_fields(row: Mapping | object, where: str) -> dict:
    if isinstance(row, Mapping):
        if not _GT_KEYS <= row.keys():
            raise ValueError(f"{where}: a HumanRef row needs {', '.join(sorted(_GT_KEYS))}")
        get = row.get
        segmentations = row.get("answer_segmentations")
    else:  # a RefSample
        if getattr(row, "box_frame", None) is not None:
            raise ValueError(f"{where}: boxes are in a resized frame {row.box_frame}; the metric needs original pixels")
        get = row.__dict__.get
        segmentations = row.extra.get("answer_segmentations")
    sample_id, answers, candidates = get("id"), get("answer_boxes"), get("candidate_boxes")
    domain, sub_domain = get("domain"), get("sub_domain")
    if isinstance(sample_id, bool) or not isinstance(sample_id, (str, int)):
        raise ValueError(f"{where}: id must be a string or an integer, got {sample_id!r}")
    if not isinstance(answers, list):  # the boxes inside are checked in bulk by _numeric_boxes
        raise ValueError(f"{where} (id {sample_id!r}): answer_boxes must be a list of [x0, y0, x1, y1]")
    if not isinstance(candidates, list):
        raise ValueError(f"{where} (id {sample_id!r}): candidate_boxes must be a list")
    if not isinstance(domain, str) or not isinstance(sub_domain, str):
        raise ValueError(f"{where} (id {sample_id!r}): domain and sub_domain must be strings")
    if segmentations is not None and not isinstance(segmentations, list):
        raise ValueError(f"{where} (id {sample_id!r}): answer_segmentations must be a list of RLE dicts")
    return {
        "id": str(sample_id),
        "answers": answers,
        "n_candidates": len(candidates),
        "domain": domain,
        "sub_domain": sub_domain,
        "segmentations": segmentations,
    }


def _is_numbers(value: object, size: int) -> bool:
    """``value`` is a list of ``size`` finite numbers (booleans are not coordinates)."""
    return (
        isinstance(value, list)
        and len(value) == size
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )


def _numeric_boxes(groups: Sequence[Sequence[list]], size: int) -> np.ndarray | None:
    """All boxes of all groups as one ``(n, size)`` float64 array, or None when any box is not a list
    of ``size`` finite numbers (the caller then looks for the culprit row by row). The checks run as
    set-of-types comparisons, which is what keeps 6,000 rows well under the cost of the matching."""
    boxes = list(chain.from_iterable(groups))
    if not boxes:
        return np.zeros((0, size))
    if set(map(type, boxes)) != {list} or set(map(len, boxes)) != {size}:
        return None
    flat = list(chain.from_iterable(boxes))
    if not set(map(type, flat)) <= {int, float}:  # bool, str, None... or a subclass such as numpy.float64
        if not all(_is_numbers(box, size) for box in boxes):
            return None
    values = np.asarray(flat, dtype=np.float64).reshape(-1, size)
    return values if np.isfinite(values).all() else None


def load_ground_truth(path: str | os.PathLike) -> GroundTruth:
    """Read and check a HumanRef ``annotations.jsonl``."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} line {line_no}: not valid JSON: {exc}") from exc
    return GroundTruth(rows, source=str(path))


# ------------------------------------------------------------------------------------------------
# COCO run-length masks


@dataclass
class _MaskTable:
    """All answer masks of a ground truth as one run table, for vectorised point-in-mask tests.

    Mask ``k`` occupies the pixel interval ``[base[k], base[k] + h*w)`` of one long column-major
    strip; its runs are laid end to end in it (padded with background up to ``h*w``), so a point's
    run is one ``searchsorted`` over ``run_ends`` for all points of all masks.
    """

    first: np.ndarray  # first mask of each sample
    height: np.ndarray
    width: np.ndarray
    base: np.ndarray
    run_ends: np.ndarray
    foreground: np.ndarray  # per run

    @classmethod
    def build(cls, gt: GroundTruth) -> _MaskTable:
        per_sample = np.array([len(m) if m else 0 for m in gt.segmentations], dtype=np.int64)
        rles = [rle for masks in gt.segmentations if masks for rle in masks]
        try:
            size = np.array([rle["size"] for rle in rles], dtype=np.int64).reshape(-1, 2)
            runs, per_mask = rle_codec.runs_of(rles)
        except (KeyError, TypeError, ValueError) as exc:  # name the first bad mask
            for sample, masks in enumerate(gt.segmentations):
                for k, rle in enumerate(masks or []):
                    try:
                        rle_codec.counts(rle), [int(v) for v in rle["size"]]
                    except (KeyError, TypeError, ValueError) as bad:
                        raise ValueError(f"{gt.source}: sample {gt.ids[sample]!r} mask {k}: bad RLE ({bad})") from bad
            raise ValueError(f"{gt.source}: bad answer_segmentations ({exc})") from exc
        height, width = size[:, 0], size[:, 1]
        first_run = np.cumsum(per_mask) - per_mask
        running = np.concatenate(([0], np.cumsum(runs)))
        run_sum = running[first_run + per_mask] - running[first_run]
        padding = np.maximum(height * width - run_sum, 0)
        runs = np.insert(runs, first_run + per_mask, padding)  # one background run closes each mask
        position = np.arange(runs.size) - np.repeat(first_run + np.arange(per_mask.size), per_mask + 1)
        foreground = (position % 2 == 1) & (position < np.repeat(per_mask, per_mask + 1))
        span = run_sum + padding
        return cls(
            first=np.cumsum(per_sample) - per_sample,
            height=height,
            width=width,
            base=np.cumsum(span) - span,
            run_ends=np.cumsum(runs),
            foreground=foreground,
        )

    def contains(self, mask: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether pixel ``(x, y)`` is foreground in ``mask``, elementwise."""
        height, width = self.height[mask], self.width[mask]
        in_frame = (x >= 0) & (x < width) & (y >= 0) & (y < height)
        pixel = self.base[mask] + np.where(in_frame, x * height + y, 0)
        run = np.searchsorted(self.run_ends, pixel, side="right")
        return in_frame & self.foreground[np.minimum(run, self.foreground.size - 1)]


# ------------------------------------------------------------------------------------------------
# Predictions


@dataclass
class PredictionFile:
    """Rows of a prediction JSONL with their line numbers, and the lines that did not parse."""

    source: str
    rows: list[tuple[int, object]]
    errors: list[RowError] = field(default_factory=list)


def load_predictions(path: str | os.PathLike) -> PredictionFile:
    """Read a prediction JSONL (``{"id", "extracted_predictions"}`` per line); bad lines are kept
    as errors, not raised."""
    result = PredictionFile(str(path), [])
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                result.rows.append((line_no, json.loads(line)))
            except json.JSONDecodeError as exc:
                result.errors.append(RowError(str(path), line_no, f"not valid JSON: {exc}", "bad_json"))
    return result


@dataclass
class Predictions:
    """A prediction set lined up with a ground truth: what ``evaluation.metric.evaluate`` scores."""

    kind: str
    counts: np.ndarray  # predictions per ground-truth sample (0 when missing or empty)
    values: np.ndarray  # (sum(counts), 2 or 4), samples in ground-truth order
    present: np.ndarray  # bool per sample: the file has a row for it (well-formed or not)
    rejects: np.ndarray  # bool per sample: no row, or a row predicting nothing (see _rows_by_id)
    errors: list[RowError]
    duplicates: list[str]
    unknown: list[str]


def _file_kind(rows: Sequence[tuple[int, object]]) -> str:
    """``point`` when the first prediction in the file is an ``[x, y]`` pair, else ``box``."""
    for _, row in rows:
        preds = row.get("extracted_predictions") if isinstance(row, dict) else None
        if isinstance(preds, list):
            for entry in preds:
                if isinstance(entry, list) and len(entry) in (2, 4):
                    return "point" if len(entry) == 2 else "box"
    return "box"


def prepare_predictions(gt: GroundTruth, predictions: PredictionFile | Iterable[object]) -> Predictions:
    if not isinstance(predictions, PredictionFile):
        predictions = PredictionFile("<rows>", list(enumerate(predictions, 1)))
    kind = _file_kind(predictions.rows)
    size = 2 if kind == "point" else 4
    by_id, empty, errors, duplicates = _rows_by_id(predictions, kind, size, numbers_checked=False)
    entries = [by_id.get(sample_id) for sample_id in gt.ids]
    values = _numeric_boxes([e for e in entries if e], size)
    if values is None:  # some coordinate is not a finite number: check row by row
        by_id, empty, errors, duplicates = _rows_by_id(predictions, kind, size, numbers_checked=True)
        entries = [by_id.get(sample_id) for sample_id in gt.ids]
        values = _numeric_boxes([e for e in entries if e], size)
    counts = np.array([len(e) if e is not None else 0 for e in entries], dtype=np.int64)
    present = np.array([sample_id in by_id for sample_id in gt.ids], dtype=bool)
    rejects = np.array([empty.get(sample_id, True) for sample_id in gt.ids], dtype=bool)
    unknown = [key for key in by_id if key not in gt.index]
    return Predictions(kind, counts, values, present, rejects, errors, duplicates, unknown)


def _rows_by_id(predictions: PredictionFile, kind: str, size: int, numbers_checked: bool):
    """For every id: the entries of its last row (None when that row is malformed: scored as
    missing), whether that row predicts nothing (how the official script judges a rejection: an empty
    list or an empty first entry, whatever follows), the malformed rows as errors, and the ids seen
    more than once. The last row of an id wins, as in the official script."""
    errors = list(predictions.errors)
    by_id: dict[str, list | None] = {}
    empty: dict[str, bool] = {}
    duplicates: set[str] = set()
    for line_no, row in predictions.rows:
        entries, problem = _check_row(row, size, kind, numbers_checked)
        if problem:
            errors.append(RowError(predictions.source, line_no, problem + " (treated as missing)", "bad_prediction"))
        if not isinstance(row, dict) or not _valid_id(row.get("id")):
            continue
        key = str(row["id"])
        if key in by_id:
            duplicates.add(key)
        by_id[key] = None if problem else entries
        raw = row.get("extracted_predictions")
        empty[key] = isinstance(raw, list) and (not raw or (hasattr(raw[0], "__len__") and len(raw[0]) == 0))
    return by_id, empty, errors, sorted(duplicates)


def _valid_id(value: object) -> bool:
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def _check_row(row: object, size: int, kind: str, numbers_checked: bool) -> tuple[list, str | None]:
    if not isinstance(row, dict):
        return [], f"expected a JSON object, got {type(row).__name__}"
    sample_id = row.get("id")
    if not _valid_id(sample_id):
        return [], f"missing or invalid id {sample_id!r}"
    entries = row.get("extracted_predictions")
    if not isinstance(entries, list):
        return [], f"id {sample_id!r}: extracted_predictions must be a list, got {type(entries).__name__}"
    if entries == [[]]:  # the benchmark's other spelling of "no prediction"
        return [], None
    if numbers_checked and not all(_is_numbers(e, size) for e in entries):
        what = "[x, y] points" if kind == "point" else "[x0, y0, x1, y1] boxes"
        return [], f"id {sample_id!r}: a {kind} file needs {what} of finite numbers, got {entries!r:.80}"
    return entries, None
