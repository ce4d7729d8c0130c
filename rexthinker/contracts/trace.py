"""The trace contract: chain-of-thought traces in the HumanRef-CoT layout (contracts §1.3).

The writer (:func:`render_trace`) and the reader (:func:`parse_trace`, and :func:`read_summary`
for the summary alone) live here together, with the marks both use.

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

The reader copes with what models write: ranges, lists and plural categories ("Persons 1-3"),
stray prose, ``->`` for ``→`` and ``⚠`` with or without U+FE0F. It never raises; what could not be
read is said in ``Trace.problems``. It takes time linear in the text, whatever the text (64k
characters in milliseconds, tests/contracts/test_parsing_time.py): every regex here either runs
in linear time or reads no more than a line's head, and the candidates read are capped
(``MAX_RANGE`` per range, ``MAX_MARKS`` per trace).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

# The marks of contracts §1.3.
WARN = "\u26a0"  # ⚠ meets the sub-goal, or is the reference entity (action steps)
CROSS = "\u274c"  # ❌ does not
CHECK = "\u2705"  # ✅ a target (summary)
ARROW = "\u2192"  # →
_VARIATION_SELECTOR = "\ufe0f"  # may follow ⚠
_MARKS = frozenset((WARN, CROSS, CHECK))

# A range such as "Person 1-100000000" is not expanded past this many candidates.
MAX_RANGE = 1000
# Candidate marks read from the summary, and from all the other sections together, ranges counted
# by their length and repeats included: a real trace names a few hundred; past this the candidate
# lines are not read (a problem says so), which bounds the work a degenerate trace makes.
MAX_MARKS = 10_000

SUMMARY_HEADER = "# Summarize and Re-Check answer"


# ----------------------------------------------------------------------------------------------
# The writer
# ----------------------------------------------------------------------------------------------


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


def summary_marks(think: str) -> dict[int, bool]:
    """``{0-based index: is ✅}`` of the summary of a trace :func:`render_trace` wrote (the
    generator's self-check), read by :func:`read_summary`; raises ValueError when there is none."""
    marks = read_summary(think)
    if marks is None:
        raise ValueError("trace has no summary section")
    return {k - 1: mark == CHECK for k, mark in marks.items()}


# ----------------------------------------------------------------------------------------------
# The reader
# ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class TraceStep:
    """One ``# Step k: <title>`` block: ``marks`` maps each candidate (1-based) to ⚠ or ❌."""

    index: int
    title: str
    marks: dict[int, str]


@dataclass(slots=True)
class Trace:
    """A plan / action / summary trace.

    ``plan`` holds the planning step titles in order; ``steps`` the action blocks; ``summary``
    maps each candidate of the summary section to ✅ or ❌ (None when there is no summary
    section) and ``checked`` is its ✅ set. Candidates are 1-based, as written ("Person 3" is 3).
    ``category`` is the word that names candidates ("Person", "Helmet").
    """

    referring: str | None
    plan: list[str]
    steps: list[TraceStep]
    summary: dict[int, str] | None
    checked: frozenset[int]
    category: str | None
    problems: list[str]


_STEP_TITLE = re.compile(r"step[ \t]*(\d{1,6})[ \t]*[:.\-]?[ \t]*(.*)", re.I | re.S)
_SUMMARY_TITLE = re.compile(r"summar|re-?check", re.I)
_REFERRING_HEAD = re.compile(r"needs us to (?:detect|find|locate) ")
_REFERRING_END = ". To accomplish"
_MAX_REFERRING = 500
_PLAN_STEP = re.compile(r"step[ \t]*(\d{1,6})[ \t]*[:.][ \t]*(.*)", re.I | re.S)
_BULLETS = "-*\u2022"
# A line head "<Category> <references>": a category of letters (single spaces allowed between
# words), then the references, starting with a digit.
_HEAD = re.compile(r"([^\W\d_](?:[^\W\d_'\u2019\-]|[ \t](?=[^\W\d_]))*)[ \t]*(\d.*)", re.S)
_REF = re.compile(r"(\d{1,9})(?:[ \t]*(?:-|\u2013|\u2014|~|to)[ \t]*(\d{1,9}))?")
_PARENTHESES = re.compile(r"\([^()]*\)")
_GLUE = re.compile(r"[\s,&/;.]*")
_WORD = re.compile(r"[^\W\d_]+")
_MAX_HEAD = 120  # a line whose first colon comes later is prose, not a candidate line
# The common line, whose head fits in _MAX_HEAD: bullet, word, number, colon, text, mark at the end.
_SIMPLE_ITEM = re.compile(
    r"[-*\u2022][ \t]{0,5}([^\W\d_]{1,100}) ([1-9]\d{0,5})(?:[ \t]*\[[\d \t,.\-]*\])?[ \t]{0,5}:"
    r".*([\u26a0\u274c\u2705])\ufe0f?[ \t.]*"
)
# A box stated after the candidate's name, "- Person 3 [12, 40, 60, 200]: ..." (SynthRef's
# trace_boxes layout); it is not part of the name.
_HEAD_BOX = re.compile(r"(?<![ \t])[ \t]*\[[\d \t,.\-]*\]$")  # not from inside a run of spaces: linear


def parse_trace(think: str) -> Trace:
    """Read a plan / action / summary trace (contracts §1.3).

    Headings (``#`` lines) split the text: before the first one is the plan (``- Step k: <title>``
    lines), then ``# Step k: <title>`` blocks and a ``# Summarize…``/``Re-Check`` block. Candidate
    lines are ``- <Category> <refs> [box]: <text> → <mark>`` (the box is optional) where ``<refs>`` is one number, a range
    (``1-9``), a list (``1,2,4``, ``1, 2 and 4``, ``Person 1, Person 3``) or a mix, and the
    category may be plural ("Persons 1-3"). Bulleted prose whose head names no candidates is
    skipped unless it ends in a mark, which is reported.
    """
    if not isinstance(think, str):
        return Trace(None, [], [], None, frozenset(), None, [f"trace is a {type(think).__name__}, not a string"])
    if not think.strip():
        return Trace(None, [], [], None, frozenset(), None, ["empty trace"])
    problems: list[str] = []
    lines = think.split("\n")
    plan_numbers: list[int] = []
    plan: list[str] = []
    steps: list[TraceStep] = []
    summary: dict[int, str] | None = None
    section: dict[int, str] | None = None  # the marks being filled; None while in the plan
    where = "the plan"
    preamble_end = len(lines)
    category: list[str] = []  # the first category word met, in a one-slot list
    others_left = [MAX_MARKS]  # candidate marks the sections other than the summary may still name
    left = others_left

    for n, raw in enumerate(lines):
        line = raw.strip()
        if not line:
            continue
        first = line[0]
        if first == "#":
            preamble_end = min(preamble_end, n)
            title = line.lstrip("#").strip()
            step = _STEP_TITLE.match(title)
            if step is not None:
                section, where, left = {}, f"step {step.group(1)}", others_left
                steps.append(TraceStep(int(step.group(1)), step.group(2), section))
            elif _SUMMARY_TITLE.search(title):
                where = "the summary"
                if summary is None:
                    section = summary = {}
                    left = [MAX_MARKS]  # its own allowance, so that read_summary reads it alike
                else:
                    problems.append("more than one summary section; the first one is used")
                    section, left = {}, others_left
            else:
                problems.append(f"unrecognised section {title[:60]!r}")
                section, where, left = {}, f"section {title[:30]!r}", others_left
        elif first in _BULLETS:
            if section is None:
                planned = _PLAN_STEP.match(line[1:].lstrip())
                if planned is not None:
                    plan_numbers.append(int(planned.group(1)))
                    plan.append(planned.group(2).strip().rstrip("."))
            else:
                _read_item(line, section, where, category, problems, left)

    referring = _read_referring("\n".join(lines[:preamble_end]))
    if not plan:
        problems.append("no planning steps")
    elif plan_numbers != list(range(1, len(plan) + 1)):
        problems.append(f"planning steps are numbered {plan_numbers}, expected 1..{len(plan)}")
    action_numbers = [s.index for s in steps]
    if not steps:
        problems.append("no action steps")
    elif plan and action_numbers != plan_numbers:
        problems.append(f"planned steps {plan_numbers} but action steps {action_numbers}")
    if summary is None:
        problems.append("no summary section")
        checked: frozenset[int] = frozenset()
    else:
        misplaced = sorted(k for k, mark in summary.items() if mark not in (CHECK, CROSS))
        if misplaced:
            problems.append(f"summary marks other than ✅/❌ for candidates {misplaced}")
        checked = frozenset(k for k, mark in summary.items() if mark == CHECK)
    return Trace(
        referring,
        plan,
        steps,
        summary,
        checked,
        category[0] if category else None,
        problems,
    )


def _read_referring(preamble: str) -> str | None:
    """What ``re.search(r"needs us to (?:detect|find|locate) (.{1,500}?)\\. To accomplish", preamble,
    re.S)`` reads, in one pass: the regex scans up to 500 characters after each head, 30 ms on a
    preamble that repeats one."""
    end = -1
    for head in _REFERRING_HEAD.finditer(preamble):
        start = head.end()
        if end <= start:  # the first end after this head's first character, as the lazy group takes it
            end = preamble.find(_REFERRING_END, start + 1)
            if end < 0:
                return None
        if end - start <= _MAX_REFERRING:
            return preamble[start:end]
    return None


def read_summary(think: str) -> dict[int, str] | None:
    """The summary marks alone, ``{candidate: mark}`` exactly as :func:`parse_trace` reads them into
    ``Trace.summary`` (None when there is no summary section), without reading the rest: this is
    what a faithfulness reward needs, at a third of the cost."""
    if not isinstance(think, str):
        return None
    pos = think.find("#")
    while pos >= 0:
        line_start = think.rfind("\n", 0, pos) + 1
        line_end = think.find("\n", pos)
        if line_end < 0:
            line_end = len(think)
        if think[line_start:pos].strip():  # a '#' inside a line: not a heading, nor any other on it
            pos = think.find("#", line_end)
            continue
        title = think[pos:line_end].lstrip("#").strip()
        if _STEP_TITLE.match(title) is None and _SUMMARY_TITLE.search(title):
            marks: dict[int, str] = {}
            ignored: list[str] = []
            left = [MAX_MARKS]
            for raw in think[line_end + 1 :].split("\n"):
                line = raw.strip()
                if line[:1] == "#":
                    break
                if line[:1] and line[0] in _BULLETS:
                    _read_item(line, marks, "", ignored, ignored, left)
            return marks
        pos = think.find("#", line_end)
    return None


def _read_item(
    line: str, marks: dict[int, str], where: str, category: list[str], problems: list[str], left: list[int]
) -> None:
    """Record the mark of one bulleted line (bullet first, stripped) if it names candidates, taking
    them from the allowance ``left`` (a one-slot list, see ``MAX_MARKS``)."""
    if left[0] < 0:  # spent: no candidate line is read any more
        return
    simple = _SIMPLE_ITEM.fullmatch(line)
    if simple is not None:  # "- Person 3: <text> → ✅" in one call; reads exactly as the general path
        if not _take(1, left, where, problems):
            return
        word, number, mark = simple.groups()
        if not category:
            category.append(word)
        k = int(number)
        previous = marks.setdefault(k, mark)
        if previous != mark:
            problems.append(f"{where}: candidate {k} is marked both {previous} and {mark}")
        return
    colon = line.find(":", 0, _MAX_HEAD + 2)
    if colon < 0:
        return
    text = line[colon + 1 :].rstrip(" \t.")
    if text[-1:] == _VARIATION_SELECTOR:
        text = text[:-1]
    mark = text[-1:]
    head = line[1:colon].strip()
    if head[-1:] == "]":
        head = _HEAD_BOX.sub("", head)
    word, _, number = head.rpartition(" ")
    if number.isdecimal() and word.isalpha():  # the common "Person 3"
        refs = (word, [(int(number), int(number))]) if int(number) > 0 else None
    else:
        refs = _read_refs(head)
    if refs is None:
        if mark in _MARKS:
            problems.append(f"{where}: cannot read the candidates named by {head[:60]!r}")
        return
    word, spans = refs
    if not _take(sum(last - first + 1 for first, last in spans), left, where, problems):
        return
    if len(spans) == 1:  # one number or one range: nothing repeats
        numbers: Sequence[int] | dict[int, None] = range(spans[0][0], spans[0][1] + 1)
    else:
        numbers = dict.fromkeys(k for first, last in spans for k in range(first, last + 1))  # in order, once each
    if not category and len(numbers) == 1:
        category.append(word)
    if mark not in _MARKS:
        problems.append(f"{where}: no mark at the end of the line for {head[:60]!r}")
        return
    for k in numbers:
        previous = marks.setdefault(k, mark)
        if previous != mark:
            problems.append(f"{where}: candidate {k} is marked both {previous} and {mark}")


def _take(count: int, left: list[int], where: str, problems: list[str]) -> bool:
    """Take ``count`` candidate marks from the allowance ``left``; the first time they do not fit,
    the allowance is spent and a problem says that the rest is not read."""
    if count <= left[0]:
        left[0] -= count
        return True
    if left[0] >= 0:
        problems.append(f"{where}: more than {MAX_MARKS} candidate marks; the candidate lines from here on are not read")
        left[0] = -1
    return False


def _read_refs(head: str) -> tuple[str, list[tuple[int, int]]] | None:
    """``(category word, [(first, last) of each reference])`` named by a line head such as
    ``Persons 1-3, 5``; None if the head does not name candidates counted from 1 (ranges longer
    than ``MAX_RANGE`` included)."""
    m = _HEAD.fullmatch(head)
    if m is None:
        return None
    word, refs = m.group(1), m.group(2)
    spans: list[tuple[int, int]] = []
    for a, b in _REF.findall(refs):
        first = int(a)
        last = int(b) if b else first
        if first == 0 or last < first or last - first >= MAX_RANGE:
            return None
        spans.append((first, last))
    if not spans:
        return None
    rest = _PARENTHESES.sub(" ", _REF.sub(" ", refs))
    names = {word.lower(), word.split()[-1].lower()}
    for w in _WORD.findall(rest):
        lw = w.lower()
        if lw not in ("and", "or") and lw not in names and lw[:-1] not in names and lw[:-2] not in names:
            return None
    if not _GLUE.fullmatch(_WORD.sub(" ", rest)):
        return None
    return word, spans

