"""Table tests of the default reward, rewards/referring.py:compute_score."""

from __future__ import annotations

import numpy as np
import pytest

from rexthinker.contracts.answer import answer_json
from rexthinker.contracts.hint import user_text
from rexthinker.rewards import load_reward
from tests.rewards.helpers import ROOT, completion, fenced, person_trace, reward_module

referring = reward_module("rewards/referring.py")
OK, NO = "\u2705", "\u274c"

P1, P2, P3 = [10, 10, 50, 100], [60, 10, 100, 100], [110, 10, 150, 100]
HINTS = [P1, P2, P3]
PICK_2 = person_trace({1: NO, 2: OK, 3: NO})
PICK_NONE = person_trace({1: NO, 2: NO, 3: NO})
PICK_2_3 = person_trace({1: NO, 2: OK, 3: OK})

# completion, ground-truth boxes -> format, accuracy, rejection, faithfulness, overall (default weights)
CASES = {
    "right, faithful": (completion(fenced(P2), PICK_2), [P2], (1, 1, 1, 1, 1.0)),
    "right, bare json": (completion('[{"bbox_2d": [60, 10, 100, 100]}]', PICK_2), [P2], (1, 1, 1, 1, 1.0)),
    "a few pixels off: accurate, not a hint copy": (completion(fenced([61, 11, 101, 99]), PICK_2), [P2], (1, 1, 1, 0, 1.0)),
    "wrong person": (completion(fenced(P1), PICK_2), [P2], (1, 0, 1, 0, 0.1)),
    "duplicate costs precision": (completion(fenced(P2, P2), PICK_2), [P2], (1, 2 / 3, 1, 0, 0.1 + 0.9 * 2 / 3)),
    "one extra box": (completion(fenced(P2, P3), PICK_2_3), [P2], (1, 2 / 3, 1, 1, 0.1 + 0.9 * 2 / 3)),
    "one of two targets": (completion(fenced(P2), PICK_2), [P2, P3], (1, 2 / 3, 1, 1, 0.1 + 0.9 * 2 / 3)),
    "both targets, any order": (completion(fenced(P3, P2), PICK_2_3), [P2, P3], (1, 1, 1, 1, 1.0)),
    "rejection answered None": (completion("None", PICK_NONE), [], (1, 1, 1, 1, 1.0)),
    "rejection answered []": (completion(fenced(), PICK_NONE), [], (1, 1, 1, 1, 1.0)),
    "rejection answered with a box": (completion(fenced(P2), PICK_2), [], (1, 0, 0, 1, 0.1)),
    "rejecting a positive sample earns nothing": (completion("None", PICK_NONE), [P2], (1, 0, 0, 1, 0.1)),
    "boxes in the reasoning do not count": (completion("None", "Person 2 is at [60, 10, 100, 100]."), [P2], (1, 0, 0, 0, 0.1)),
    "no tags": (fenced(P2), [P2], (0, 0, 0, 0, 0.0)),
    "answer not closed": ("<think>" + PICK_2 + "</think><answer>" + fenced(P2), [P2], (0, 0, 0, 0, 0.0)),
    "text after the answer": (completion(fenced(P2), PICK_2) + " Done.", [P2], (0, 1, 1, 1, 0.9)),
    "whitespace between blocks is fine": ("<think>\n" + PICK_2 + "\n</think>\n<answer>\n" + fenced(P2) + "\n</answer>\n", [P2], (1, 1, 1, 1, 1.0)),
    "unreadable answer": (completion("Person 2", PICK_2), [P2], (0, 0, 0, 0, 0.0)),
    "blank think": (completion(fenced(P2), " "), [P2], (0, 1, 1, 0, 0.9)),
    "summary disagrees with the answer": (completion(fenced(P2), PICK_2_3), [P2], (1, 1, 1, 0, 1.0)),
    "summary names a missing candidate": (completion(fenced(P2), person_trace({2: OK, 7: OK})), [P2], (1, 1, 1, 0, 1.0)),
    "no summary": (completion(fenced(P2), "Person 2 is the man."), [P2], (1, 1, 1, 0, 1.0)),
    "negative coordinates": (completion(fenced([-4, 10, 40, 100])), [[-5, 10, 40, 100]], (1, 1, 1, 0, 1.0)),
}  # fmt: skip

COMPONENTS = ("format", "accuracy", "rejection", "faithfulness", "overall")
FAITHFUL = {"format_weight": 0.1, "accuracy_weight": 0.6, "rejection_weight": 0.1, "faithfulness_weight": 0.2}


@pytest.mark.parametrize("text, gt, expected", CASES.values(), ids=CASES.keys())
def test_components(text, gt, expected):
    expected = dict(zip(COMPONENTS, expected))
    default = referring.compute_score([text], [gt], hint_boxes=[HINTS])  # faithfulness is off by default
    assert list(default) == ["format", "accuracy", "rejection", "overall"]
    assert {k: v[0] for k, v in default.items()} == pytest.approx({k: expected[k] for k in default})
    with_faithfulness = referring.compute_score([text], [gt], hint_boxes=[HINTS], **FAITHFUL)
    assert list(with_faithfulness) == list(COMPONENTS)
    expected["overall"] = sum(FAITHFUL[f"{k}_weight"] * expected[k] for k in COMPONENTS[:-1])
    assert {k: v[0] for k, v in with_faithfulness.items()} == pytest.approx(expected)


