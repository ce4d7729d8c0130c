"""The answer contract (contracts §1.3, §2): a fenced json list of ``{"bbox_2d": [x0, y0, x1, y1],
"label": ...}``, ``[]`` for "no target".

- :func:`answer_json` writes it (SFT targets, GRPO ``answer`` cells, the base's locate turns);
- :func:`parse_answer` reads it from model output: never raises; what could not be read is said
  in ``ParsedAnswer.problems``. Tolerated: a fence without backticks, ``None``/``null`` for a
  rejection, a single object for a list of one;
- :func:`parse_answer_cell` reads a ground-truth cell of a data file, where anything unreadable is
  a ValueError (the data readers turn it into a ``DataError`` naming the file and row).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

Box = list[float]


def answer_json(boxes: Sequence[Sequence[int]], label: str) -> str:
    """The fenced json answer: a list of ``{"bbox_2d": [...], "label": ...}``; ``[]`` for a rejection."""
    items = [{"bbox_2d": [int(v) for v in box], "label": label} for box in boxes]
    return "```json\n" + json.dumps(items) + "\n```"


@dataclass(slots=True)
class ParsedAnswer:
    """The content of one ``<answer>`` (or of a ground-truth answer string).

    ``ok`` is True when the content was read completely; then ``boxes`` (floats, in the order
    written) is the whole answer and ``rejection`` says it explicitly names no target. When ``ok``
    is False, ``boxes`` is empty and ``problems`` says why: a partly readable answer is not
    half-trusted.
    """

    boxes: list[Box]
    labels: list[str | None]
    rejection: bool
    ok: bool
    problems: list[str] = field(default_factory=list)


_REJECTION_WORDS = frozenset(("none", "null", "[]"))


def _unreadable(reason: str) -> ParsedAnswer:
    return ParsedAnswer([], [], False, False, [reason])


def parse_answer(content: str) -> ParsedAnswer:
    """Read an answer: optional ```` ```json ```` fence, then ``None``/``null``/``[]`` or a json list of
    objects carrying ``bbox_2d`` (a single object is read as a list of one)."""
    if not isinstance(content, str):
        return _unreadable(f"answer is a {type(content).__name__}, not a string")
    text = content.strip()
    if text.startswith("```"):
        if len(text) < 6 or not text.endswith("```"):
            return _unreadable("``` fence is not closed, or text follows it")
        text = text[3:-3].strip()
        if text[:4].lower() == "json":
            text = text[4:].strip()
    elif text[:4].lower() == "json" and text[4:5].isspace():
        text = text[4:].strip()  # the fence's "json" tag survived but the backticks did not
    if not text:
        return _unreadable("empty answer")
    if text.lower() in _REJECTION_WORDS:
        return ParsedAnswer([], [], True, True)
    try:
        data = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, and ints longer than Python's digit limit
        return _unreadable(f"answer is not valid json: {str(exc)[:80]}")
    except RecursionError:
        return _unreadable("answer is not valid json: nested too deeply")
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        return _unreadable(f"answer json is a {type(data).__name__}, expected a list of objects")
    boxes: list[Box] = []
    labels: list[str | None] = []
    for k, item in enumerate(data):
        if not isinstance(item, dict) or "bbox_2d" not in item:
            return _unreadable(f"answer item {k} is not an object with a bbox_2d")
        box = read_box(item["bbox_2d"])
        if box is None:
            return _unreadable(f"answer item {k}: bbox_2d is not four finite numbers")
        boxes.append(box)
        label = item.get("label")
        labels.append(label if isinstance(label, str) else None)
    return ParsedAnswer(boxes, labels, not boxes, True)


def read_box(value: object) -> Box | None:
    if not isinstance(value, list) or len(value) != 4:
        return None
    box = []
    for v in value:
        if type(v) is not int and type(v) is not float:  # bool is an int subclass: refuse it
            return None
        try:
            f = float(v)
        except OverflowError:
            return None
        if not math.isfinite(f):
            return None
        box.append(f)
    return box



def parse_answer_cell(answer: str | None) -> list[Box]:
    """Boxes of a ground-truth ``answer`` cell; ``None``, an empty cell, ``None``/``null`` and ``[]``
    are a rejection. Raises ValueError saying what could not be read."""
    if answer is None or not answer.strip():
        return []
    parsed = parse_answer(answer)
    if not parsed.ok:
        raise ValueError(f"{parsed.problems[0]}: {answer.strip()[:80]!r}")
    return parsed.boxes
