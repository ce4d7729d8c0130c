"""Shared bits of the reward tests: the reward files as modules, and completion builders."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def reward_module(relative_path: str) -> ModuleType:
    """Import a reward file such as ``rewards/referring.py`` (the files are not a package)."""
    path = ROOT / relative_path
    spec = importlib.util.spec_from_file_location("test_" + path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fenced(*boxes: list[float], label: str = "the target") -> str:
    """The fenced json answer the model writes (contracts §2)."""
    return "```json\n" + json.dumps([{"bbox_2d": list(b), "label": label} for b in boxes]) + "\n```"


def completion(answer: str, think: str = "Person 1 is the target.") -> str:
    return f"<think>{think}</think><answer>{answer}</answer>"


HELMET_TRACE = (
    "OK, the user needs us to detect the fourth helmet from left. To accomplish this task, I need to "
    "break it down into the following steps:\n"
    "- Step 1: Sort the helmets from left to right.\n"
    "- Step 2: Find the fourth helmet from the sorted list.\n\n"
    "# Step 1: Sort the helmets from left to right\n"
    "I see 6 helmets in this image, and their order from left to right is [Helmet 5, Helmet 1, Helmet 3, "
    "Helmet 2, Helmet 4, Helmet 6].\n\n"
    "# Step 2: Find the fourth helmet from the sorted list\n"
    "From the sorted list [Helmet 5, Helmet 1, Helmet 3, Helmet 2, Helmet 4, Helmet 6], the fourth helmet "
    "from the left is Helmet 2.\n\n"
    "# Summarize and Re-Check answer\n"
    "Let's now recheck our answer and put \u2705 for the target helmet and \u274c for others\n"
    "- Helmet 5: It is the first helmet from left \u2192 \u274c\n"
    "- Helmet 1: It is the second helmet from left \u2192 \u274c\n"
    "- Helmet 3: It is the third helmet from left \u2192 \u274c\n"
    "- Helmet 2: It is the fourth helmet from left \u2192 \u2705\n"
    "- Helmet 4: It is the fifth helmet from left \u2192 \u274c\n"
    "- Helmet 6: It is the sixth helmet from left \u2192 \u274c"
)
"""The trace of the Rex-Thinker README's inference example (the answer box there is [578, 359, 825, 580])."""


def person_trace(summary: dict[int, str], steps: list[dict[int, str]] | None = None) -> str:
    """A well-formed person trace with the given per-step and summary marks."""
    steps = steps if steps is not None else [{k: "\u26a0" if m == "\u2705" else "\u274c" for k, m in summary.items()}]
    plan = "\n".join(f"- Step {i}: Check condition {i}." for i in range(1, len(steps) + 1))
    parts = [
        "OK, the user needs us to detect the man in red. To accomplish this task, I need to break it down "
        "into the following steps:\n" + plan
    ]
    for i, marks in enumerate(steps, 1):
        lines = [f"- Person {k}: seen \u2192 {m}" for k, m in marks.items()]
        parts.append(f"# Step {i}: Check condition {i}\n" + "\n".join(lines))
    parts.append(
        "# Summarize and Re-Check answer\nLet's now recheck our answer and put \u2705 for the target person and "
        "\u274c for others\n" + "\n".join(f"- Person {k}: reason \u2192 {m}" for k, m in summary.items())
    )
    return "\n\n".join(parts)