def test_batch_through_the_loader_matches_the_table():
    reward = load_reward(f"{ROOT}/rewards/referring.py:compute_score")
    texts, gts, _ = zip(*CASES.values())
    n = len(texts)
    scores = reward(
        list(texts), solution_boxes=list(gts), hint_boxes=[HINTS] * n, category=["person"] * n,
        domain=["attribute"] * n, image_size=[(640, 480)] * n, prompt=["p"] * n,
    )  # fmt: skip
    expected = [e for *_, e in CASES.values()]
    assert list(scores) == ["format", "accuracy", "rejection", "overall"]
    for k, name in enumerate(COMPONENTS):
        if name in scores:
            assert scores[name] == pytest.approx([e[k] for e in expected]), name
    assert reward.errors.failed == 0


def test_weights_and_threshold_are_config():
    text = completion(fenced([60, 10, 100, 70]), PICK_2)  # IoU 2/3 with P2, not a hint copy
    scores = referring.compute_score(
        [text], [[P2]], hint_boxes=[HINTS],
        format_weight=0.2, accuracy_weight=0.5, rejection_weight=0.1, faithfulness_weight=0.2,
    )  # fmt: skip
    assert scores["overall"] == pytest.approx([0.2 + 0.5 + 0.1 + 0.0])
    strict = referring.compute_score([text], [[P2]], iou_threshold=0.7)
    assert strict["accuracy"] == [0.0] and strict["overall"] == pytest.approx([0.1])


def test_faithfulness_needs_hints():
    text = completion(fenced(P2), PICK_2)
    from_prompt = referring.compute_score([text], [[P2]], prompt=[user_text("the man", "person", HINTS)], **FAITHFUL)
    assert from_prompt["faithfulness"] == [1.0]
    with pytest.raises(ValueError, match="neither hint_boxes nor prompt"):
        referring.compute_score([text], [[P2]], faithfulness_weight=0.1)
    with pytest.raises(ValueError, match="no readable hint"):
        referring.compute_score([text], [[P2]], prompt=["Please detect the man."], faithfulness_weight=0.1)


def test_ground_truth_as_answer_strings_easyr1_call():
    texts = [completion(fenced(P2), PICK_2), completion("None", PICK_NONE), completion(fenced(P2), PICK_2)]
    strings = [answer_json([P2], "the man"), "None", answer_json([], "nobody")]
    scores = referring.compute_score(texts, strings)
    assert scores["overall"] == pytest.approx([1.0, 1.0, 0.1])


def test_numpy_inputs():
    gt = np.array([P2])
    scores = referring.compute_score([completion(fenced(P2), PICK_2)], [gt], hint_boxes=[np.array(HINTS)], **FAITHFUL)
    assert scores["faithfulness"] == [1.0] and scores["overall"] == pytest.approx([1.0])


@pytest.mark.parametrize(
    "gt, message",
    [(None, "is None"), ("Person 2", "cannot read"), ([[1, 2, 3]], r"\[x0, y0, x1, y1\]")],
)
def test_unreadable_ground_truth_is_a_data_error(gt, message):
    with pytest.raises(ValueError, match=message):
        referring.compute_score([completion("None")], [gt])


@pytest.mark.parametrize("config", [{"iou_threshold": 0.0}, {"format_weight": float("nan")}])
def test_bad_config(config):
    with pytest.raises(ValueError):
        referring.compute_score([completion("None")], [[]], **config)


SOFT = {
    "exact box": (completion(fenced(P2), PICK_2), [P2], 1.0),
    "a box moving toward its target scores more": (completion(fenced([60, 10, 100, 40])), [P2], 1 / 3),
    "same box, further off": (completion(fenced([60, 10, 100, 20])), [P2], 1 / 9),
    "best of several boxes, discounted for the extra one": (completion(fenced(P1, P2)), [P2], 0.5),
    "one of two targets": (completion(fenced(P2)), [P2, P3], 0.5),
    "no box for a positive sample": (completion("None"), [P2], 0.0),
    "rejection answered None": (completion("None"), [], 1.0),
    "rejection answered with a box": (completion(fenced(P2)), [], 0.0),
    "unreadable": ("no tags", [P2], 0.0),
}  # fmt: skip


@pytest.mark.parametrize("text, gt, expected", SOFT.values(), ids=SOFT.keys())
def test_soft_iou_is_an_optional_shaped_component(text, gt, expected):
    scores = referring.compute_score([text], [gt], soft_iou_weight=0.2)
    assert list(scores) == ["format", "accuracy", "rejection", "soft_iou", "overall"]
    assert scores["soft_iou"] == pytest.approx([expected])
    plain = referring.compute_score([text], [gt])
    assert "soft_iou" not in plain
    assert scores["overall"][0] == pytest.approx(plain["overall"][0] + 0.2 * expected)
