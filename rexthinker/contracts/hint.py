"""The hint contract (contracts §2): the box hints as ``{"<category>": [[x0, y0, x1, y1], ...]}``
inside the user text, and the GRPO parquet ``problem`` cell that carries the training text.

- :func:`hint_json` / :func:`user_text` / :func:`grpo_problem` write them;
- :func:`parse_hint` reads the hint back out of any prompt (for rewards given the prompt but not
  the boxes; never raises), and :func:`parse_problem` reads a ``problem`` cell, strictly (a
  ValueError for anything that is not the training template). Its parts are cut from
  ``USER_TEMPLATES["train"]``, so the template is written once.

Both readers run in linear time on any string (tests/contracts/test_parsing_time.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from rexthinker.contracts.answer import Box, read_box

# The hint line of the training text, also the first line of the base model's pre-training chats.
HINT_LINE = "Hint: Object and its coordinates in this image: {hint}\n"
# User-text variants, selectable by name.
USER_TEMPLATES = {
    "train": HINT_LINE + "Please detect {referring} in this image.",
    "humanref_eval": "Hint: {hint}\nLocate {referring} in the image and answer the question in json format.",
}
IMAGE_PLACEHOLDER = "<image>"  # how a GRPO ``problem`` cell marks the image


def hint_json(category: str, boxes: Sequence[Sequence[int]]) -> str:
    """``{"<category>": [[x0, y0, x1, y1], ...]}`` with integer coordinates and json's default separators."""
    return json.dumps({category: [[int(v) for v in box] for box in boxes]})


def user_text(referring: str, category: str, boxes: Sequence[Sequence[int]], template: str = "train") -> str:
    if template not in USER_TEMPLATES:
        raise KeyError(f"unknown prompt template {template!r}; choose one of {sorted(USER_TEMPLATES)}")
    return USER_TEMPLATES[template].format(hint=hint_json(category, boxes), referring=referring)


def grpo_problem(referring: str, category: str, boxes: Sequence[Sequence[int]]) -> str:
    """The ``problem`` cell of a GRPO parquet row (contracts §1.4): ``<image>`` then the training text."""
    return IMAGE_PLACEHOLDER + user_text(referring, category, boxes, "train")


def _template_parts(template: str) -> tuple[str, str, str]:
    """The fixed text of a ``problem`` cell around its hint and its referring expression."""
    head, rest = template.split("{hint}")
    middle, tail = rest.split("{referring}")
    return IMAGE_PLACEHOLDER + head, middle, tail


_PROBLEM_HEAD, _PROBLEM_MIDDLE, _PROBLEM_TAIL = _template_parts(USER_TEMPLATES["train"])


def parse_problem(problem: str) -> tuple[str, str, list[Box]]:
    """``(referring, category, hint boxes)`` of a ``problem`` cell; raises ValueError.

    The hint runs from the ``{`` after the head to the last ``}`` followed by the middle, as the
    greedy regex ``head (\\{.*\\}) middle (.*) tail`` reads it; found with string searches, since
    that regex takes quadratic time on a cell full of middles."""
    head, middle, tail = _PROBLEM_HEAD, _PROBLEM_MIDDLE, _PROBLEM_TAIL
    body = None
    if problem.startswith(head) and problem.endswith(tail) and len(problem) >= len(head) + len(tail):
        body = problem[len(head) : len(problem) - len(tail)]
    cut = body.rfind("}" + middle) if body is not None and body.startswith("{") else -1
    if cut < 1:
        raise ValueError(f"problem does not follow the training template: {problem[:80]!r}")
    hint_text, referring = body[: cut + 1], body[cut + 1 + len(middle) :]
    hint = json.loads(hint_text)
    if not isinstance(hint, dict) or len(hint) != 1:
        raise ValueError(f"hint must be an object with one category, got {hint_text[:80]!r}")
    ((category, boxes),) = hint.items()
    return referring, category, boxes


_HINT = re.compile(r'\{[ \t]*"([^"\n]{1,64})"[ \t]*:[ \t]*(\[[\d\s,.\-\[\]]*\])[ \t]*\}')


def parse_hint(prompt: str) -> tuple[str, list[Box]] | None:
    """``(category, boxes)`` of the first ``{"<category>": [[x0, y0, x1, y1], ...]}`` in a prompt, or
    None when the prompt carries no readable hint."""
    if not isinstance(prompt, str):
        return None
    m = _HINT.search(prompt)
    if m is None:
        return None
    try:
        data = json.loads(m.group(2))
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, list):
        return None
    boxes = [read_box(b) for b in data]
    if any(b is None for b in boxes):
        return None
    return m.group(1), boxes
