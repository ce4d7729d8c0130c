"""Each text contract's reader reads back exactly what its writer wrote (property tests)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rexthinker.contracts.answer import answer_json, parse_answer, parse_answer_cell
from rexthinker.contracts.completion import parse_completion
from rexthinker.contracts.hint import USER_TEMPLATES, grpo_problem, parse_hint, parse_problem, user_text
from rexthinker.contracts.trace import CHECK, CROSS, WARN, Line, Step, parse_trace, render_trace, summary_marks

coordinate = st.integers(min_value=0, max_value=4000)
box = st.lists(coordinate, min_size=4, max_size=4)
boxes = st.lists(box, max_size=12)
category = st.sampled_from(["person", "car", "helmet", "traffic light"])
# Referring expressions as users write them (no newline: the template is line-based).
referring = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=60).map(str.strip).filter(bool)


@settings(max_examples=200, deadline=None)
@given(category, boxes, referring, st.sampled_from(sorted(USER_TEMPLATES)))
def test_hint_round_trip(cat, hints, ref, template):
    assert parse_hint(user_text(ref, cat, hints, template)) == (cat, [[float(v) for v in b] for b in hints])


@settings(max_examples=200, deadline=None)
@given(category, boxes, referring)
def test_problem_round_trip(cat, hints, ref):
    assert parse_problem(grpo_problem(ref, cat, hints)) == (ref, cat, hints)


@settings(max_examples=200, deadline=None)
@given(boxes, referring)
def test_answer_round_trip(answer_boxes, ref):
    text = answer_json(answer_boxes, ref)
    parsed = parse_answer(text)
    assert parsed.ok and parsed.problems == [] and parsed.rejection == (not answer_boxes)
    assert parsed.boxes == [[float(v) for v in b] for b in answer_boxes] == parse_answer_cell(text)
    assert parsed.labels == [ref] * len(answer_boxes)


@st.composite
def traces(draw):
    n = draw(st.integers(min_value=1, max_value=9))
    hint_boxes = draw(st.lists(box, min_size=n, max_size=n))
    steps = []
    for k in range(draw(st.integers(min_value=1, max_value=3))):
        looked = draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n))
        lines = [Line(i, draw(st.sampled_from(["red shirt", "tall", "holds a flag", "short, no hat"])), draw(st.booleans())) for i in looked]
        steps.append(Step(f"Check rule {k + 1}", lines, draw(st.sampled_from([None, "From left to right: [Person 1]"]))))
    summary = [Line(i, "fits" if hit else "does not fit", hit) for i, hit in enumerate(draw(st.lists(st.booleans(), min_size=n, max_size=n)))]
    return steps, summary, hint_boxes


@settings(max_examples=150, deadline=None)
@given(traces(), category, st.booleans())
def test_trace_round_trip(trace, cat, with_boxes):
    steps, summary, hint_boxes = trace
    think = render_trace("the man in red", cat, steps, summary, hint_boxes if with_boxes else None)
    read = parse_trace(think)
    assert read.problems == []
    assert read.referring == "the man in red" and read.plan == [s.title for s in steps]
    assert [s.marks for s in read.steps] == [{line.index + 1: WARN if line.hit else CROSS for line in s.lines} for s in steps]
    assert read.summary == {line.index + 1: CHECK if line.hit else CROSS for line in summary}
    assert read.checked == {line.index + 1 for line in summary if line.hit}
    assert summary_marks(think) == {line.index: line.hit for line in summary}
    answer = answer_json([hint_boxes[i - 1] for i in sorted(read.checked)], "x")
    completion = parse_completion(f"<think>{think}</think><answer>{answer}</answer>")
    assert completion.strict_layout and completion.problems == [] and completion.think == think
