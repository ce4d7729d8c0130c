"""The HumanRef metric: recall, precision and DensityF1 of referring predictions (contracts §4).

    python evaluation/metric.py --gt_path HumanRef/annotations.jsonl \\
        --pred_path rexthinker.jsonl qwen.jsonl --pred_names "Rex-Thinker" "Qwen2.5-VL" \\
        --dump_path outputs/humanref/comparison [--mode reference|corrected|both] [--no_charts]

The command line is the official script's (``--gt_path``, ``--pred_path`` one or more,
``--pred_names``, ``--dump_path``) and, in the default ``reference`` mode, so are the numbers,
to the last bit, quirks included, so they can sit beside published ones:

- IoU on continuous coordinates, no ``+1``; thresholds are the floats of
  ``numpy.arange(0.5, 1.0, 0.05)``, so "0.8" is 0.8000000000000003 and an IoU of exactly 0.8 fails it;
- matching is greedy per threshold: each ground-truth box, in annotation order, takes the unused
  prediction with the highest IoU reaching the threshold (ties: the earliest prediction);
- DensityF1 = F1 x min(1, (|gt|/N) / (|pred|/N)) with N the image's candidate (person) count, which
  is 0 when the image has no candidates; @0.5:0.95 values are means over the ten thresholds;
- point files (predictions are ``[x, y]``): each ground-truth mask, in order, takes the first unused
  point inside it (``int(round(x))``, Python's half-to-even rounding); a sample with no point scores
  recall 0 and *precision 1* (the official script's behaviour; DensityF1 is 0 either way);
- rejection samples are correct when the prediction is empty or ``[[]]``, or missing; the rejection
  score is the count of correct ones (the paper divides by 10 for a percentage of 1,000);
- means are unweighted over samples, per domain, sub-domain and target-count bucket (``1``, ``2-5``,
  ``6-10``, ``>10``); "All Data" pools every non-rejection sample.

``--mode corrected`` fixes the parts that make the official numbers depend on annotation order and
float noise: matching is a maximum one-to-one assignment (boxes and points), thresholds are the exact
decimals 0.5, 0.55, ..., 0.95, DensityF1's penalty is min(1, |gt|/|pred|) straight, and a sample with
no point has precision 0. ``--mode both`` puts both in one table (corrected rows are suffixed
``(corrected)``).

Things the official script does not do: a malformed prediction row (bad JSON, no id, a box that is
not four finite numbers, a point in a box file...) is reported with its file and line and scored as
missing instead of crashing the run (a rejection sample is still judged on the row's emptiness, as
officially: ``[[], <anything>]`` rejects, ``[[1, 2, 3]]`` does not); ids without a row, predicted
twice (the last row wins, as officially) or unknown to the ground truth are reported. A non-rejection
sample without answer boxes stops the run (the official script crashes on it too).

Outputs in ``--dump_path``: ``comparison.md`` (the tables printed), ``comparison.json`` (the official
layout: ``domain_subdomain_metrics`` and ``box_count_metrics`` lists of rows whose keys are
``domain``, ``subdomain`` (or ``box count``), ``model``, ``recall_@point``, ``precision_@point``,
``densityf1_@point``, ``recall_@0.5``, ``recall_@0.5:0.95``, ``precision_@0.5``,
``precision_@0.5:0.95``, ``densityf1_@0.5``, ``densityf1_@0.5:0.95``, ``rejection_score``,
``samples``; values rounded to 3 decimals and ``""`` for empty cells, as there), ``details.json``
(full precision, missing and malformed rows) and two charts, ``chart_domains.png`` and
``chart_target_count.png``.

Library use: :func:`evaluate` scores one prediction set, :func:`write_report` writes the files for
one or several results, :func:`compare` does what the command line does.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

from rexthinker import rle as rle_codec
from rexthinker.data.errors import RowError

MODES = ("reference", "corrected")
# The official thresholds, float noise included (0.8000000000000003, ...).
REFERENCE_THRESHOLDS = np.arange(0.5, 1.0, 0.05)
# The decimals those were meant to be: k / 20 is the double nearest to 0.55, 0.6, ...
EXACT_THRESHOLDS = np.arange(10, 20) / 20.0
BUCKETS = ("1", "2-5", "6-10", ">10")
REJECTION = "rejection"
CORRECTED_SUFFIX = " (corrected)"


# ------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Scores:
    """Means over one group of samples. Box files fill the ``_50`` / ``_50_95`` fields, point files
    the ``_point`` ones; the others stay None."""

    samples: int
    recall_point: float | None = None
    precision_point: float | None = None
    densityf1_point: float | None = None
    recall_50: float | None = None
    recall_50_95: float | None = None
    precision_50: float | None = None
    precision_50_95: float | None = None
    densityf1_50: float | None = None
    densityf1_50_95: float | None = None

    @property
    def rank_key(self) -> float:
        """What rows are sorted by within a group: DensityF1@0.5:0.95, or DensityF1@Point."""
        return self.densityf1_point if self.densityf1_point is not None else self.densityf1_50_95


@dataclass
class SampleScores:
    """Per-sample values of the scored (non-rejection) samples, in ground-truth order. Box files
    have one column per threshold; point files one column."""

    ids: list[str]
    matches: np.ndarray  # (n, T) int
    n_gt: np.ndarray  # (n,)
    n_pred: np.ndarray  # (n,)
    recall: np.ndarray  # (n, T)
    precision: np.ndarray  # (n, T)
    densityf1: np.ndarray  # (n, T)


@dataclass
class ModelResult:
    """Everything the metric knows about one prediction set."""

    name: str
    mode: str
    kind: str  # "box" or "point"
    thresholds: tuple[float, ...]  # empty for point files
    domains: dict[str, Scores]  # sorted by name; rejection is not among them
    subdomains: dict[str, Scores]  # sorted by name
    subdomain_domain: dict[str, str]  # sub-domain -> the domain of its first ground-truth row
    buckets: dict[str, Scores]  # target-count buckets present, in BUCKETS order
    all_data: Scores | None  # every non-rejection sample, pooled domain by domain
    bucket_average: Scores | None  # the same samples pooled bucket by bucket (the box-count table's "Average")
    rejection_score: int
    rejection_total: int
    missing_ids: list[str] = field(default_factory=list)  # ground-truth ids the prediction file has no row for
    missing_rejection_ids: list[str] = field(default_factory=list)  # the rejection ones (counted as correct)
    malformed: list[RowError] = field(default_factory=list)  # rows scored as missing, with file and line
    duplicate_ids: list[str] = field(default_factory=list)  # ids predicted more than once (last row kept)
    unknown_ids: list[str] = field(default_factory=list)  # predicted ids absent from the ground truth
    per_sample: SampleScores | None = None

    @property
    def is_point(self) -> bool:
        return self.kind == "point"

    def summary(self) -> dict:
        """The numbers of this result as plain data (what two implementations must agree on)."""

        def table(groups: Mapping[str, Scores]) -> dict:
            return {key: asdict(scores) for key, scores in groups.items()}

        return {
            "kind": self.kind,
            "domains": table(self.domains),
            "subdomains": table(self.subdomains),
            "buckets": table(self.buckets),
            "all_data": asdict(self.all_data) if self.all_data else None,
            "bucket_average": asdict(self.bucket_average) if self.bucket_average else None,
            "rejection_score": self.rejection_score,
            "rejection_total": self.rejection_total,
        }


# ------------------------------------------------------------------------------------------------
# Ground truth


def bucket_of(n_targets: int) -> str:
    """Target-count bucket of a sample (the official script puts 0 in ``>10``; it never gets there)."""
    if n_targets == 1:
        return "1"
    if 2 <= n_targets <= 5:
        return "2-5"
    if 6 <= n_targets <= 10:
        return "6-10"
    return ">10"


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
class _Predictions:
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


def _prepare_predictions(gt: GroundTruth, predictions: PredictionFile | Iterable[object]) -> _Predictions:
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
    return _Predictions(kind, counts, values, present, rejects, errors, duplicates, unknown)


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


# ------------------------------------------------------------------------------------------------
# Matching


@dataclass
class _Pairs:
    """Every (ground truth, prediction) pair within each sample, ground-truth-major, predictions in
    file order: the layout the official double loop visits them in."""

    sample: np.ndarray  # sample of each pair
    left: np.ndarray  # global index of its ground-truth item
    right: np.ndarray  # global index of its prediction
    rank: np.ndarray  # position of its ground-truth item within the sample
    n_left: np.ndarray  # ground-truth items per sample
    n_right: np.ndarray  # predictions per sample

    @classmethod
    def of(cls, n_left: np.ndarray, n_right: np.ndarray) -> _Pairs:
        per_sample = n_left * n_right
        sample = np.repeat(np.arange(n_left.size), per_sample)
        local = np.arange(int(per_sample.sum())) - (np.cumsum(per_sample) - per_sample)[sample]
        width = np.maximum(n_right[sample], 1)
        rank = local // width
        left = (np.cumsum(n_left) - n_left)[sample] + rank
        right = (np.cumsum(n_right) - n_right)[sample] + local % width
        return cls(sample, left, right, rank, n_left, n_right)


def box_iou_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``a[k]`` with ``b[k]`` (``(n, 4)`` corner boxes): continuous coordinates, no ``+1``,
    zero when the intersection is empty or inverted. Operation for operation the official
    ``calculate_iou(a, b)``, so the doubles agree bit for bit."""
    ix0 = np.maximum(a[:, 0], b[:, 0])
    iy0 = np.maximum(a[:, 1], b[:, 1])
    ix1 = np.minimum(a[:, 2], b[:, 2])
    iy1 = np.minimum(a[:, 3], b[:, 3])
    overlap = (ix1 > ix0) & (iy1 > iy0)
    inter = (ix1 - ix0) * (iy1 - iy0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iou = inter / (area_a + area_b - inter)
    return np.where(overlap, iou, 0.0)


def greedy_match_counts(values: np.ndarray, pairs: _Pairs, thresholds: np.ndarray) -> np.ndarray:
    """The official matching, ``(samples, T)`` match counts: each ground-truth item, in annotation
    order, takes the unused prediction with the highest value reaching the threshold (ties: the
    earliest prediction).

    Vectorised over samples and thresholds by rounds: round ``r`` lets the ``r``-th ground-truth item
    of every sample choose at once, so the Python loop runs once per item *position* (the largest
    target count), not once per sample.
    """
    n_thr = thresholds.size
    used = np.zeros((int(pairs.n_right.sum()), n_thr), dtype=bool)
    matched = np.zeros((int(pairs.n_left.sum()), n_thr), dtype=bool)
    by_round = np.argsort(pairs.rank, kind="stable")  # keeps ground-truth-major, prediction order
    bounds = np.searchsorted(pairs.rank[by_round], np.arange(int(pairs.n_left.max(initial=0)) + 1))
    for r in range(bounds.size - 1):
        sel = by_round[bounds[r] : bounds[r + 1]]
        if sel.size == 0:
            continue
        value = values[sel][:, None]
        usable = (value >= thresholds) & ~used[pairs.right[sel]]
        masked = np.where(usable, value, -np.inf)
        left = pairs.left[sel]
        starts = np.flatnonzero(np.r_[True, left[1:] != left[:-1]])  # one run of pairs per item
        owner = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, sel.size]))
        best = np.maximum.reduceat(masked, starts, axis=0)
        is_best = usable & (masked == best[owner])
        first = np.minimum.reduceat(np.where(is_best, np.arange(sel.size)[:, None], sel.size), starts, axis=0)
        item, t = np.nonzero(first < sel.size)
        chosen = sel[first[item, t]]
        used[pairs.right[chosen], t] = True
        matched[pairs.left[chosen], t] = True
    return _per_sample(matched, pairs.n_left)


