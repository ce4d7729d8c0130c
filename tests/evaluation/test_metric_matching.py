"""Greedy (official) and optimal (corrected) matching, against the plain loop and brute force."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation.metric import EXACT_THRESHOLDS, REFERENCE_THRESHOLDS, evaluate
from evaluation.metric_match import box_iou_pairs

from .reference_loop import box_recall_precision, iou, reference_loop_summary

A = [0, 0, 10, 10]
B = [2, 0, 12, 10]  # A's neighbour, IoU(A, B) = 2/3
P_SHARED = [1, 0, 11, 10]  # IoU 0.818 with both A and B
P_LEFT = [-2, 0, 8, 10]  # IoU 0.667 with A, 0.43 with B


def sample(answers, sample_id="s", domain="position", candidates=None) -> dict:
    return {
        "id": sample_id, "answer_boxes": answers, "candidate_boxes": candidates or answers or [A],
        "domain": domain, "sub_domain": domain + "_sub",
    }  # fmt: skip


def matches(answers, predictions, mode) -> list[int]:
    result = evaluate([sample(answers)], [{"id": "s", "extracted_predictions": predictions}], mode=mode)
    return result.per_sample.matches[0].tolist()


# ground truth, predictions -> matches at the ten thresholds (reference, corrected)
DIFFERING = {
    # A takes the shared box (its best), leaving B nothing; optimal gives A the left box.
    "greedy blocks a later target": (
        [A, B], [P_SHARED, P_LEFT], [1, 1, 1, 1, 1, 1, 1, 0, 0, 0], [2, 2, 2, 2, 1, 1, 1, 0, 0, 0],
    ),
    "prediction order does not matter": (
        [A, B], [P_LEFT, P_SHARED], [1, 1, 1, 1, 1, 1, 1, 0, 0, 0], [2, 2, 2, 2, 1, 1, 1, 0, 0, 0],
    ),
    "annotation order does (B first)": (
        [B, A], [P_SHARED, P_LEFT], [2, 2, 2, 2, 1, 1, 1, 0, 0, 0], [2, 2, 2, 2, 1, 1, 1, 0, 0, 0],
    ),
    "no contest, no difference": ([A], [P_LEFT, A], [1] * 10, [1] * 10),
}  # fmt: skip


@pytest.mark.parametrize("answers, predictions, greedy, optimal", DIFFERING.values(), ids=DIFFERING.keys())
def test_greedy_and_optimal(answers, predictions, greedy, optimal):
    assert matches(answers, predictions, "reference") == greedy
    assert matches(answers, predictions, "corrected") == optimal


def test_corrected_recall_and_densityf1_on_the_blocking_case():
    gt = [sample([A, B], candidates=[A, B, [40, 40, 50, 50]])]
    preds = [{"id": "s", "extracted_predictions": [P_SHARED, P_LEFT]}]
    reference, corrected = evaluate(gt, preds), evaluate(gt, preds, mode="corrected")
    assert (reference.all_data.recall_50, corrected.all_data.recall_50) == (0.5, 1.0)
    assert (reference.all_data.densityf1_50, corrected.all_data.densityf1_50) == (0.5, 1.0)


def test_ties_go_to_the_earliest_prediction():
    # both predictions equal A: A takes the first copy, B (IoU 2/3 with A) the second up to 0.65
    assert matches([A, B], [list(A), list(A)], "reference") == [2, 2, 2, 2, 1, 1, 1, 1, 1, 1]
    # one copy of A and one of B: A's best is its own copy, B's too, whatever their order
    assert matches([A, B], [list(B), list(A)], "reference") == [2] * 10


def test_iou_matches_the_scalar_formula_bit_for_bit():
    rng = np.random.default_rng(0)
    a = np.round(rng.uniform(0, 100, (2000, 4)), 1)
    b = np.round(rng.uniform(0, 100, (2000, 4)), 1)
    b[:500] = a[:500] + rng.normal(0, 3, (500, 4))
    a[:5] = b[:5]  # identical boxes
    b[5] = [b[5][2], b[5][3], b[5][0], b[5][1]]  # inverted
    expected = [iou(list(x), list(y)) for x, y in zip(a.tolist(), b.tolist())]
    assert box_iou_pairs(a, b).tolist() == expected


def test_touching_and_degenerate_boxes_do_not_match():
    assert box_iou_pairs(np.array([A, A, A]), np.array([[10, 0, 20, 10], [5, 5, 5, 5], [8, 8, 2, 2]])).tolist() == [0.0] * 3


@lru_cache(maxsize=None)
def _brute_force(edges: frozenset, rows: int, used: frozenset = frozenset(), i: int = 0) -> int:
    if i == rows:
        return 0
    best = _brute_force(edges, rows, used, i + 1)
    for r, c in edges:
        if r == i and c not in used:
            best = max(best, 1 + _brute_force(edges, rows, used | {c}, i + 1))
    return best


coordinate = st.integers(0, 12)
box = st.tuples(coordinate, coordinate, st.integers(1, 8), st.integers(1, 8)).map(
    lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]]
)
samples = st.lists(st.tuples(st.lists(box, min_size=1, max_size=5), st.lists(box, max_size=6)), min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(samples)
def test_vectorised_greedy_equals_the_loop_and_optimal_equals_brute_force(cases):
    gt = [sample(answers, f"s{k}") for k, (answers, _) in enumerate(cases)]
    preds = [{"id": f"s{k}", "extracted_predictions": p} for k, (_, p) in enumerate(cases)]
    reference = evaluate(gt, preds)
    corrected = evaluate(gt, preds, mode="corrected")
    assert reference.summary() == reference_loop_summary(gt, preds)
    for k, (answers, predictions) in enumerate(cases):
        for t, threshold in enumerate(REFERENCE_THRESHOLDS):
            recall, _ = box_recall_precision(answers, predictions, threshold)
            assert reference.per_sample.matches[k, t] == round(recall * len(answers))
        for t, threshold in enumerate(EXACT_THRESHOLDS):
            edges = frozenset(
                (i, j) for i, g in enumerate(answers) for j, p in enumerate(predictions) if iou(g, p) >= threshold
            )
            assert corrected.per_sample.matches[k, t] == _brute_force(edges, len(answers))
        assert (reference.per_sample.matches[k, 0] <= corrected.per_sample.matches[k, 0])


def test_agrees_with_the_loop_on_a_humanref_like_set(humanref_like):
    gt, boxes, points = humanref_like
    result = evaluate(gt, boxes)
    assert result.summary() == reference_loop_summary(gt, boxes)  # to the last bit
    assert result.duplicate_ids and result.missing_ids  # the generator exercises both
    assert set(result.buckets) == {"1", "2-5", "6-10", ">10"}
    point_result = evaluate(gt, points)
    assert point_result.kind == "point"
    assert point_result.summary() == reference_loop_summary(gt, points)


def test_corrected_never_scores_fewer_matches(humanref_like):
    gt, boxes, _ = humanref_like
    reference, corrected = evaluate(gt, boxes), evaluate(gt, boxes, mode="corrected")
    # every official threshold is >= its exact decimal (0.6000000000000001 >= 0.6, ...), so the
    # corrected graph has at least the same edges, and a maximum matching is at least the greedy one
    assert (REFERENCE_THRESHOLDS >= EXACT_THRESHOLDS).all()
    assert (reference.per_sample.matches <= corrected.per_sample.matches).all()
