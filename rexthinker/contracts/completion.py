"""The completion contract (contracts §1.3): ``<think>…</think><answer>…</answer>``.
:func:`parse_completion` splits it and reads the answer; it never raises, and takes time linear in
the text whatever the text (tests/contracts/test_parsing_time.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rexthinker.contracts.answer import Box, ParsedAnswer, _unreadable, parse_answer


@dataclass(slots=True)
class ParsedCompletion:
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


# One run of whitespace before the name, the slash inside it: "<[ \t\n]*(/?)[ \t\n]*" reads the
# same tags, but splitting a run of spaces between its two stars made "<" + 64k spaces take 30 s.
_TAG = re.compile(r"<[ \t\n]*(?:(/)[ \t\n]*)?(think|answer)[ \t\n]*>")
_STRICT_TAGS = [("", "think"), ("/", "think"), ("", "answer"), ("/", "answer")]
_LAYOUT_PROBLEM = "text or extra tags outside the <think>…</think><answer>…</answer> layout, or a blank think"


def parse_completion(text: str) -> ParsedCompletion:
    """Split ``<think>…</think><answer>…</answer>`` and read the answer.

    The think block runs from the first ``<think>`` to the next ``</think>``; a ``</think>`` with
    no opening tag (a chat template that opened it in the prompt) still ends a think block, as a
    problem. The answer is the first ``<answer>…</answer>`` after the think block. Boxes are only
    ever read from the answer block, never from the reasoning.
    """
    if not isinstance(text, str):
        missing = _unreadable("no <answer> block")
        return ParsedCompletion(None, None, missing, False, [f"completion is a {type(text).__name__}, not a string"])
    # (slash, tag name, start, end) of every tag, e.g. ("/", "think", 812, 820)
    tags = [(m[1] or "", m[2], *m.span()) for m in _TAG.finditer(text)]
    if len(tags) == 4 and [t[:2] for t in tags] == _STRICT_TAGS:  # the usual case, read directly
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
        return ParsedCompletion(think, answer_text, answer, strict, problems)

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
    return ParsedCompletion(think, answer_text, answer, False, problems)


def _blank(text: str) -> bool:
    return not text or text.isspace()