def optimal_match_counts(values: np.ndarray, pairs: _Pairs, thresholds: np.ndarray) -> np.ndarray:
    """Maximum one-to-one matching counts, ``(samples, T)``: Hopcroft-Karp (scipy) on the
    block-diagonal graph of all samples' pairs reaching each threshold, whose maximum matching is
    the union of the per-sample ones."""
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import maximum_bipartite_matching

    shape = (int(pairs.n_left.sum()), int(pairs.n_right.sum()))
    matched = np.zeros((shape[0], thresholds.size), dtype=bool)
    if values.size == 0:
        return _per_sample(matched, pairs.n_left)
    for t, threshold in enumerate(thresholds):
        edge = values >= threshold
        graph = csr_array((np.ones(int(edge.sum()), dtype=np.int8), (pairs.left[edge], pairs.right[edge])), shape=shape)
        matched[:, t] = maximum_bipartite_matching(graph, perm_type="column") >= 0
    return _per_sample(matched, pairs.n_left)


def _per_sample(matched: np.ndarray, n_left: np.ndarray) -> np.ndarray:
    """Sum the per-item rows of ``matched`` over each sample's items."""
    running = np.zeros((matched.shape[0] + 1, matched.shape[1]), dtype=np.int64)
    np.cumsum(matched, axis=0, out=running[1:])
    ends = np.cumsum(n_left)
    return running[ends] - running[ends - n_left]


