"""Table tests of the trace reader (rexthinker.contracts.trace.parse_trace / read_summary)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rexthinker.contracts import trace as parsing
from rexthinker.contracts.trace import CHECK, CROSS, WARN, parse_trace, read_summary
from tests.rewards.helpers import HELMET_TRACE, person_trace

OK, NO, W = CHECK, CROSS, WARN
HEAD = (
    "OK, the user needs us to detect the man in red. To accomplish this task, I need to break it down into "
    "the following steps:\n- Step 1: Find the men.\n\n# Step 1: Find the men\n- Person 1: a man \u2192 \u26a0\n\n"
    "# Summarize and Re-Check answer\nLet's now recheck our answer and put \u2705 for the target person and "
    "\u274c for others\n"
)


def with_summary(*lines: str) -> str:
    return HEAD + "\n".join(lines)


# trace -> (summary, checked, expected problem substrings; () means no problem at all)
SUMMARIES = {
    "one per line": (with_summary("- Person 1: a man \u2192 \u2705", "- Person 2: a woman \u2192 \u274c"), {1: OK, 2: NO}, {1}, ()),
    "range": (with_summary("- Person 1-3: not him \u2192 \u274c", "- Person 4: him \u2192 \u2705"), {1: NO, 2: NO, 3: NO, 4: OK}, {4}, ()),
    "range with an en dash": (with_summary("- Person 1\u20132: not him \u2192 \u274c"), {1: NO, 2: NO}, set(), ()),
    "list": (with_summary("- Person 1,2,4: them \u2192 \u2705", "- Person 3: no \u2192 \u274c"), {1: OK, 2: OK, 4: OK, 3: NO}, {1, 2, 4}, ()),
    "list with and, plural": (with_summary("- Persons 3 and 5: both \u2192 \u2705"), {3: OK, 5: OK}, {3, 5}, ()),
    "repeated category": (with_summary("- Person 1, Person 3: both \u2192 \u2705"), {1: OK, 3: OK}, {1, 3}, ()),
    "range and list mixed": (with_summary("- Person 1-2, 5: all \u2192 \u274c"), {1: NO, 2: NO, 5: NO}, set(), ()),
    "parenthesis in the head": (with_summary("- Person 2 (the man in red): him \u2192 \u2705"), {2: OK}, {2}, ()),
    "ascii arrow, trailing dot": (with_summary("- Person 2: him -> \u2705."), {2: OK}, {2}, ()),
    "no arrow": (with_summary("- Person 2: him \u2705"), {2: OK}, {2}, ()),
    "star bullets, indented": (with_summary("  * Person 2: him \u2192 \u2705"), {2: OK}, {2}, ()),
    "CRLF line ends": (with_summary("- Person 1: no \u2192 \u274c\r", "- Person 2: him \u2192 \u2705\r").replace("\n", "\r\n"), {1: NO, 2: OK}, {2}, ()),
    "multi-word category": (with_summary("- Traffic light 3: red \u2192 \u2705"), {3: OK}, {3}, ()),
    "box after the name": (
        with_summary("- Person 1 [12, 40, 60, 200]: no \u2192 \u274c", "- Person 2 [70,41,99,201]: him \u2192 \u2705"),
        {1: NO, 2: OK}, {2}, (),
    ),
    "box after a range": (with_summary("- Person 1-2 [3, 4, 5, 6]: no \u2192 \u274c"), {1: NO, 2: NO}, set(), ()),
    "prose bullets are skipped": (with_summary("- Note: nobody else is close", "- Person 2: him \u2192 \u2705"), {2: OK}, {2}, ()),
    "empty summary": (with_summary(), {}, set(), ()),
    "conflicting marks, first wins": (
        with_summary("- Person 1: him \u2192 \u2705", "- Person 1: not him \u2192 \u274c"), {1: OK}, {1}, ("marked both",),
    ),
    "line without a mark": (with_summary("- Person 1: him", "- Person 2: no \u2192 \u274c"), {2: NO}, set(), ("no mark",)),
    "person 0": (with_summary("- Person 0: him \u2192 \u2705"), {}, set(), ("cannot read",)),
    "reversed range": (with_summary("- Person 5-3: them \u2192 \u2705"), {}, set(), ("cannot read",)),
    "range too long to expand": (with_summary("- Person 1-99999999: all \u2192 \u274c"), {}, set(), ("cannot read",)),
    "head that is a sentence": (with_summary("- Person 1 is on the left: yes \u2192 \u2705"), {}, set(), ("cannot read",)),
    "warning mark in the summary": (with_summary("- Person 1: him \u2192 \u26a0\ufe0f"), {1: W}, set(), ("other than",)),
    "two summaries, first wins": (
        with_summary("- Person 1: him \u2192 \u2705") + "\n# Summarize again\n- Person 2: him \u2192 \u2705",
        {1: OK}, {1}, ("more than one summary",),
    ),
    "no summary": (HEAD.split("# Summarize")[0], None, set(), ("no summary",)),
}  # fmt: skip


@pytest.mark.parametrize("think, summary, checked, problems", SUMMARIES.values(), ids=SUMMARIES.keys())
def test_summary(think, summary, checked, problems):
    trace = parse_trace(think)
    assert trace.summary == summary
    assert trace.checked == checked
    if problems:
        assert all(any(p in found for found in trace.problems) for p in problems), trace.problems
    else:
        assert trace.problems == []
    assert read_summary(think) == trace.summary


def test_readme_helmet_trace():
    trace = parse_trace(HELMET_TRACE)
    assert trace.referring == "the fourth helmet from left"
    assert trace.plan == ["Sort the helmets from left to right", "Find the fourth helmet from the sorted list"]
    assert [(s.index, s.title, s.marks) for s in trace.steps] == [
        (1, "Sort the helmets from left to right", {}),
        (2, "Find the fourth helmet from the sorted list", {}),
    ]
    assert trace.summary == {5: NO, 1: NO, 3: NO, 2: OK, 4: NO, 6: NO}
    assert trace.checked == {2}
    assert trace.category == "Helmet"
    assert trace.problems == []


def test_action_steps_and_warning_variants():
    think = person_trace(
        {1: NO, 2: OK, 3: NO},
        steps=[{1: W + "\ufe0f", 2: W, 3: NO}, {1: NO, 2: W}],
    )
    trace = parse_trace(think)
    assert [s.marks for s in trace.steps] == [{1: W, 2: W, 3: NO}, {1: NO, 2: W}]
    assert trace.plan == ["Check condition 1", "Check condition 2"]
    assert trace.checked == {2}
    assert trace.problems == []


# whole trace -> expected problem substrings, for structure problems outside the summary
STRUCTURE = {
    "no plan": (person_trace({1: OK}).split("\n\n", 1)[1], ["no planning steps"]),
    "plan numbered 1, 3": (person_trace({1: OK}).replace("- Step 1:", "- Step 3:"), ["numbered [3]", "planned steps [3]"]),
    "step missing from the actions": (
        person_trace({1: OK}, steps=[{1: W}, {1: W}]).replace("# Step 2", "# Step 3"), ["planned steps [1, 2] but action steps [1, 3]"],
    ),
    "no action steps": (HEAD.split("# Step 1")[0] + "# Summarize\n- Person 1: him \u2192 \u2705", ["no action steps"]),
    "unknown heading": (person_trace({1: OK}) + "\n# Appendix\n- Person 1: x \u2192 \u274c", ["unrecognised section"]),
    "empty": ("  \n ", ["empty trace"]),
    "deeper headings still count": (person_trace({1: OK}).replace("# ", "### "), []),
}  # fmt: skip


@pytest.mark.parametrize("think, problems", STRUCTURE.values(), ids=STRUCTURE.keys())
def test_structure_problems(think, problems):
    found = parse_trace(think).problems
    assert all(any(p in f for f in found) for p in problems), found
    if not problems:
        assert found == []


def test_unrecognised_section_does_not_leak_marks():
    think = person_trace({1: OK}) + "\n# Appendix\n- Person 1: x \u2192 \u274c"
    assert parse_trace(think).summary == {1: OK}


@pytest.mark.parametrize("value", [None, 3, b"# Summarize"])
def test_non_strings(value):
    trace = parse_trace(value)
    assert trace.summary is None and trace.problems
    assert read_summary(value) is None


LINE_PARTS = [
    "-", "*", "\u2022", " ", "\t", "Person", "Persons", "Helmet", "person\u00b2", "Traffic light", "3", "03", "0",
    "12", "1-3", "\u0663", ":", " x ", "\u2192", ".", "\u2705", "\u274c", "\u26a0", "\ufe0f", "->", "(a)", "and", ",",
    " [12, 40, 60, 200]", "[3]", "[", "]",
]  # fmt: skip


@settings(max_examples=1500, deadline=None, derandomize=True, database=None)
@given(st.lists(st.lists(st.sampled_from(LINE_PARTS), min_size=1, max_size=12).map("".join), max_size=4))
def test_the_fast_line_reader_reads_like_the_general_one(lines):
    """``_read_item`` reads common lines with one regex; with it disabled the results must not change."""
    lines = [line.strip() for line in lines if line.strip()[:1] in ("-", "*", "\u2022")]
    fast, general = ({}, [], [], [parsing.MAX_MARKS]), ({}, [], [], [parsing.MAX_MARKS])
    for line in lines:
        parsing._read_item(line, fast[0], "here", fast[1], fast[2], fast[3])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parsing, "_SIMPLE_ITEM", re.compile(r"(?!)"))
        for line in lines:
            parsing._read_item(line, general[0], "here", general[1], general[2], general[3])
    assert fast == general
