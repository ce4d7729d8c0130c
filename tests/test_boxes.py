"""IoU and the reward's one-to-one matching (rexthinker.boxes)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rexthinker import boxes
from rexthinker.boxes import box_iou, detection_f1, match_boxes

IOUS = {
    "identical": ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
    "half overlap": ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
    "contained": ([0, 0, 10, 10], [0, 0, 5, 10], 0.5),
    "touching edges": ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),
    "disjoint": ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
    "inverted box": ([0, 0, 10, 10], [8, 8, 2, 2], 0.0),
    "zero area": ([5, 5, 5, 5], [0, 0, 10, 10], 0.0),
    "no +1 on pixels": ([0, 0, 1, 1], [0, 0, 2, 1], 0.5),
    "one pixel off": ([94, 45, 445, 271], [94, 46, 445, 271], 225 * 351 / (226 * 351)),
    "overflowing coordinates": ([0, 0, 1e200, 1e200], [0, 0, 1e200, 1e200], 0.0),
}


@pytest.mark.parametrize("a, b, iou", IOUS.values(), ids=IOUS.keys())
def test_box_iou(a, b, iou):
    assert box_iou(a, b) == pytest.approx(iou)
    assert box_iou(b, a) == pytest.approx(iou)


A, B, C = [0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]
# predicted, ground truth -> F1 at 0.5
F1S = {
    "both empty": ([], [], 1.0),
    "prediction empty": ([], [A], 0.0),
    "ground truth empty": ([A], [], 0.0),
    "exact": ([A], [A], 1.0),
    "a few pixels off": ([[1, 0, 11, 10]], [A], 1.0),
    "below threshold": ([[5, 0, 15, 10]], [A], 0.0),
    "order does not matter": ([B, A], [A, B], 1.0),
    "one of two": ([A], [A, B], 2 / 3),
    "one extra": ([A, C], [A], 2 / 3),
    "duplicate costs precision only": ([A, A], [A], 2 / 3),
    "all duplicates of one target": ([A, A, A], [A, B], 2 / 5),
}


@pytest.mark.parametrize("pred, gt, f1", F1S.values(), ids=F1S.keys())
def test_detection_f1(pred, gt, f1):
    assert detection_f1(pred, gt) == pytest.approx(f1)


def test_matching_is_optimal_not_greedy():
    # p0 overlaps both targets, p1 only the first: greedy (p0 -> its best, g0) leaves p1 unmatched.
    g0, g1 = [0, 0, 10, 10], [0, 0, 10, 20]
    p0, p1 = [0, 0, 10, 14], [0, 0, 10, 8]
    assert box_iou(p0, g0) > box_iou(p0, g1) >= 0.5 and box_iou(p1, g0) >= 0.5 > box_iou(p1, g1)
    assert sorted((i, j) for i, j, _ in match_boxes([p0, p1], [g0, g1])) == [(0, 1), (1, 0)]
    assert detection_f1([p0, p1], [g0, g1]) == 1.0


def test_threshold_is_configurable_and_checked():
    pred, gt = [[0, 0, 10, 7]], [[0, 0, 10, 10]]  # IoU 0.7
    assert detection_f1(pred, gt, 0.7) == 1.0
    assert detection_f1(pred, gt, 0.71) == 0.0
    with pytest.raises(ValueError):
        match_boxes(pred, gt, 0.0)


def brute_force(pred, gt, threshold):
    """(pairs, summed IoU) of the best assignment, by trying every one."""
    best = (0, 0.0)
    small, large = (pred, gt) if len(pred) <= len(gt) else (gt, pred)
    for chosen in itertools.permutations(range(len(large)), len(small)):
        ious = [box_iou(small[i], large[j]) for i, j in enumerate(chosen)]
        ious = [v for v in ious if v >= threshold]
        best = max(best, (len(ious), sum(ious)))
    return best


coordinate = st.integers(0, 40)
size = st.integers(1, 25)
box = st.tuples(coordinate, coordinate, size, size).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(box, max_size=6), st.lists(box, max_size=6), st.sampled_from([0.1, 0.3, 0.5]))
def test_matching_is_exact(pred, gt, threshold):
    pairs = match_boxes(pred, gt, threshold)
    assert len({i for i, _, _ in pairs}) == len({j for _, j, _ in pairs}) == len(pairs)
    assert all(iou >= threshold for _, _, iou in pairs)
    count, total = brute_force(pred, gt, threshold)
    assert len(pairs) == count
    assert sum(iou for _, _, iou in pairs) == pytest.approx(total)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.lists(box, min_size=1, max_size=12), st.lists(box, min_size=1, max_size=12))
def test_scipy_fallback_agrees_with_the_subset_search(pred, gt):
    edges = {(i, j): v for i, p in enumerate(pred) for j, g in enumerate(gt) if (v := box_iou(p, g)) >= 0.1}
    rows, cols = sorted({i for i, _ in edges}), sorted({j for _, j in edges})
    if not edges:
        return
    if len(cols) <= len(rows):
        dp = boxes._subset_dp(edges, rows, cols, True)
    else:
        dp = boxes._subset_dp(edges, cols, rows, False)
    hungarian = boxes._scipy_assignment(edges, rows, cols)
    assert len(dp) == len(hungarian)
    assert sum(v for *_, v in dp) == pytest.approx(sum(v for *_, v in hungarian))