# ------------------------------------------------------------------------------------------------
# Scoring


def evaluate(
    gt_rows: GroundTruth | Iterable[Mapping | object],
    pred_rows: PredictionFile | Iterable[object],
    mode: str = "reference",
    name: str = "model",
) -> ModelResult:
    """Score one prediction set against HumanRef ground truth.

    ``gt_rows``: a :class:`GroundTruth` (reuse one for several prediction sets),
    ``annotations.jsonl`` dicts or ``RefSample`` objects. ``pred_rows``: a :class:`PredictionFile`
    (from :func:`load_predictions`, for line numbers in the report) or
    ``{"id", "extracted_predictions"}`` dicts. ``mode``: ``reference`` (the official numbers) or
    ``corrected`` (see the module docstring).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    gt = gt_rows if isinstance(gt_rows, GroundTruth) else GroundTruth(gt_rows)
    preds = _prepare_predictions(gt, pred_rows)
    corrected = mode == "corrected"
    match_counts = optimal_match_counts if corrected else greedy_match_counts

    # Rejection: right when the prediction is empty, [[]] or missing.
    rejection = np.flatnonzero(gt.rejection)
    rejection_score = int(preds.rejects[rejection].sum())

    scored = gt.scored
    n_pred = preds.counts[scored]
    pred_at = _ranges((np.cumsum(preds.counts) - preds.counts)[scored], n_pred)
    if preds.kind == "box":
        thresholds = EXACT_THRESHOLDS if corrected else REFERENCE_THRESHOLDS
        pairs = _Pairs.of(gt.n_gt[scored], n_pred)
        gt_boxes = gt.boxes[_ranges(gt.box_start[scored], gt.n_gt[scored])]
        values = box_iou_pairs(gt_boxes[pairs.left], preds.values[pred_at][pairs.right])
    else:
        thresholds = np.array([0.5])  # a point is inside a mask (1.0) or not (0.0)
        pairs, values = _point_pairs(gt, scored, preds.values[pred_at], n_pred)
    matches = match_counts(values, pairs, thresholds)
    n_gt = gt.n_gt[scored]
    recall, precision, densityf1 = _rates(
        matches, n_gt, n_pred, gt.n_candidates[scored], point=preds.kind == "point", corrected=corrected
    )

    means = _sample_means(recall, precision, densityf1, preds.kind)

    def group(positions: Sequence[int]) -> Scores:
        index = np.asarray(positions, dtype=np.int64)
        return Scores(samples=int(index.size), **{key: float(np.mean(v[index])) for key, v in means.items()})

    domains, subdomains, buckets = (gt.groups[key] for key in ("domain", "subdomain", "bucket"))
    pooled = scored.size > 0
    missing = np.flatnonzero(~preds.present)
    return ModelResult(
        name=name,
        mode=mode,
        kind=preds.kind,
        thresholds=tuple(float(t) for t in thresholds) if preds.kind == "box" else (),
        domains={d: group(domains[d]) for d in sorted(domains)},
        subdomains={s: group(subdomains[s]) for s in sorted(subdomains)},
        subdomain_domain={s: gt.subdomain_domain[s] for s in sorted(subdomains)},
        buckets={b: group(buckets[b]) for b in BUCKETS if b in buckets},
        all_data=group([p for positions in domains.values() for p in positions]) if pooled else None,
        bucket_average=group([p for positions in buckets.values() for p in positions]) if pooled else None,
        rejection_score=rejection_score,
        rejection_total=int(rejection.size),
        missing_ids=[gt.ids[i] for i in missing],
        missing_rejection_ids=[gt.ids[i] for i in missing if gt.rejection[i]],
        malformed=preds.errors,
        duplicate_ids=preds.duplicates,
        unknown_ids=preds.unknown,
        per_sample=SampleScores([gt.ids[i] for i in scored], matches, n_gt, n_pred, recall, precision, densityf1),
    )


def _point_pairs(gt: GroundTruth, scored: np.ndarray, points: np.ndarray, n_points: np.ndarray):
    """(mask, point) pairs of every scored sample and whether the point lies in the mask (1.0/0.0)."""
    lacking = [gt.ids[s] for s in scored.tolist() if gt.segmentations[s] is None]
    if lacking:
        raise ValueError(f"sample {lacking[0]!r}: point predictions need answer_segmentations in the ground truth")
    table = gt.masks()
    n_masks = np.array([len(gt.segmentations[s]) for s in scored.tolist()], dtype=np.int64)
    pairs = _Pairs.of(n_masks, n_points)
    # Python's round(): halves go to the even neighbour, as numpy.rint does (clipped: no overflow).
    pixels = np.clip(np.rint(points), -1, 2**31).astype(np.int64)
    mask = table.first[scored][pairs.sample] + pairs.rank
    inside = table.contains(mask, pixels[pairs.right, 0], pixels[pairs.right, 1])
    return pairs, inside.astype(np.float64)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(start, start + length)`` for every pair."""
    offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return np.arange(int(lengths.sum())) + offsets


