"""The quick evaluation's RefCOCO-style Acc@0.5: single-target samples only, first answer box, IoU >= 0.5."""

from __future__ import annotations

import math

from rexthinker import quickeval

from .test_quickeval import HINTS, generation


def test_top1_accuracy_scores_single_target_samples_only():
    gens = [
        generation("refcocog", [[0, 0, 10, 10]], [[0, 0, 10, 5]]),  # IoU exactly 0.5: right
        generation("refcocog", [[0, 0, 10, 10]], [[0, 0, 10, 4]]),  # IoU 0.4: wrong
        generation("refcocog", [HINTS[0]], [HINTS[1], HINTS[0]]),  # the first box is the answer: wrong
        generation("refcocog", [HINTS[0]], [HINTS[0], HINTS[1]]),  # right, the extra box ignored
        generation("refcocog", [HINTS[0]], []),  # no box: wrong
        generation("refcocog", [HINTS[0]], None),  # unreadable: wrong
        generation("attribute", [HINTS[0], HINTS[1]], [HINTS[0], HINTS[1]]),  # two targets: not scored
        generation("rejection", [], []),  # no target: not scored
    ]
    result = quickeval.score(gens)
    assert result["acc_50_samples"] == 6
    assert math.isclose(result["acc_50"], 2 / 6)
    assert [quickeval.top1_correct(g) for g in gens[:6]] == [True, False, False, True, False, False]


def test_no_single_target_sample_gives_nan():
    result = quickeval.score([generation("rejection", [], [])])
    assert result["acc_50_samples"] == 0 and math.isnan(result["acc_50"])
