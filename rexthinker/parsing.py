"""Reading model output: the ``<think>``/``<answer>`` layout, the json answer, the reasoning trace.

Three readers, one per layer of a completion (contracts §1.3 and §2):

- :func:`parse_completion` splits ``<think>…</think><answer>…</answer>`` and reads the answer;
- :func:`parse_answer` reads the content of an answer (or a ground-truth answer cell): a fenced or
  bare json list of ``{"bbox_2d": [x0, y0, x1, y1], "label": ...}``, with ``None``, ``null`` and
  ``[]`` meaning "no target";
- :func:`parse_trace` reads the plan / action / summary trace inside ``<think>``, and
  :func:`read_summary` its summary alone, faster.

None of them raises on any string. What could not be read is said, in words, in the result's
``problems`` list; an empty list means the text followed the layout. Tolerated variants (spaces or
newlines around and inside tags, a fence written without backticks, ``⚠`` with or without U+FE0F,
``->`` for ``→``) are not problems.

:func:`parse_hint` reads the box hint back out of a prompt, for rewards that are given the prompt
but not the hint boxes.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

Box = list[float]

# The marks of contracts §1.3.
WARN = "\u26a0"  # ⚠ meets the sub-goal, or is the reference entity (action steps)
CROSS = "\u274c"  # ❌ does not
CHECK = "\u2705"  # ✅ a target (summary)
_VARIATION_SELECTOR = "\ufe0f"  # may follow ⚠
_MARKS = frozenset((WARN, CROSS, CHECK))

# A range such as "Person 1-100000000" is not expanded past this many candidates.
MAX_RANGE = 1000


# ----------------------------------------------------------------------------------------------
# The answer
# ----------------------------------------------------------------------------------------------


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
        box = _read_box(item["bbox_2d"])
        if box is None:
            return _unreadable(f"answer item {k}: bbox_2d is not four finite numbers")
        boxes.append(box)
        label = item.get("label")
        labels.append(label if isinstance(label, str) else None)
    return ParsedAnswer(boxes, labels, not boxes, True)


def _read_box(value: object) -> Box | None:
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


# ----------------------------------------------------------------------------------------------
# The completion
# ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Completion:
    """A completion split into its blocks.

    ``think`` and ``answer_text`` are the raw block contents (None when the block is missing or
    not closed). ``strict_layout`` is True when the text is exactly one non-blank think block
    followed by one answer block, with nothing but whitespace around or between them.
    ``problems`` holds the layout's problems followed by the answer's.
    """

    think: str | None
    answer_text: str | None
    answer: ParsedAnswer
    strict_layout: bool
    problems: list[str]

    @property
    def boxes(self) -> list[Box]:
        return self.answer.boxes


_TAG = re.compile(r"<[ \t\n]*(/?)[ \t\n]*(think|answer)[ \t\n]*>")
_STRICT_TAGS = [("", "think"), ("/", "think"), ("", "answer"), ("/", "answer")]
_LAYOUT_PROBLEM = "text or extra tags outside the <think>…</think><answer>…</answer> layout, or a blank think"


def parse_completion(text: str) -> Completion:
    """Split ``<think>…</think><answer>…</answer>`` and read the answer.

    The think block runs from the first ``<think>`` to the next ``</think>``; a ``</think>`` with
    no opening tag (a chat template that opened it in the prompt) still ends a think block, as a
    problem. The answer is the first ``<answer>…</answer>`` after the think block. Boxes are only
    ever read from the answer block, never from the reasoning.
    """
    if not isinstance(text, str):
        missing = _unreadable("no <answer> block")
        return Completion(None, None, missing, False, [f"completion is a {type(text).__name__}, not a string"])
    # (slash, tag name, start, end) of every tag, e.g. ("/", "think", 812, 820)
    tags = [(*m.groups(), *m.span()) for m in _TAG.finditer(text)]
    if [t[:2] for t in tags] == _STRICT_TAGS:  # the usual case, read directly
        think = text[tags[0][3] : tags[1][2]]
        answer_text = text[tags[2][3] : tags[3][2]]
        answer = parse_answer(answer_text)
        strict = (
            _blank(text[: tags[0][2]])
            and _blank(text[tags[1][3] : tags[2][2]])
            and _blank(text[tags[3][3] :])
            and not _blank(think)
        )
        problems = [] if strict else [_LAYOUT_PROBLEM]
        problems.extend(answer.problems)
        return Completion(think, answer_text, answer, strict, problems)

    problems = []
    think = None
    think_end = 0
    opening = next((t for t in tags if t[:2] == ("", "think")), None)
    closing = next((t for t in tags if t[:2] == ("/", "think") and (opening is None or t[2] >= opening[3])), None)
    if closing is None:
        problems.append("no </think>" if opening else "no <think> block")
    else:
        if opening is None:
            problems.append("</think> without an opening <think>")
        think = text[opening[3] if opening else 0 : closing[2]]
        think_end = closing[3]

    answer_text = None
    opening = next((t for t in tags if t[:2] == ("", "answer") and t[2] >= think_end), None)
    if opening is None:
        answer = _unreadable("no <answer> block")
    else:
        closing = next((t for t in tags if t[:2] == ("/", "answer") and t[2] >= opening[3]), None)
        if closing is None:
            answer = _unreadable("<answer> is not closed")
        else:
            answer_text = text[opening[3] : closing[2]]
            answer = parse_answer(answer_text)
    if think is not None and answer_text is not None:
        problems.append(_LAYOUT_PROBLEM)
    problems.extend(answer.problems)
    return Completion(think, answer_text, answer, False, problems)


def _blank(text: str) -> bool:
    return not text or text.isspace()


# ----------------------------------------------------------------------------------------------
# The trace
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
_REFERRING = re.compile(r"needs us to (?:detect|find|locate) (.{1,500}?)\. To accomplish", re.S)
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
_HEAD_BOX = re.compile(r"[ \t]*\[[\d \t,.\-]*\]$")


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
                section, where = {}, f"step {step.group(1)}"
                steps.append(TraceStep(int(step.group(1)), step.group(2), section))
            elif _SUMMARY_TITLE.search(title):
                where = "the summary"
                if summary is None:
                    section = summary = {}
                else:
                    problems.append("more than one summary section; the first one is used")
                    section = {}
            else:
                problems.append(f"unrecognised section {title[:60]!r}")
                section, where = {}, f"section {title[:30]!r}"
        elif first in _BULLETS:
            if section is None:
                planned = _PLAN_STEP.match(line[1:].lstrip())
                if planned is not None:
                    plan_numbers.append(int(planned.group(1)))
                    plan.append(planned.group(2).strip().rstrip("."))
            else:
                _read_item(line, section, where, category, problems)

    preamble = "\n".join(lines[:preamble_end])
    referring_match = _REFERRING.search(preamble)
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
        referring_match.group(1) if referring_match else None,
        plan,
        steps,
        summary,
        checked,
        category[0] if category else None,
        problems,
    )


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
            for raw in think[line_end + 1 :].split("\n"):
                line = raw.strip()
                if line[:1] == "#":
                    break
                if line[:1] and line[0] in _BULLETS:
                    _read_item(line, marks, "", ignored, ignored)
            return marks
        pos = think.find("#", line_end)
    return None


def _read_item(line: str, marks: dict[int, str], where: str, category: list[str], problems: list[str]) -> None:
    """Record the mark of one bulleted line (bullet first, stripped) if it names candidates."""
    simple = _SIMPLE_ITEM.fullmatch(line)
    if simple is not None:  # "- Person 3: <text> → ✅" in one call; reads exactly as the general path
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
    head = _HEAD_BOX.sub("", line[1:colon].strip())
    word, _, number = head.rpartition(" ")
    if number.isdecimal() and word.isalpha():  # the common "Person 3"
        refs = (word, [int(number)]) if int(number) > 0 else None
    else:
        refs = _read_refs(head)
    if refs is None:
        if mark in _MARKS:
            problems.append(f"{where}: cannot read the candidates named by {head[:60]!r}")
        return
    if not category and len(refs[1]) == 1:
        category.append(refs[0])
    if mark not in _MARKS:
        problems.append(f"{where}: no mark at the end of the line for {head[:60]!r}")
        return
    for k in refs[1]:
        previous = marks.setdefault(k, mark)
        if previous != mark:
            problems.append(f"{where}: candidate {k} is marked both {previous} and {mark}")


def _read_refs(head: str) -> tuple[str, list[int]] | None:
    """``(category word, [candidates])`` named by a line head such as ``Persons 1-3``; None if the
    head does not name candidates counted from 1 (ranges longer than ``MAX_RANGE`` included)."""
    m = _HEAD.fullmatch(head)
    if m is None:
        return None
    word, refs = m.group(1), m.group(2)
    numbers: list[int] = []
    for a, b in _REF.findall(refs):
        first = int(a)
        last = int(b) if b else first
        if first == 0 or last < first or last - first >= MAX_RANGE:
            return None
        numbers.extend(range(first, last + 1))
    if not numbers:
        return None
    rest = _PARENTHESES.sub(" ", _REF.sub(" ", refs))
    names = {word.lower(), word.split()[-1].lower()}
    for w in _WORD.findall(rest):
        lw = w.lower()
        if lw not in ("and", "or") and lw not in names and lw[:-1] not in names and lw[:-2] not in names:
            return None
    if not _GLUE.fullmatch(_WORD.sub(" ", rest)):
        return None
    return word, list(dict.fromkeys(numbers))


# ----------------------------------------------------------------------------------------------
# The hint
# ----------------------------------------------------------------------------------------------

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
    boxes = [_read_box(b) for b in data]
    if any(b is None for b in boxes):
        return None
    return m.group(1), boxes