def _rates(matches, n_gt, n_pred, n_candidates, point: bool, corrected: bool):
    """Per-sample recall, precision and DensityF1 from match counts; in ``reference`` mode the
    official arithmetic, the same operations in the same order."""
    m = matches.astype(np.float64)
    g = n_gt[:, None].astype(np.float64)
    p = n_pred[:, None].astype(np.float64)
    n = n_candidates[:, None].astype(np.float64)
    no_pred_precision = 1.0 if point and not corrected else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = m / g  # every scored sample has targets; no prediction means no match
        precision = np.where(p > 0, m / p, no_pred_precision)
        total = precision + recall
        f1 = np.where(total == 0, 0.0, 2 * (precision * recall) / total)
        if corrected:
            penalty = np.where(p > 0, np.minimum(1.0, g / p), 0.0)
        else:
            gt_ratio = np.where(n > 0, g / n, 0.0)
            pred_ratio = np.where(n > 0, p / n, 0.0)
            penalty = np.where(pred_ratio > 0, np.minimum(1.0, gt_ratio / pred_ratio), 0.0)
    return recall, precision, f1 * penalty


def _sample_means(recall, precision, densityf1, kind: str) -> dict[str, np.ndarray]:
    """The per-sample numbers groups average: the value at 0.5 and the mean over thresholds (box
    files), or the single value (point files)."""
    if kind == "point":
        return {"recall_point": recall[:, 0], "precision_point": precision[:, 0], "densityf1_point": densityf1[:, 0]}
    return {
        "recall_50": recall[:, 0],
        "recall_50_95": recall.mean(axis=1),
        "precision_50": precision[:, 0],
        "precision_50_95": precision.mean(axis=1),
        "densityf1_50": densityf1[:, 0],
        "densityf1_50_95": densityf1.mean(axis=1),
    }


