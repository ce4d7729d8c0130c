"""The Rex-Thinker reference reward, reproduced exactly, flaws included (contracts §3).

Use it to reproduce the paper's GRPO run: ``rewards/rexthinker_compat.py:compute_score``. For
anything else prefer ``rewards/referring.py``, which fixes the flaws listed below.

Per sample: ``overall = (1 - format_weight) * accuracy + format_weight * format``.

1. The response is normalised by deleting whitespace around every ``<``, ``>`` and ``/``.
2. ``format`` is 1 when the normalised response fully matches
   ``<think>.*?</think>\\s*<answer>.*?</answer>`` (``.`` matching newlines).
3. ``accuracy`` is an exact-match F1 over every bracketed all-numeric list (``[94, 45, 445, 271]``:
   numbers of digits and dots, separated by ``,`` or ``, ``) found anywhere in the response and
   in the ground truth. Both without lists: 1. A list predicted twice: 0. Otherwise recall and
   precision count predicted lists equal to a ground-truth list (``94 == 94.0``); F1 of the two.
   Any failure while computing it (a number such as ``1.2.3``, a division by zero): 0.

Flaws kept on purpose: numbers written in the reasoning count as predicted boxes; negative numbers
never match; a box one pixel off scores 0; one duplicate zeroes the sample.

The call is the reference's batch form, ``compute_score(predicts, ground_truths, format_weight=0.1)``
returning one ``{"overall", "format", "accuracy"}`` dict per sample. The project's reward loader
passes the ground truth as boxes instead (``solution_boxes=``); they are written into the fenced
json answer a GRPO row carries (contracts §1.4) before scoring, so both calls score alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

_TAG_CHARS = re.compile(r"([<>/])")
_ANSWER_OPEN = re.compile(r"\s*<answer>")
_NUMBER_LIST = re.compile(r"\[([\d.]+(?:, ?[\d.]+)*)\]")


def compute_score(
    predicts: Sequence[str],
    ground_truths: Sequence[str] | None = None,
    format_weight: float = 0.1,
    *,
    solution_boxes: Sequence | None = None,
    **kwargs,
) -> list[dict[str, float]]:
    """Reference scores of a batch: one ``{"overall", "format", "accuracy"}`` dict per response."""
    if ground_truths is None:
        if solution_boxes is None:
            raise ValueError("give the ground truth as ground_truths (answer strings) or solution_boxes")
        ground_truths = [_answer_string(boxes) for boxes in solution_boxes]
    scores = []
    for predict, ground_truth in zip(predicts, ground_truths, strict=True):
        response = normalise(predict)
        fmt = format_reward(response)
        acc = accuracy_reward(response, ground_truth)
        scores.append({"overall": (1 - format_weight) * acc + format_weight * fmt, "format": fmt, "accuracy": acc})
    return scores


def normalise(response: str) -> str:
    """Delete the whitespace around every ``<``, ``>`` and ``/``: what ``re.sub(r"\\s*([<>/])\\s*",
    r"\\1", response)`` does, done by splitting on those characters, which is several times faster."""
    pieces = _TAG_CHARS.split(response)
    last = len(pieces) - 1
    for k in range(0, last + 1, 2):  # even pieces are the text between tag characters
        piece = pieces[k]
        if k > 0:
            piece = piece.lstrip()
        if k < last:
            piece = piece.rstrip()
        pieces[k] = piece
    return "".join(pieces)


def format_reward(response: str) -> float:
    """1.0 when ``re.fullmatch(r"<think>.*?</think>\\s*<answer>.*?</answer>", response, re.S)``
    matches, decided in one pass: some ``</think>`` after the opening tag is followed by whitespace
    and an ``<answer>`` that ends before the closing tag. The regex tries every ``</think>`` against
    every ``</answer>``: a second on a 64k-character degenerate response, growing with its square."""
    if not (response.startswith("<think>") and response.endswith("</answer>")):
        return 0.0
    answer_end = len(response) - len("</answer>")
    close = response.find("</think>", len("<think>"))
    while close >= 0:
        opening = _ANSWER_OPEN.match(response, close + len("</think>"))
        if opening is not None:
            return 1.0 if opening.end() <= answer_end else 0.0  # a later </think> ends later still
        close = response.find("</think>", close + 1)
    return 0.0


def accuracy_reward(response: str, ground_truth: str) -> float:
    try:
        pred = _number_lists(response)
        gt = _number_lists(ground_truth)
        if not pred and not gt:
            return 1.0
        if len(set(pred)) != len(pred):
            return 0.0
        hits = sum(1 for box in pred if box in gt)
        recall = hits / len(gt)
        precision = hits / len(pred)
        return 2 * recall * precision / (recall + precision)
    except (ValueError, ZeroDivisionError):
        return 0.0


def _number_lists(text: str) -> list[tuple[float, ...]]:
    return [tuple(float(v) for v in m.group(1).split(",")) for m in _NUMBER_LIST.finditer(text)]


def _answer_string(boxes) -> str:
    """The fenced json answer of a GRPO row for these ground-truth boxes (``[]`` for a rejection)."""
    items = [{"bbox_2d": [v.item() if hasattr(v, "item") else v for v in box], "label": ""} for box in boxes]
    return "```json\n" + json.dumps(items) + "\n```"
