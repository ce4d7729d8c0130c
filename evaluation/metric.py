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

Beside it, not part of the official script: RefCOCO/+/g-style top-1 accuracy, Acc@0.5, over the
samples with exactly one target box: the first predicted box is correct when its IoU with the
target is at least 0.5 (the same IoU; no box, a rejection or a malformed row is wrong). Samples with
zero or several targets are not scored; the report says how many were. Box files only.

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

Library use: :func:`evaluate` scores one prediction set, :func:`compare` does what the command line
does, ``evaluation.metric_report.write_report`` writes the files for one or several results. This
module holds the scoring and the command line; the rest of the metric is in
``evaluation.metric_results`` (result types, modes, buckets), ``evaluation.metric_inputs`` (ground
truth, masks, prediction files), ``evaluation.metric_match`` (IoU and matching) and
``evaluation.metric_report`` (tables, report files, charts).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from evaluation.metric_inputs import GroundTruth, PredictionFile, Predictions, load_ground_truth, load_predictions, prepare_predictions
from evaluation.metric_match import Pairs, box_iou_pairs, greedy_match_counts, optimal_match_counts
from evaluation.metric_report import markdown_report, write_report
from evaluation.metric_results import BUCKETS, CORRECTED_SUFFIX, MODES, ModelResult, SampleScores, Scores

# The official thresholds, float noise included (0.8000000000000003, ...).
REFERENCE_THRESHOLDS = np.arange(0.5, 1.0, 0.05)
# The decimals those were meant to be: k / 20 is the double nearest to 0.55, 0.6, ...
EXACT_THRESHOLDS = np.arange(10, 20) / 20.0


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
    preds = prepare_predictions(gt, pred_rows)
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
        pairs = Pairs.of(gt.n_gt[scored], n_pred)
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
    acc_50, acc_50_samples = _top1_accuracy(gt, preds) if preds.kind == "box" else (None, 0)
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
        acc_50=acc_50,
        acc_50_samples=acc_50_samples,
    )


def _top1_accuracy(gt: GroundTruth, preds: Predictions) -> tuple[float | None, int]:
    """RefCOCO-style Acc@0.5 and the number of samples it scores: those with exactly one target,
    right when their first predicted box has IoU >= 0.5 with it (None when there is no such sample)."""
    single = np.flatnonzero(gt.n_gt == 1)
    if single.size == 0:
        return None, 0
    answered = single[preds.counts[single] > 0]  # no box (missing, empty, [[]], malformed): wrong
    first = (np.cumsum(preds.counts) - preds.counts)[answered]
    iou = box_iou_pairs(gt.boxes[gt.box_start[answered]], preds.values[first])
    return int((iou >= 0.5).sum()) / int(single.size), int(single.size)


def _point_pairs(gt: GroundTruth, scored: np.ndarray, points: np.ndarray, n_points: np.ndarray):
    """(mask, point) pairs of every scored sample and whether the point lies in the mask (1.0/0.0)."""
    lacking = [gt.ids[s] for s in scored.tolist() if gt.segmentations[s] is None]
    if lacking:
        raise ValueError(f"sample {lacking[0]!r}: point predictions need answer_segmentations in the ground truth")
    table = gt.masks()
    n_masks = np.array([len(gt.segmentations[s]) for s in scored.tolist()], dtype=np.int64)
    pairs = Pairs.of(n_masks, n_points)
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