def compare(
    gt_path: str | os.PathLike,
    pred_paths: Sequence[str | os.PathLike],
    pred_names: Sequence[str] | None = None,
    mode: str = "reference",
) -> list[ModelResult]:
    """Score several prediction files, as the command line does; ``mode`` may also be ``both``."""
    names = list(pred_names or [])
    if len(names) > len(pred_paths):
        raise ValueError(f"{len(names)} names for {len(pred_paths)} prediction files")
    names += [f"Model_{k + 1}" for k in range(len(names), len(pred_paths))]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be distinct, got {names}")
    modes = MODES if mode == "both" else (mode,)
    gt = load_ground_truth(gt_path)
    results = []
    for path, name in zip(pred_paths, names):
        predictions = load_predictions(path)
        for m in modes:
            label = name + CORRECTED_SUFFIX if (mode == "both" and m == "corrected") else name
            results.append(evaluate(gt, predictions, mode=m, name=label))
    return results


# ------------------------------------------------------------------------------------------------
# Reports

# (comparison.json key, markdown header, Scores field)
COLUMNS = (
    ("recall_@point", "Recall@Point", "recall_point"),
    ("precision_@point", "Precision@Point", "precision_point"),
    ("densityf1_@point", "DensityF1@Point", "densityf1_point"),
    ("recall_@0.5", "Recall@0.5", "recall_50"),
    ("recall_@0.5:0.95", "Recall@0.5:0.95", "recall_50_95"),
    ("precision_@0.5", "Precision@0.5", "precision_50"),
    ("precision_@0.5:0.95", "Precision@0.5:0.95", "precision_50_95"),
    ("densityf1_@0.5", "DensityF1@0.5", "densityf1_50"),
    ("densityf1_@0.5:0.95", "DensityF1@0.5:0.95", "densityf1_50_95"),
)
_SEPARATOR = None  # a rule between the groups and the averages, as in the official tables


