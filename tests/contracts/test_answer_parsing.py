"""Table tests of the answer and completion readers (rexthinker.contracts.answer, rexthinker.contracts.completion)."""

from __future__ import annotations

import pytest

from rexthinker.contracts.answer import parse_answer
from rexthinker.contracts.completion import parse_completion
from tests.rewards.helpers import HELMET_TRACE, completion, fenced

BOX = [94, 45, 445, 271]
BOX2 = [1, 2, 30, 40]

# content of an <answer> -> (ok, rejection, boxes)
ANSWERS = {
    "fenced one box": (fenced(BOX), True, False, [BOX]),
    "fenced two boxes": (fenced(BOX, BOX2), True, False, [BOX, BOX2]),
    "bare json list": ('[{"bbox_2d": [94, 45, 445, 271], "label": "x"}]', True, False, [BOX]),
    "single object, no list": ('{"bbox_2d": [94, 45, 445, 271]}', True, False, [BOX]),
    "fence without language": ('```\n[{"bbox_2d": [94, 45, 445, 271]}]\n```', True, False, [BOX]),
    "fence tag in capitals, no newlines": ('```JSON[{"bbox_2d": [94, 45, 445, 271]}]```', True, False, [BOX]),
    "backticks lost, json tag kept": ('json\n[{"bbox_2d": [94, 45, 445, 271]}]\n', True, False, [BOX]),
    "whitespace everywhere": ('\n  ```json\n[ { "bbox_2d" : [ 94 , 45 , 445 , 271 ] } ]\n```  \n', True, False, [BOX]),
    "float and negative coordinates": ('[{"bbox_2d": [-5, 0.5, 10, 10.25]}]', True, False, [[-5, 0.5, 10, 10.25]]),
    "label not a string": ('[{"bbox_2d": [94, 45, 445, 271], "label": 7}]', True, False, [BOX]),
    "None": ("None", True, True, []),
    "none, padded": ("  none \n", True, True, []),
    "null": ("null", True, True, []),
    "empty list": ("[]", True, True, []),
    "fenced empty list": (fenced(), True, True, []),
    "fenced None": ("```json\nNone\n```", True, True, []),
    "empty": ("", False, False, []),
    "empty fence": ("```json\n```", False, False, []),
    "unclosed fence": ('```json\n[{"bbox_2d": [94, 45, 445, 271]}]', False, False, []),
    "text after the fence": (fenced(BOX) + "\nThat is the man.", False, False, []),
    "python quotes": ("[{'bbox_2d': [94, 45, 445, 271]}]", False, False, []),
    "three numbers": ('[{"bbox_2d": [94, 45, 445]}]', False, False, []),
    "a string coordinate": ('[{"bbox_2d": [94, 45, 445, "271"]}]', False, False, []),
    "a boolean coordinate": ('[{"bbox_2d": [true, 45, 445, 271]}]', False, False, []),
    "NaN": ('[{"bbox_2d": [NaN, 45, 445, 271]}]', False, False, []),
    "overflow to infinity": ('[{"bbox_2d": [1e999, 45, 445, 271]}]', False, False, []),
    "int too long to read": ('[{"bbox_2d": [1' + "0" * 5000 + ", 45, 445, 271]}]", False, False, []),
    "int too large for a float": ('[{"bbox_2d": [1' + "0" * 400 + ", 45, 445, 271]}]", False, False, []),
    "other key": ('[{"box": [94, 45, 445, 271]}]', False, False, []),
    "plain box list": ("[[94, 45, 445, 271]]", False, False, []),
    "one bad item spoils the answer": ('[{"bbox_2d": [94, 45, 445, 271]}, 5]', False, False, []),
    "a number": ("42", False, False, []),
    "truncated json": ('[{"bbox_2d": [94, 45, 445, 271]', False, False, []),
    "nested too deeply": ("[" * 100_000 + "]" * 100_000, False, False, []),
    "prose": ("The answer is Person 2.", False, False, []),
}


@pytest.mark.parametrize("content, ok, rejection, boxes", ANSWERS.values(), ids=ANSWERS.keys())
def test_parse_answer(content, ok, rejection, boxes):
    parsed = parse_answer(content)
    assert (parsed.ok, parsed.rejection, parsed.boxes) == (ok, rejection, boxes)
    assert all(isinstance(v, float) for box in parsed.boxes for v in box)
    assert bool(parsed.problems) == (not ok)
    assert len(parsed.labels) == len(parsed.boxes)


CANONICAL = completion(fenced(BOX))

# completion -> (strict layout, think, boxes, answer read); the layout is the tags only, the answer's
# content is judged separately (the format reward needs both)
COMPLETIONS = {
    "canonical": (CANONICAL, True, "Person 1 is the target.", [BOX], True),
    "newlines between blocks": (
        "<think>\nreasoning\n</think>\n\n<answer>\n" + fenced(BOX) + "\n</answer>\n",
        True, "\nreasoning\n", [BOX], True,
    ),
    "spaces inside tags": ("< think >x</ think><answer >" + fenced(BOX) + "< /answer>", True, "x", [BOX], True),
    "text before": ("Sure! " + CANONICAL, False, "Person 1 is the target.", [BOX], True),
    "text after": (CANONICAL + " Hope this helps.", False, "Person 1 is the target.", [BOX], True),
    "no think block": ("<answer>" + fenced(BOX) + "</answer>", False, None, [BOX], True),
    "think opened by the prompt": ("reasoning</think><answer>None</answer>", False, "reasoning", [], True),
    "blank think": ("<think>  \n</think><answer>None</answer>", False, "  \n", [], True),
    "two answers, the first counts": (CANONICAL + "<answer>" + fenced(BOX2) + "</answer>", False, "Person 1 is the target.", [BOX], True),
    "answer not closed": ("<think>x</think><answer>" + fenced(BOX), False, "x", [], False),
    "think not closed": ("<think>x <answer>" + fenced(BOX) + "</answer>", False, None, [BOX], True),
    "answer tag inside the think": ("<think>I write <answer> at the end</think><answer>None</answer>", False, "I write <answer> at the end", [], True),
    "boxes only in the reasoning": (completion("None", think="Person 1 is at [94, 45, 445, 271]."), True, "Person 1 is at [94, 45, 445, 271].", [], True),
    "unreadable answer, layout fine": (completion("Person 1"), True, "Person 1 is the target.", [], False),
    "README helmet output": (
        f"<think>{HELMET_TRACE}</think><answer>json\n"
        '[{"bbox_2d": [578, 359, 825, 580], "label": "the forth helmet from left"}]\n</answer>',
        True, HELMET_TRACE, [[578, 359, 825, 580]], True,
    ),
    "no tags at all": (fenced(BOX), False, None, [], False),
    "empty string": ("", False, None, [], False),
}  # fmt: skip


@pytest.mark.parametrize("text, strict, think, boxes, answer_ok", COMPLETIONS.values(), ids=COMPLETIONS.keys())
def test_parse_completion(text, strict, think, boxes, answer_ok):
    parsed = parse_completion(text)
    assert (parsed.strict_layout, parsed.think, parsed.boxes, parsed.answer.ok) == (strict, think, boxes, answer_ok)
    assert bool(parsed.problems) == (not strict or not answer_ok)


@pytest.mark.parametrize("value", [None, b"<think>x</think><answer>None</answer>", 42, ["<think>"]])
def test_non_strings_are_reported_not_raised(value):
    parsed = parse_completion(value)
    assert not parsed.answer.ok and not parsed.strict_layout and parsed.problems
    assert not parse_answer(value).ok
