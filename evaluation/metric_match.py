"""Matching ground-truth items to predictions, vectorised over samples and thresholds.

:class:`Pairs` lays out every (ground truth, prediction) pair of every sample; :func:`box_iou_pairs`
gives their IoUs, bit for bit the official ones; :func:`greedy_match_counts` is the official greedy
matching (``reference`` mode) and :func:`optimal_match_counts` the maximum one-to-one matching
(``corrected`` mode). Both return match counts per sample and threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Pairs:
    """Every (ground truth, prediction) pair within each sample, ground-truth-major, predictions in
    file order: the layout the official double loop visits them in."""

    sample: np.ndarray  # sample of each pair
    left: np.ndarray  # global index of its ground-truth item
    right: np.ndarray  # global index of its prediction
    rank: np.ndarray  # position of its ground-truth item within the sample
    n_left: np.ndarray  # ground-truth items per sample
    n_right: np.ndarray  # predictions per sample

    @classmethod
    def of(cls, n_left: np.ndarray, n_right: np.ndarray) -> Pairs:
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


def greedy_match_counts(values: np.ndarray, pairs: Pairs, thresholds: np.ndarray) -> np.ndarray:
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


def optimal_match_counts(values: np.ndarray, pairs: Pairs, thresholds: np.ndarray) -> np.ndarray:
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