def _as_list(results: ModelResult | Sequence[ModelResult]) -> list[ModelResult]:
    return [results] if isinstance(results, ModelResult) else list(results)


def _ranked(entries: list[tuple[ModelResult, Scores]]) -> list[tuple[ModelResult, Scores]]:
    return sorted(entries, key=lambda e: e[1].rank_key, reverse=True)  # stable: ties keep model order


def _metric_cells(scores: Scores | None) -> dict:
    cells = {}
    for key, _, attr in COLUMNS:
        value = getattr(scores, attr) if scores is not None else None
        cells[key] = "" if value is None else float(f"{value:.3f}")
    return cells


def domain_rows(results: ModelResult | Sequence[ModelResult]) -> list[dict | None]:
    """Rows of the domain / sub-domain table in the official order (None marks a rule). ``_shown``
    holds the name cells the printed table shows: a group's name appears on its first row only."""
    results = _as_list(results)
    rows: list[dict | None] = []

    def add(domain: str, subdomain: str, entries, shown_first: tuple[str, str], every_row: bool = False) -> None:
        for k, (result, scores) in enumerate(_ranked(entries)):
            rows.append({
                "domain": domain, "subdomain": subdomain, "model": result.name, **_metric_cells(scores),
                "rejection_score": "", "samples": scores.samples,
                "_shown": shown_first if (k == 0 or every_row) else ("", ""),
            })  # fmt: skip

    for domain in sorted({d for r in results for d in r.domains}):
        add(domain, "Overall", [(r, r.domains[domain]) for r in results if domain in r.domains], (domain, "Overall"))
        subs = sorted({s for r in results for s, d in r.subdomain_domain.items() if d == domain})
        for sub in subs:
            add(domain, sub, [(r, r.subdomains[sub]) for r in results if sub in r.subdomains], ("", sub))
    rows.append(_SEPARATOR)
    averages = [(r, r.all_data) for r in results if r.all_data is not None]
    add("Average", "All Data", averages, ("Average", "All Data"), every_row=True)
    rows.append(_SEPARATOR)
    for r in results:
        rows.append({
            "domain": "Rejection", "subdomain": "Overall", "model": r.name, **_metric_cells(None),
            "rejection_score": r.rejection_score, "samples": "", "_shown": ("Rejection", "Overall"),
        })  # fmt: skip
    return rows


def bucket_rows(results: ModelResult | Sequence[ModelResult]) -> list[dict | None]:
    """Rows of the target-count table (``box count`` is the official key)."""
    results = _as_list(results)
    rows: list[dict | None] = []

    def add(bucket: str, entries, every_row: bool = False) -> None:
        for k, (result, scores) in enumerate(_ranked(entries)):
            rows.append({
                "box count": bucket, "model": result.name, **_metric_cells(scores),
                "rejection_score": "", "samples": scores.samples,
                "_shown": (bucket,) if (k == 0 or every_row) else ("",),
            })  # fmt: skip

    for bucket in BUCKETS:
        entries = [(r, r.buckets[bucket]) for r in results if bucket in r.buckets]
        if entries:
            add(bucket, entries)
    rows.append(_SEPARATOR)
    add("Average", [(r, r.bucket_average) for r in results if r.bucket_average is not None], every_row=True)
    return rows


