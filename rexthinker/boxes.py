"""Box overlap and one-to-one matching, as the rewards use them.

Boxes are ``[x0, y0, x1, y1]`` corners in any one frame. IoU is computed on continuous
coordinates with no ``+1``: a pair whose intersection has ``x1 <= x0`` or ``y1 <= y0`` does not
overlap, so inverted or zero-area boxes never match anything.

The matching here is the reward's: an exact maximum-weight assignment (a box is used at most
once) that first maximises the number of pairs with ``IoU >= threshold`` and then, among those
assignments, the summed IoU. The HumanRef *benchmark* matches greedily in annotation order
instead (contracts §4); that metric lives with the evaluation code, not here.
"""

from __future__ import annotations

from collections.abc import Sequence

Box = Sequence[float]

# Above this many states the bitmask search hands over to scipy's Hungarian solver.
_MAX_DP_WORK = 1 << 14


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two corner boxes, in ``[0, 1]`` (0 for degenerate input)."""
    ix0 = a[0] if a[0] > b[0] else b[0]
    iy0 = a[1] if a[1] > b[1] else b[1]
    ix1 = a[2] if a[2] < b[2] else b[2]
    iy1 = a[3] if a[3] < b[3] else b[3]
    if ix1 <= ix0 or iy1 <= iy0:
        return 0.0
    inter = (ix1 - ix0) * (iy1 - iy0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    if not union > 0:
        return 0.0
    iou = inter / union
    # Overflowing coordinates (1e200 and up) give inf/inf = nan; nothing sensible matches there.
    return iou if 0.0 <= iou <= 1.0 else 0.0


def match_boxes(pred: Sequence[Box], gt: Sequence[Box], threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """One-to-one matching of predicted to ground-truth boxes.

    Returns ``(pred_index, gt_index, iou)`` triples, sorted by ``pred_index``, every one with
    ``iou >= threshold``. The assignment is exact: it has the largest possible number of pairs,
    and the largest summed IoU among assignments of that size. A duplicated prediction can match
    at most one ground-truth box; the copy stays unmatched.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"IoU threshold must be in (0, 1], got {threshold}")
    edges: dict[tuple[int, int], float] = {}
    pred_degree: dict[int, int] = {}
    gt_degree: dict[int, int] = {}
    for i, p in enumerate(pred):
        for j, g in enumerate(gt):
            iou = box_iou(p, g)
            if iou >= threshold:
                edges[i, j] = iou
                pred_degree[i] = pred_degree.get(i, 0) + 1
                gt_degree[j] = gt_degree.get(j, 0) + 1
    if len(edges) == len(pred_degree) == len(gt_degree):
        # Every candidate pair is alone on both sides (the usual case): take them all.
        return sorted((i, j, iou) for (i, j), iou in edges.items())
    return _best_assignment(edges, sorted(pred_degree), sorted(gt_degree))


def detection_f1(pred: Sequence[Box], gt: Sequence[Box], threshold: float = 0.5) -> float:
    """F1 of a prediction under :func:`match_boxes`: ``2 * matches / (len(pred) + len(gt))``.

    Both empty is a perfect answer (1.0); exactly one empty scores 0.0.
    """
    if not pred and not gt:
        return 1.0
    if not pred or not gt:
        return 0.0
    return 2.0 * len(match_boxes(pred, gt, threshold)) / (len(pred) + len(gt))


def _best_assignment(
    edges: dict[tuple[int, int], float], rows: list[int], cols: list[int]
) -> list[tuple[int, int, float]]:
    """Exact lexicographic (pairs, summed IoU) assignment over the given candidate pairs.

    Only boxes with at least one candidate pair take part. When the smaller side is small, a
    dynamic programme over the subsets of that side is exact and much faster than scipy on tiny
    inputs; otherwise scipy's ``linear_sum_assignment`` solves the same problem with weights
    ``bonus + iou`` where ``bonus`` exceeds any summed IoU, so one more pair always wins.
    """
    small_is_cols = len(cols) <= len(rows)
    small, large = (cols, rows) if small_is_cols else (rows, cols)
    if len(large) << len(small) <= _MAX_DP_WORK:
        return _subset_dp(edges, large, small, small_is_cols)
    return _scipy_assignment(edges, rows, cols)


def _subset_dp(
    edges: dict[tuple[int, int], float], large: list[int], small: list[int], small_is_cols: bool
) -> list[tuple[int, int, float]]:
    bit = {node: 1 << k for k, node in enumerate(small)}
    neighbours: dict[int, list[tuple[int, float]]] = {node: [] for node in large}
    for (i, j), iou in edges.items():
        big_node, small_node = (i, j) if small_is_cols else (j, i)
        neighbours[big_node].append((small_node, iou))
    # state: used-subset of the small side -> (pairs, summed iou, chosen pairs)
    states: dict[int, tuple[int, float, tuple[tuple[int, int, float], ...]]] = {0: (0, 0.0, ())}
    for node in large:
        grown = dict(states)
        for used, (count, total, chosen) in states.items():
            for other, iou in neighbours[node]:
                b = bit[other]
                if used & b:
                    continue
                pair = (node, other, iou) if small_is_cols else (other, node, iou)
                candidate = (count + 1, total + iou, chosen + (pair,))
                key = used | b
                best = grown.get(key)
                if best is None or candidate[:2] > best[:2]:
                    grown[key] = candidate
        states = grown
    best = max(states.values(), key=lambda s: s[:2])
    return sorted(best[2])


def _scipy_assignment(
    edges: dict[tuple[int, int], float], rows: list[int], cols: list[int]
) -> list[tuple[int, int, float]]:
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    row_at = {r: k for k, r in enumerate(rows)}
    col_at = {c: k for k, c in enumerate(cols)}
    bonus = float(min(len(rows), len(cols)) + 1)
    weights = np.zeros((len(rows), len(cols)))
    for (i, j), iou in edges.items():
        weights[row_at[i], col_at[j]] = bonus + iou
    chosen_rows, chosen_cols = linear_sum_assignment(weights, maximize=True)
    pairs = []
    for r, c in zip(chosen_rows.tolist(), chosen_cols.tolist()):
        key = (rows[r], cols[c])
        if key in edges:
            pairs.append((key[0], key[1], edges[key]))
    return sorted(pairs)
