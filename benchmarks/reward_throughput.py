"""Reward throughput on SynthRef-like completions, on one CPU core.

    .venv/bin/python benchmarks/reward_throughput.py            # 20,000 completions, best of 3
    .venv/bin/python benchmarks/reward_throughput.py --samples 5000 --repeats 1

Builds completions the way a policy trained on HumanRef-CoT writes them (plan / action / summary
trace from ``rexthinker.contracts.trace``, 3-9 candidates, 1-2 KB each) with a realistic mix of right,
slightly-off, wrong, duplicated, rejecting and truncated answers, then times each reward through
the loader (:func:`rexthinker.rewards.load_reward`, batches of 1,024 as in a 64x16 GRPO step) and
the parsers alone. The process is pinned to one core. Target for the default reward (its default
config, called with every batch key the trainer passes): at least 20,000 samples per second. The
paper has no such measurement; this is ours.

Measured when written (samples/s, one core): default config 40,000 on the 2-core dev box (Python
3.11) and 48,000 on a Xeon core of the GPU host (Python 3.12); with ``faithfulness_weight`` set,
which reads the trace summary, 19,000 and 14,000.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

from rexthinker.contracts.answer import answer_json
from rexthinker.contracts.completion import parse_completion
from rexthinker.contracts.hint import user_text
from rexthinker.contracts.trace import Line, Step, parse_trace, read_summary, render_trace
from rexthinker.rewards import load_reward

ROOT = Path(__file__).resolve().parents[1]
BATCH = 1024

OBSERVATIONS = [
    "wearing a dark jacket and standing near the left edge",
    "a woman in a red dress holding a paper cup in her right hand",
    "partially occluded, only the head and shoulders are visible",
    "sitting on the bench, looking down at a phone",
    "a child in a striped shirt walking towards the camera",
    "a man with a backpack, facing away from the camera",
]


def make_sample(rng: random.Random) -> dict:
    """One SynthRef-like (completion, ground truth, hints, prompt) sample."""
    width, height = rng.choice([(812, 616), (1008, 756), (644, 868)])
    n = rng.randint(3, 9)
    hints = []
    for _ in range(n):
        x0, y0 = rng.randrange(0, width - 60), rng.randrange(0, height - 120)
        hints.append([x0, y0, min(width - 1, x0 + rng.randint(40, 200)), min(height - 1, y0 + rng.randint(100, 400))])
    targets = [] if rng.random() < 0.1 else sorted(rng.sample(range(n), rng.randint(1, min(3, n))))
    referring = "the person wearing a dark jacket"
    steps = [
        Step(f"Find the people {what}", [Line(i, rng.choice(OBSERVATIONS), rng.random() < 0.4) for i in range(n)])
        for what in ("wearing a dark jacket", "standing near the left edge")[: rng.randint(1, 2)]
    ]
    summary = [Line(i, rng.choice(OBSERVATIONS), i in targets) for i in range(n)]
    think = render_trace(referring, "person", steps, summary)

    roll = rng.random()
    answer = [hints[i] for i in targets]
    if roll < 0.15 and answer:  # a few pixels off
        answer = [[v + rng.randint(-6, 6) for v in box] for box in answer]
    elif roll < 0.25:  # the wrong person
        answer = [hints[rng.randrange(n)]]
    elif roll < 0.30 and answer:  # a duplicate
        answer = answer + answer[:1]
    elif roll < 0.35:  # rejected
        answer = []
    completion = f"<think>{think}</think><answer>{answer_json(answer, referring)}</answer>"
    if roll > 0.95:  # cut off by the length limit
        completion = completion[: rng.randint(100, len(completion) - 1)]
    return {
        "completion": completion,
        "solution_boxes": [hints[i] for i in targets],
        "hint_boxes": hints,
        "prompt": user_text(referring, "person", hints),
    }


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    rng = random.Random(args.seed)
    samples = [make_sample(rng) for _ in range(args.samples)]
    completions = [s["completion"] for s in samples]
    sizes = [len(c.encode()) for c in completions]
    print(
        f"{len(samples)} completions, {statistics.mean(sizes) / 1024:.2f} KB on average "
        f"({min(sizes) / 1024:.2f}-{max(sizes) / 1024:.2f}), one core, best of {args.repeats}\n"
    )

    def batched(reward, keys):
        def run():
            for start in range(0, len(samples), BATCH):
                chunk = samples[start : start + BATCH]
                reward([s["completion"] for s in chunk], **{k: [s[k] for s in chunk] for k in keys})

        return run

    default = load_reward(str(ROOT / "rewards/referring.py:compute_score"))
    faithful = load_reward(
        str(ROOT / "rewards/referring.py:compute_score"), faithfulness_weight=0.1, accuracy_weight=0.8
    )
    compat = load_reward(str(ROOT / "rewards/rexthinker_compat.py:compute_score"))
    thinks = [parse_completion(c).think or "" for c in completions]
    cases = [
        ("referring, default config", batched(default, ["solution_boxes", "hint_boxes", "prompt"])),
        ("referring, faithfulness_weight=0.1 (hint_boxes)", batched(faithful, ["solution_boxes", "hint_boxes"])),
        ("referring, faithfulness_weight=0.1 (hint in prompt)", batched(faithful, ["solution_boxes", "prompt"])),
        ("rexthinker_compat", batched(compat, ["solution_boxes"])),
        ("parse_completion", lambda: [parse_completion(c) for c in completions]),
        ("parse_trace (the think block)", lambda: [parse_trace(t) for t in thinks]),
        ("read_summary (the think block)", lambda: [read_summary(t) for t in thinks]),
    ]
    print(f"| {'what':<52} | {'seconds':>8} | {'samples/s':>10} |")
    print(f"|{'-' * 54}|{'-' * 10}|{'-' * 12}|")
    for name, fn in cases:
        seconds = timed(fn, args.repeats)
        print(f"| {name:<52} | {seconds:>8.3f} | {len(samples) / seconds:>10,.0f} |")


if __name__ == "__main__":
    main()
