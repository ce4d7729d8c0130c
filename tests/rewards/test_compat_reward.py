"""The Rex-Thinker reference reward, rewards/rexthinker_compat.py: contracts §3 check values and flaws."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rexthinker.contracts.answer import answer_json
from rexthinker.rewards import load_reward
from tests.rewards.helpers import ROOT, completion, fenced, reward_module

compat = reward_module("rewards/rexthinker_compat.py")
BOX = [94, 45, 445, 271]
GT = answer_json([BOX], "the man")

# prediction, ground truth -> overall, format, accuracy
CHECK_VALUES = {
    "exact box": (completion(fenced(BOX)), GT, (1.0, 1.0, 1.0)),
    "one pixel off": (completion(fenced([94, 46, 445, 271])), GT, (0.1, 1.0, 0.0)),
    "an extra box": (completion(fenced(BOX, [1, 2, 3, 4])), GT, (0.1 + 0.9 * 2 / 3, 1.0, 2 / 3)),
    "the box twice": (completion(fenced(BOX, BOX)), GT, (0.1, 1.0, 0.0)),
    "None answer": (completion("None"), GT, (0.1, 1.0, 0.0)),
    "no tags": (fenced(BOX), GT, (0.9, 0.0, 1.0)),
    "None for None": (completion("None"), "None", (1.0, 1.0, 1.0)),
}

# the flaws the compat mode keeps on purpose, and its normalisation
FLAWS = {
    "reasoning numbers count as boxes": (completion("None", think="Person 1 is at [94, 45, 445, 271]."), GT, (1.0, 1.0, 1.0)),
    "a number in the reasoning is a false positive": (completion(fenced(BOX), think="I see [3, 4] here."), GT, (0.1 + 0.9 * 2 / 3, 1.0, 2 / 3)),
    "negative numbers are invisible": (
        completion(fenced([60, 10, 100, 100])), answer_json([[-5, 10, 40, 100], [60, 10, 100, 100]], "x"), (1.0, 1.0, 1.0),
    ),
    "94 equals 94.0": (completion(fenced([94.0, 45.0, 445.0, 271.0])), GT, (1.0, 1.0, 1.0)),
    "no spaces after commas": (completion('[{"bbox_2d": [94,45,445,271]}]'), GT, (1.0, 1.0, 1.0)),
    "two spaces after a comma is not a list": (completion('[{"bbox_2d": [94,  45, 445, 271]}]'), GT, (0.1, 1.0, 0.0)),
    "a malformed number zeroes accuracy": (completion(fenced(BOX), think="see [1.2.3, 4]"), GT, (0.1, 1.0, 0.0)),
    "a box for a rejection": (completion(fenced(BOX)), "None", (0.1, 1.0, 0.0)),
    "spaces inside tags are removed": ("< think > x </ think >\n< answer >" + fenced(BOX) + "</answer >", GT, (1.0, 1.0, 1.0)),
    "text after the answer": (completion(fenced(BOX)) + " ok", GT, (0.9, 0.0, 1.0)),
    "two think blocks still match": ("<think>a</think><think>b</think><answer>" + fenced(BOX) + "</answer>", GT, (1.0, 1.0, 1.0)),
}  # fmt: skip

TABLE = {**CHECK_VALUES, **FLAWS}


@pytest.mark.parametrize("predict, ground_truth, expected", TABLE.values(), ids=TABLE.keys())
def test_reference_scores(predict, ground_truth, expected):
    [scores] = compat.compute_score([predict], [ground_truth])
    assert list(scores) == ["overall", "format", "accuracy"]
    assert (scores["overall"], scores["format"], scores["accuracy"]) == pytest.approx(expected)


def test_format_weight():
    [scores] = compat.compute_score([fenced(BOX)], [GT], format_weight=0.3)
    assert scores["overall"] == pytest.approx(0.7)


def test_through_the_loader_with_solution_boxes():
    reward = load_reward(f"{ROOT}/rewards/rexthinker_compat.py:compute_score")
    predicts, truths, expected = zip(*CHECK_VALUES.values())
    boxes = [[BOX] if t == GT else [] for t in truths]
    n = len(predicts)
    scores = reward(list(predicts), solution_boxes=boxes, hint_boxes=[[]] * n, prompt=[""] * n)
    assert scores["overall"] == pytest.approx([e[0] for e in expected])
    assert scores["accuracy"] == pytest.approx([e[2] for e in expected])


def test_needs_a_ground_truth():
    with pytest.raises(ValueError, match="ground truth"):
        compat.compute_score(["x"])


text_with_tags = st.text(alphabet=st.sampled_from(list("ab<>/ \t\n\r\x0b\x1c\u2028\u3000")), max_size=40)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(text_with_tags)
def test_normalise_is_the_reference_substitution(text):
    assert compat.normalise(text) == re.sub(r"\s*([<>/])\s*", r"\1", text)
