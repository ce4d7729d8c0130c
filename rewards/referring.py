"""The project's default reward: referring with box hints, scored on the answer's boxes.

Use it in a GRPO config as ``rewards/referring.py:compute_score`` (keyword config below). Copy this
file to start your own reward; ``rewards/README.md`` says how.

Components, each a float in [0, 1] and logged as ``reward/<name>``:

``format``
    1 when the completion is one non-blank ``<think>…</think>`` followed by one
    ``<answer>…</answer>`` (whitespace around and between the tags is fine, any other text is
    not) and the answer reads as a json list of ``{"bbox_2d": [x0, y0, x1, y1], ...}`` objects,
    fenced or bare, or as ``None``/``[]``.
``accuracy``
    Positive sample: F1 between the answer's boxes and the ground truth under a one-to-one
    matching that pairs as many boxes as possible at ``IoU >= iou_threshold`` (default 0.5; see
    :func:`rexthinker.boxes.match_boxes`). F1 is ``2 * matched / (predicted + ground truth)``,
    so a duplicated box is one more unmatched prediction: it lowers the score, it does not zero
    it. Rejection sample (empty ground truth): 1 when the answer names no box, else 0.
    Boxes are read from the answer block only, never from the reasoning.
``rejection``
    1 when the answer's decision "is there a target?" is right: no box for an empty ground
    truth, at least one box for a non-empty one. An empty answer to a positive sample scores 0,
    so a policy that always rejects cannot collect it.
``faithfulness`` (only with a non-zero ``faithfulness_weight``)
    1 when the trace has a summary, its ✅ set is exactly the set of answer boxes (each box a
    verbatim copy of the hint it names, each listed once), 0 otherwise. Needs ``hint_boxes``, or
    a ``prompt`` holding the hint. Off by default: reading the summary halves the throughput, and
    the set of components then depends on the config alone, never on which keys a caller passed.
``soft_iou`` (only with a non-zero ``soft_iou_weight``)
    A shaped term a policy can climb before its boxes are right: positive sample, the mean over
    the ground-truth boxes of the best IoU any answer box reaches, times ``min(1, |gt| / |pred|)``
    so that answering every hint does not pay; rejection sample, the same as ``accuracy``. It
    rises with every pixel a box moves toward its target, where ``accuracy`` stays 0 until a box
    passes ``iou_threshold``. Off by default.
``overall``
    ``format_weight * format + accuracy_weight * accuracy + rejection_weight * rejection
    + faithfulness_weight * faithfulness + soft_iou_weight * soft_iou``. Defaults
    0.1 / 0.9 / 0 / 0 / 0: the reference reward's
    mix (contracts §3) with IoU-matched F1 in place of its exact-match F1. With non-negative
    weights summing to 1, ``overall`` stays in [0, 1].

A completion whose answer cannot be read (no ``<answer>`` block, text that is not the json above)
scores 0 on every component; nothing here raises on model text. A ground truth that cannot be read
is a data error and raises ``ValueError`` (the loader reports it and scores that sample 0).

Batch keys used (all lists aligned with ``completions``):
``solution_boxes`` (ground-truth ``[x0, y0, x1, y1]`` boxes of each sample in the model-input
frame, ``[]`` for a rejection; a ground-truth answer string, the fenced json of contracts §1.4 or
``None``, is read as well, so the EasyR1-style call ``compute_score(predicts, ground_truths)``
works, returning this project's dict of lists), ``hint_boxes`` and ``prompt`` (faithfulness only; the hint is read from the prompt when
``hint_boxes`` is absent). Other keys are accepted and ignored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rexthinker.boxes import box_iou, detection_f1
from rexthinker.contracts.answer import parse_answer
from rexthinker.contracts.completion import parse_completion
from rexthinker.contracts.hint import parse_hint
from rexthinker.contracts.trace import CHECK, read_summary


def compute_score(
    completions: Sequence[str],
    solution_boxes: Sequence,
    *,
    hint_boxes: Sequence | None = None,
    prompt: Sequence[str] | None = None,
    format_weight: float = 0.1,
    accuracy_weight: float = 0.9,
    rejection_weight: float = 0.0,
    faithfulness_weight: float = 0.0,
    soft_iou_weight: float = 0.0,
    iou_threshold: float = 0.5,
    **kwargs,
) -> dict[str, list[float]]:
    """Score a batch; returns ``{component: [one float per completion]}`` (see the module docstring)."""
    weights = {
        "format": format_weight,
        "accuracy": accuracy_weight,
        "rejection": rejection_weight,
        "faithfulness": faithfulness_weight,
        "soft_iou": soft_iou_weight,
    }
    for name, weight in weights.items():
        if not math.isfinite(weight):
            raise ValueError(f"{name}_weight must be a finite number, got {weight}")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    with_faithfulness = faithfulness_weight != 0
    if with_faithfulness and hint_boxes is None and prompt is None:
        raise ValueError("faithfulness_weight is set but the batch has neither hint_boxes nor prompt")
    if not with_faithfulness:
        del weights["faithfulness"]
    if soft_iou_weight == 0:
        del weights["soft_iou"]

    out: dict[str, list[float]] = {name: [] for name in (*weights, "overall")}
    for i, completion in enumerate(completions):
        gt = read_boxes(solution_boxes[i], "solution_boxes")
        hints = None
        if with_faithfulness:
            hints = _hints(hint_boxes[i] if hint_boxes is not None else None, prompt[i] if prompt is not None else None)
        scores = score_sample(completion, gt, hints, iou_threshold)
        overall = 0.0
        for name, weight in weights.items():
            value = scores[name]
            out[name].append(value)
            overall += weight * value
        out["overall"].append(overall)
    return out


def score_sample(
    completion: str, gt: list[list[float]], hints: Sequence | None, iou_threshold: float = 0.5
) -> dict[str, float]:
    """The components of one completion; ``faithfulness`` only when ``hints`` is given."""
    parsed = parse_completion(completion)
    answer = parsed.answer
    if not answer.ok:
        return {"format": 0.0, "accuracy": 0.0, "rejection": 0.0, "faithfulness": 0.0, "soft_iou": 0.0}
    pred = answer.boxes
    scores = {
        "format": 1.0 if parsed.strict_layout else 0.0,
        "accuracy": detection_f1(pred, gt, iou_threshold),
        "rejection": 1.0 if (not pred) == (not gt) else 0.0,
        "soft_iou": soft_iou(pred, gt),
    }
    if hints is not None:
        scores["faithfulness"] = faithfulness(parsed.think, pred, hints)
    return scores


def soft_iou(pred: list[list[float]], gt: list[list[float]]) -> float:
    """Mean best IoU of the ground-truth boxes, discounted for extra answer boxes (see ``soft_iou``)."""
    if not gt:
        return 1.0 if not pred else 0.0
    if not pred:
        return 0.0
    best = sum(max(box_iou(p, g) for p in pred) for g in gt) / len(gt)
    return best * min(1.0, len(gt) / len(pred))


def faithfulness(think: str | None, pred: list[list[float]], hints: Sequence) -> float:
    """1.0 when the summary's ✅ candidates are exactly the answer: every ✅ index names a hint, and
    the answer lists each ✅ hint box once and nothing else."""
    if think is None:
        return 0.0
    summary = read_summary(think)
    if summary is None:
        return 0.0
    checked = [k for k, mark in summary.items() if mark == CHECK]
    if any(k > len(hints) for k in checked):
        return 0.0
    answer = [tuple(box) for box in pred]
    if len(set(answer)) != len(answer):
        return 0.0
    return 1.0 if set(answer) == {tuple(float(v) for v in hints[k - 1]) for k in checked} else 0.0


def read_boxes(value, what: str) -> list[list[float]]:
    """Ground-truth or hint boxes of one sample: a sequence of 4-number boxes, or an answer string."""
    if isinstance(value, str):
        parsed = parse_answer(value)
        if not parsed.ok:
            raise ValueError(f"{what}: cannot read {value[:80]!r}: {'; '.join(parsed.problems)}")
        return parsed.boxes
    if value is None:
        raise ValueError(f"{what} is None; a sample with no target has []")
    boxes = [[float(v) for v in box] for box in value]
    if any(len(box) != 4 for box in boxes):
        raise ValueError(f"{what}: every box must be [x0, y0, x1, y1], got {value!r}")
    return boxes


def _hints(boxes: Sequence | None, prompt: str | None) -> Sequence:
    """The sample's hint boxes as given (only the ✅ ones are ever read), else read from the prompt."""
    if boxes is not None:
        return boxes
    hint = parse_hint(prompt)
    if hint is None:
        raise ValueError(f"no hint_boxes, and no readable hint in the prompt {str(prompt)[:80]!r}")
    return hint[1]
