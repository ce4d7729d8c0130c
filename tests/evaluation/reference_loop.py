"""The HumanRef metric as a plain per-box Python loop: the yardstick for ``evaluation.metric``.

    from tests.evaluation.reference_loop import reference_loop_summary
    assert reference_loop_summary(gt_rows, pred_rows) == evaluate(gt_rows, pred_rows).summary()

This follows the official script's structure one sample, one threshold, one box pair at a time
(reference mode only: greedy matching, ``numpy.arange`` thresholds, the official DensityF1
arithmetic, means taken with ``numpy.mean`` over Python lists), so it is slow and obviously faithful.
The benchmark (``benchmarks/metric_speed.py``) times it against the vectorised metric on the same
data and the tests assert both give the same numbers to the last bit. It expects well-formed input:
it does no row checking and no error reporting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from evaluation.metric import REFERENCE_THRESHOLDS
from evaluation.metric_results import REJECTION, bucket_of
from rexthinker.rle import decode as decode_mask


def iou(a, b) -> float:
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[2], b[2]), min(a[3], b[3])
    if right <= left or bottom <= top:
        return 0.0
    inter = (right - left) * (bottom - top)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def box_recall_precision(gt_boxes, pred_boxes, threshold) -> tuple[float, float]:
    if len(pred_boxes) == 0 or (len(pred_boxes) == 1 and len(pred_boxes[0]) == 0):
        return 0.0, 0.0
    taken: set[int] = set()
    for g in gt_boxes:
        best, best_j = 0, -1
        for j, p in enumerate(pred_boxes):
            if j in taken:
                continue
            value = iou(g, p)
            if value > best and value >= threshold:
                best, best_j = value, j
        if best_j != -1:
            taken.add(best_j)
    return len(taken) / len(gt_boxes), len(taken) / len(pred_boxes)


def point_recall_precision(gt_boxes, masks, points) -> tuple[float, float]:
    if len(points) == 0:
        return 0.0, 1.0  # the official script's value for "no point"
    taken: set[int] = set()
    for mask in masks:
        for j, point in enumerate(points):
            if j in taken:
                continue
            x, y = int(round(point[0])), int(round(point[1]))
            if 0 <= x < mask.shape[1] and 0 <= y < mask.shape[0] and mask[y, x] == 1:
                taken.add(j)
                break
    return len(taken) / len(gt_boxes), len(taken) / len(points)


def density_f1(precision, recall, n_gt, n_pred, n_persons) -> float:
    if precision + recall == 0:
        return 0.0
    f1 = 2 * (precision * recall) / (precision + recall)
    gt_ratio = n_gt / n_persons if n_persons > 0 else 0.0
    pred_ratio = n_pred / n_persons if n_persons > 0 else 0.0
    return f1 * (min(1.0, gt_ratio / pred_ratio) if pred_ratio > 0 else 0.0)


def reference_loop_summary(gt_rows: Iterable[Mapping], pred_rows: Iterable[Mapping]) -> dict:
    """Same dict as ``evaluation.metric_results.ModelResult.summary()`` for a reference-mode evaluation."""
    gt_rows = list(gt_rows)
    pred_rows = list(pred_rows)
    lookup = {str(row["id"]): row["extracted_predictions"] for row in pred_rows}
    is_point = False
    for row in pred_rows:
        entries = [e for e in row["extracted_predictions"] if len(e) in (2, 4)]
        if entries:
            is_point = len(entries[0]) == 2
            break

    per_domain: dict[str, list] = {}
    per_sub: dict[str, list] = {}
    per_bucket: dict[str, list] = {}
    sub_domain_of: dict[str, str] = {}
    rejection_score = rejection_total = 0
    for row in gt_rows:
        sub_domain_of.setdefault(row["sub_domain"], row["domain"])
        pred = lookup.get(str(row["id"]), [])
        if row["domain"] == REJECTION:
            rejection_total += 1
            if len(pred) == 0 or len(pred[0]) == 0:
                rejection_score += 1
            continue
        if pred == [[]]:
            pred = []
        gt_boxes = row["answer_boxes"]
        persons = len(row["candidate_boxes"])
        if is_point:
            masks = [decode_mask(rle, exact=False) for rle in row["answer_segmentations"]]
            r, p = point_recall_precision(gt_boxes, masks, pred)
            values = (r, p, density_f1(p, r, len(gt_boxes), len(pred), persons))
        else:
            recalls, precisions, f1s = [], [], []
            for threshold in REFERENCE_THRESHOLDS:
                r, p = box_recall_precision(gt_boxes, pred, threshold)
                recalls.append(r)
                precisions.append(p)
                f1s.append(density_f1(p, r, len(gt_boxes), len(pred), persons))
            values = (
                recalls[0], np.mean(recalls), precisions[0], np.mean(precisions), f1s[0], np.mean(f1s)
            )  # fmt: skip
        per_domain.setdefault(row["domain"], []).append(values)
        per_sub.setdefault(row["sub_domain"], []).append(values)
        per_bucket.setdefault(bucket_of(len(gt_boxes)), []).append(values)

    if is_point:
        keys = ("recall_point", "precision_point", "densityf1_point")
    else:
        keys = ("recall_50", "recall_50_95", "precision_50", "precision_50_95", "densityf1_50", "densityf1_50_95")
    all_keys = (
        "samples", "recall_point", "precision_point", "densityf1_point", "recall_50", "recall_50_95",
        "precision_50", "precision_50_95", "densityf1_50", "densityf1_50_95",
    )  # fmt: skip

    def means(values: list) -> dict:
        out = dict.fromkeys(all_keys)
        out["samples"] = len(values)
        for k, column in zip(keys, zip(*values)):
            out[k] = float(np.mean(column))
        return out

    pooled_domains = [v for values in per_domain.values() for v in values]
    pooled_buckets = [v for values in per_bucket.values() for v in values]
    return {
        "kind": "point" if is_point else "box",
        "domains": {d: means(per_domain[d]) for d in sorted(per_domain)},
        "subdomains": {s: means(per_sub[s]) for s in sorted(per_sub)},
        "buckets": {b: means(per_bucket[b]) for b in ("1", "2-5", "6-10", ">10") if b in per_bucket},
        "all_data": means(pooled_domains) if pooled_domains else None,
        "bucket_average": means(pooled_buckets) if pooled_buckets else None,
        "rejection_score": rejection_score,
        "rejection_total": rejection_total,
    }
