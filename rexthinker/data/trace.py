"""Rule-written chain-of-thought traces in the HumanRef-CoT layout (contracts §1.3).

A trace has three parts, rendered from plain data so that a generator cannot produce an unfaithful
one by accident:

- planning: "OK, the user needs us to detect <referring>. To accomplish this task, ..." and one
  "- Step k: <title>." line per step;
- action: per step a "# Step k: <title>" block, an optional note (an ordering such as
  "[Person 4, Person 3, Person 1]") and one "- Person i: <observation> → ⚠|❌" line per candidate
  the step looks at;
- summary: "# Summarize and Re-Check answer", the re-check sentence and one
  "- Person i: <reason> → ✅|❌" line per candidate. The ✅ lines are the answer.

Optionally (``boxes=``) every candidate line states the candidate's hint box after its name,
"- Person 3 [x0, y0, x1, y1]: red shirt → ⚠": a trace a small model can learn from, since it copies
the hint list in order and the answer copies boxes it has just written (issue 14). The
HumanRef-CoT layout, without boxes, stays the default.

Candidates are 0-based indices here and "Person i" (1-based) in the text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

WARN = "\u26a0"  # ⚠ meets the sub-goal / is the reference entity
CROSS = "\u274c"  # ❌ does not
CHECK = "\u2705"  # ✅ a target in the summary
ARROW = "\u2192"  # →

SUMMARY_HEADER = "# Summarize and Re-Check answer"


@dataclass
class Line:
    """One candidate line: ``index`` is the 0-based hint index, ``hit`` picks the mark."""

    index: int
    text: str
    hit: bool


@dataclass
class Step:
    title: str
    lines: list[Line] = field(default_factory=list)
    note: str | None = None  # prose before the candidate lines, e.g. a left-to-right ordering


def plural(category: str) -> str:
    """Plural of a category name, as a trace writes it ("person" -> "people", "car" -> "cars")."""
    irregular = {"person": "people", "man": "men", "woman": "women", "child": "children"}
    if category in irregular:
        return irregular[category]
    if category.endswith(("s", "x", "ch", "sh")):
        return category + "es"
    return category + "s"


def candidate_name(category: str, index: int, box: Sequence[int] | None = None) -> str:
    """"Person 3" for the 0-based index 2; with ``box``, "Person 3 [x0, y0, x1, y1]"."""
    name = f"{category[:1].upper()}{category[1:]} {index + 1}"
    return name if box is None else name + " [" + ", ".join(str(int(v)) for v in box) + "]"


def ordering(category: str, indices: Sequence[int]) -> str:
    """``[Person 4, Person 3, Person 1]``."""
    return "[" + ", ".join(candidate_name(category, i) for i in indices) + "]"


def _line(category: str, line: Line, hit_mark: str, boxes: Sequence[Sequence[int]] | None) -> str:
    name = candidate_name(category, line.index, None if boxes is None else boxes[line.index])
    return f"- {name}: {line.text} {ARROW} {hit_mark if line.hit else CROSS}"


def render_trace(
    referring: str,
    category: str,
    steps: Sequence[Step],
    summary: Sequence[Line],
    boxes: Sequence[Sequence[int]] | None = None,
) -> str:
    """The whole ``think`` text (without ``<think>`` tags). With ``boxes`` (the hint boxes in the
    model frame, in hint order) each candidate line carries its box after the name."""
    if not steps:
        raise ValueError("a trace needs at least one step")
    n_targets = sum(line.hit for line in summary)
    parts = [
        f"OK, the user needs us to detect {referring}. To accomplish this task, I need to break it down "
        "into the following steps:\n" + "\n".join(f"- Step {k}: {s.title}." for k, s in enumerate(steps, 1))
    ]
    for k, step in enumerate(steps, 1):
        block = [f"# Step {k}: {step.title}"]
        if step.note:
            block.append(step.note)
        block.extend(_line(category, line, WARN, boxes) for line in step.lines)
        if not step.lines and not step.note:
            block.append(f"No {category} is left to check.")
        parts.append("\n".join(block))
    target_word = plural(category) if n_targets > 1 else category
    recheck = f"Let's now recheck our answer and put {CHECK} for the target {target_word} and {CROSS} for others"
    parts.append("\n".join([SUMMARY_HEADER, recheck] + [_line(category, line, CHECK, boxes) for line in summary]))
    return "\n\n".join(parts)


_SUMMARY_LINE = re.compile(r"^- (?:\w[\w ]*?) (\d+)(?: \[[\d, ]*\])?: .* " + ARROW + r" (" + CHECK + "|" + CROSS + r")\s*$")


def summary_marks(think: str) -> dict[int, bool]:
    """``{0-based index: is ✅}`` read back from the summary lines of a trace this module wrote.

    This is the generator's self-check, not a parser for model output (that one lives with the
    rewards and copes with ranges, lists and stray text)."""
    _, sep, tail = think.partition(SUMMARY_HEADER)
    if not sep:
        raise ValueError("trace has no summary section")
    marks: dict[int, bool] = {}
    for raw in tail.splitlines():
        match = _SUMMARY_LINE.match(raw)
        if match:
            marks[int(match.group(1)) - 1] = match.group(2) == CHECK
    return marks
