"""No string makes a parser or a reward raise: 100,000 random and adversarial completions.

10,000 come from hypothesis (arbitrary unicode, sequences of layout fragments, mutations of real
completions) and 90,000 from a seeded loop over the same kinds plus surrogates, long inputs and
truncations. Every string goes through every parser and both shipped rewards, and the results are
checked for shape: components in [0, 1], ``overall`` the weighted sum, the summary reader agreeing
with the full trace reader.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rexthinker.contracts.answer import parse_answer
from rexthinker.contracts.completion import parse_completion
from rexthinker.contracts.hint import parse_hint
from rexthinker.contracts.trace import parse_trace, read_summary
from tests.rewards.helpers import HELMET_TRACE, completion, fenced, person_trace, reward_module

referring = reward_module("rewards/referring.py")
compat = reward_module("rewards/rexthinker_compat.py")

TOTAL = 100_000
HYPOTHESIS_EXAMPLES = {"unicode": 2_500, "fragments": 5_000, "mutations": 2_500}
LOOP = TOTAL - sum(HYPOTHESIS_EXAMPLES.values())

HINTS = [[10, 10, 50, 100], [60, 10, 100, 100], [110, 10, 150, 100]]
WEIGHTS = {"format_weight": 0.1, "accuracy_weight": 0.6, "rejection_weight": 0.1, "faithfulness_weight": 0.2}
VALID = [
    completion(fenced([60, 10, 100, 100]), person_trace({1: "\u274c", 2: "\u2705", 3: "\u274c"})),
    completion("None", person_trace({1: "\u274c", 2: "\u274c"}, steps=[{1: "\u26a0\ufe0f", 2: "\u274c"}, {1: "\u274c"}])),
    f"<think>{HELMET_TRACE}</think><answer>json\n" + '[{"bbox_2d": [578, 359, 825, 580], "label": "x"}]\n</answer>',
    "<think>\n- Person 1-9: no \u2192 \u274c\n- Persons 2, 4 and 5: yes -> \u2705\n</think>\n<answer>\n" + fenced([1, 2, 3, 4], [5, 6, 7, 8]) + "\n</answer>",
]
FRAGMENTS = [
    "<think>", "</think>", "<answer>", "</answer>", "< think >", "</ answer>", "<", ">", "/", "```", "```json\n",
    "json\n", "None", "null", "[]", "[", "]", "{", "}", '"bbox_2d"', ":", ",", ", ", '"label": "x"', "1", "94", "-5",
    "2.5", "1.2.3", "1e999", "NaN", "Infinity", "9" * 400, "true", "\n", "\r\n", " ", "\t", "# ", "## Step 1: ",
    "# Summarize and Re-Check answer\n", "- ", "* ", "Person ", "Persons ", "Helmet ", "Step ", "0", "3", "1-9",
    "5-3", "1-99999999", "1,2,4", " and ", "(left)", "\u2192", "->", " \u2192 \u2705", " \u2192 \u274c",
    " \u2192 \u26a0\ufe0f", "\u26a0", "\ufe0f", "\u2705", "\u274c", "\u0663", "\u00b2", "\ud800", "\x00", "\u2028",
    'Hint: {"person": [[1, 2, 3, 4]]}', '{"person": [[1, 2, 3]]}', "OK, the user needs us to detect ",
    ". To accomplish", '[{"bbox_2d": [1, 2, 3, 4]}]', '{"bbox_2d": [1, 2, 3, 4]}',
]  # fmt: skip

checked_count = {"strings": 0}


def check(text: str) -> None:
    """Run every parser and both rewards on ``text`` and check the shape of what they return."""
    checked_count["strings"] += 1
    parsed = parse_completion(text)
    assert isinstance(parsed.problems, list)
    assert parsed.answer.ok or not parsed.boxes
    answer = parse_answer(text)
    assert answer.ok or (not answer.boxes and answer.problems)
    for think in {text, parsed.think or ""}:
        trace = parse_trace(think)
        assert trace.checked <= set(trace.summary or ())
        assert read_summary(think) == trace.summary
    hint = parse_hint(text)
    assert hint is None or all(len(b) == 4 for b in hint[1])

    batch = [text, text]
    scores = referring.compute_score(batch, [[HINTS[1]], []], hint_boxes=[HINTS, HINTS], **WEIGHTS)
    for i in range(2):
        parts = {k: v[i] for k, v in scores.items()}
        assert all(0.0 <= v <= 1.0 for v in parts.values()), parts
        expected = sum(WEIGHTS[f"{k}_weight"] * v for k, v in parts.items() if k != "overall")
        assert math.isclose(parts["overall"], expected, abs_tol=1e-12)
    assert scores["rejection"][0] + scores["rejection"][1] <= 1.0  # "no box" is right for one of them only
    if hint is not None:  # the hint read back from the text itself
        from_prompt = referring.compute_score([text], [[]], prompt=[text], **WEIGHTS)
        assert 0.0 <= from_prompt["faithfulness"][0] <= 1.0
    for row in compat.compute_score(batch, [fenced(HINTS[1]), "None"]):
        assert set(row) == {"overall", "format", "accuracy"} and all(0.0 <= v <= 1.0 for v in row.values())


SETTINGS = dict(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))


@settings(max_examples=HYPOTHESIS_EXAMPLES["unicode"], **SETTINGS)
@given(st.text(max_size=400))
def test_unicode(text):
    check(text)


@settings(max_examples=HYPOTHESIS_EXAMPLES["fragments"], **SETTINGS)
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), max_size=60).map("".join))
def test_fragments(text):
    check(text)


edit = st.tuples(st.floats(0, 1), st.sampled_from(["delete", "insert", "repeat", "cut"]), st.sampled_from(FRAGMENTS))


@settings(max_examples=HYPOTHESIS_EXAMPLES["mutations"], **SETTINGS)
@given(st.sampled_from(VALID), st.lists(edit, min_size=1, max_size=6))
def test_mutations(text, edits):
    for where, how, fragment in edits:
        text = mutate(text, where, how, fragment)
    check(text)


def mutate(text: str, where: float, how: str, fragment: str) -> str:
    at = int(where * len(text))
    if how == "delete":
        return text[:at] + text[at + 1 + len(fragment) % 7 :]
    if how == "insert":
        return text[:at] + fragment + text[at:]
    if how == "repeat":
        return text[:at] + text[at : at + 40] * 3 + text[at:]
    return text[:at]


def random_string(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.3:
        return "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 60)))
    if kind < 0.75:
        text = rng.choice(VALID)
        for _ in range(rng.randint(1, 8)):
            how = rng.choice(["delete", "insert", "repeat", "cut", "insert"])
            text = mutate(text, rng.random(), how, rng.choice(FRAGMENTS))
        return text
    if kind < 0.95:
        alphabet = rng.choice(["<>/thinkaswer ```json[]{},:0123456789-\n", "\u2192\u2705\u274c\u26a0\ufe0f- Person1,2#\n"])
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
    if kind < 0.998:
        return "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randint(0, 100)))
    big = rng.choice(
        [
            "[" * 50_000,
            "- Person 1-2:" * 20_000,
            "a#" * 50_000,
            "<think><answer>" * 5_000,
            "9" * 100_000,
            "\n# Step 1: x\n- Person 1: y \u2192 \u2705" * 2_000,
        ]
    )
    return completion(big) if rng.random() < 0.5 else big


def test_seeded_loop():
    rng = random.Random(20_260_101)
    for _ in range(LOOP):
        check(random_string(rng))


def test_the_count_adds_up():
    """Runs last in this file: every generated string went through ``check``."""
    if checked_count["strings"] < LOOP:
        pytest.skip("run the whole file to count")
    assert checked_count["strings"] == TOTAL