def comparison_json(results: ModelResult | Sequence[ModelResult]) -> dict:
    """``comparison.json`` in the official layout (3-decimal values, ``""`` for empty cells)."""

    def clean(rows: list[dict | None]) -> list[dict]:
        return [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows if row is not None]

    return {"domain_subdomain_metrics": clean(domain_rows(results)), "box_count_metrics": clean(bucket_rows(results))}


def _markdown_table(rows: list[dict | None], name_headers: tuple[str, ...]) -> str:
    headers = [*name_headers, "Model", *(h for _, h, _ in COLUMNS), "Rejection Score", "Samples"]
    keys = ["model", *(k for k, _, _ in COLUMNS), "rejection_score", "samples"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        if row is None:
            lines.append("| " + " | ".join("---" for _ in headers) + " |")
            continue
        cells = [*row["_shown"], *(f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in keys)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(results: ModelResult | Sequence[ModelResult]) -> str:
    """``comparison.md``: both tables and the notes on missing and malformed predictions."""
    results = _as_list(results)
    modes = sorted({r.mode for r in results}, key=MODES.index)
    parts = [
        "# HumanRef evaluation",
        "",
        f"Mode: {', '.join(modes)}. " + _MODE_NOTE[modes[0] if len(modes) == 1 else "both"],
        "",
        "## Domains and sub-domains",
        "",
        _markdown_table(domain_rows(results), ("Domain", "Subdomain")),
        "",
        "## Target count (answer boxes per expression)",
        "",
        _markdown_table(bucket_rows(results), ("Box Count",)),
    ]
    names = {r.name for r in results}
    notes = [
        line
        for r in results
        if not (r.name.endswith(CORRECTED_SUFFIX) and r.name[: -len(CORRECTED_SUFFIX)] in names)  # same file
        for line in _notes(r)
    ]
    if notes:
        parts += ["", "## Notes", "", *notes]
    return "\n".join(parts) + "\n"


_MODE_NOTE = {
    "reference": "Official algorithm: greedy matching in annotation order, numpy.arange thresholds.",
    "corrected": "Maximum one-to-one matching, exact thresholds 0.50..0.95, penalty min(1, |gt|/|pred|).",
    "both": "Rows suffixed '(corrected)' use maximum one-to-one matching and exact thresholds; "
    "the others the official algorithm.",
}


def _notes(result: ModelResult, limit: int = 10) -> list[str]:
    notes = []
    if result.missing_ids:
        shown = ", ".join(result.missing_ids[:limit]) + (", ..." if len(result.missing_ids) > limit else "")
        notes.append(
            f"- {result.name}: {len(result.missing_ids)} ground-truth ids have no prediction row "
            f"({len(result.missing_rejection_ids)} of them rejection samples, counted as correct rejections): {shown}"
        )
    if result.malformed:
        notes.append(f"- {result.name}: {len(result.malformed)} malformed prediction rows, scored as missing:")
        notes += [f"  - {error}" for error in result.malformed[:limit]]
        if len(result.malformed) > limit:
            notes.append(f"  - ... and {len(result.malformed) - limit} more (details.json)")
    if result.duplicate_ids:
        notes.append(f"- {result.name}: {len(result.duplicate_ids)} ids predicted more than once (last row kept)")
    if result.unknown_ids:
        notes.append(f"- {result.name}: {len(result.unknown_ids)} predicted ids are not in the ground truth (ignored)")
    return notes


def details_json(results: ModelResult | Sequence[ModelResult]) -> dict:
    """Full-precision numbers and every reported problem, per model."""
    return {
        "models": [
            {
                "name": r.name,
                "mode": r.mode,
                "kind": r.kind,
                "thresholds": list(r.thresholds),
                **r.summary(),
                "missing_ids": r.missing_ids,
                "missing_rejection_ids": r.missing_rejection_ids,
                "malformed_rows": [asdict(e) for e in r.malformed],
                "duplicate_ids": r.duplicate_ids,
                "unknown_ids": r.unknown_ids,
            }
            for r in _as_list(results)
        ]
    }


def write_report(
    results: ModelResult | Sequence[ModelResult], out_dir: str | os.PathLike, charts: bool = True
) -> dict[str, Path]:
    """Write ``comparison.md``, ``comparison.json``, ``details.json`` and (with ``charts``) the two
    PNG charts into ``out_dir``; return their paths by name."""
    results = _as_list(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": out / "comparison.md",
        "json": out / "comparison.json",
        "details": out / "details.json",
    }
    paths["markdown"].write_text(markdown_report(results), encoding="utf-8")
    paths["json"].write_text(json.dumps(comparison_json(results), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["details"].write_text(json.dumps(details_json(results), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if charts:
        paths.update(write_charts(results, out))
    return paths


def _headline(scores: Scores) -> tuple[float, float, float]:
    """Recall, precision, DensityF1 as the charts show them (@0.5:0.95, or @Point)."""
    if scores.densityf1_point is not None:
        return scores.recall_point, scores.precision_point, scores.densityf1_point
    return scores.recall_50_95, scores.precision_50_95, scores.densityf1_50_95


def write_charts(results: Sequence[ModelResult], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Grouped bars per domain (plus All Data and the rejection rate) and lines per target-count
    bucket, one series per model."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    out = Path(out_dir)
    results = _as_list(results)
    names = [r.name for r in results]
    width = 0.8 / max(len(results), 1)
    metric_names = ("Recall", "Precision", "DensityF1")

    domains = sorted({d for r in results for d in r.domains}) + ["All Data"]
    fig = Figure(figsize=(5 + 1.6 * len(domains), 10), layout="constrained")
    axes = fig.subplots(4, 1)
    for panel, metric in enumerate(metric_names):
        ax = axes[panel]
        for k, r in enumerate(results):
            values = []
            for d in domains:
                scores = r.all_data if d == "All Data" else r.domains.get(d)
                values.append(_headline(scores)[panel] if scores else np.nan)
            ax.bar(np.arange(len(domains)) + (k - (len(results) - 1) / 2) * width, values, width, label=r.name)
        ax.set_xticks(np.arange(len(domains)), domains)
        ax.set_ylim(0, 1)
        ax.set_ylabel(metric)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_title("HumanRef by domain (box models @0.5:0.95, point models @Point)")
    axes[0].legend(fontsize="small", ncols=min(len(results), 4))
    rates = [r.rejection_score / r.rejection_total if r.rejection_total else np.nan for r in results]
    axes[3].bar(np.arange(len(results)), rates, 0.6)
    axes[3].set_xticks(np.arange(len(results)), names)
    axes[3].set_ylim(0, 1)
    axes[3].set_ylabel("Rejection rate")
    axes[3].grid(axis="y", alpha=0.3)
    domains_png = out / "chart_domains.png"
    fig.savefig(domains_png, dpi=100)

    buckets = [b for b in BUCKETS if any(b in r.buckets for r in results)]
    fig = Figure(figsize=(12, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    for panel, metric in enumerate(metric_names):
        ax = axes[panel]
        for r in results:
            values = [_headline(r.buckets[b])[panel] if b in r.buckets else np.nan for b in buckets]
            ax.plot(buckets, values, marker="o", label=r.name)
        ax.set_ylim(0, 1)
        ax.set_xlabel("answer boxes per expression")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    buckets_png = out / "chart_target_count.png"
    fig.savefig(buckets_png, dpi=100)
    return {"chart_domains": domains_png, "chart_target_count": buckets_png}


# ------------------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--gt_path", required=True, help="HumanRef annotations.jsonl")
    parser.add_argument("--pred_path", nargs="+", required=True, help="prediction JSONL file(s)")
    parser.add_argument("--pred_names", nargs="+", default=None, help="a name per prediction file (default Model_k)")
    parser.add_argument("--dump_path", default=None, help="folder for comparison.md/.json, details.json and charts")
    parser.add_argument(
        "--mode", choices=(*MODES, "both"), default="reference", help="official numbers, corrected, or both"
    )
    parser.add_argument("--no_charts", action="store_true", help="skip the PNG charts")
    args = parser.parse_args(argv)

    results = compare(args.gt_path, args.pred_path, args.pred_names, args.mode)
    print(markdown_report(results), end="")
    if args.dump_path:
        paths = write_report(results, args.dump_path, charts=not args.no_charts)
        print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
