"""Trace probe: which parts of a reasoning trace does a checkpoint get right, teacher-forced?

For each HumanRef-CoT sample of a validation set, the gold trace is fed to the model after its
prompt (exactly the SFT features, ``rexthinker.sft.data.build_features``) and the argmax at every
position is compared with the next gold token. A part counts as right when every token that
overlaps it is right:

- ``expression``: the referring expression restated in the first sentence ("detect <it>.");
- ``attributes``: what a step or summary line states of a candidate ("Person 2 [...]: <red shirt, tall> →");
- ``colour``: the shirt colour word of those lines (the region a box names, read);
- ``verdict``: each line's mark (⚠ / ❌ / ✅);
- ``same colour`` / ``other colour``: the mark of a line in a "Find the people in a <colour> shirt"
  step whose shirt is / is not that colour (⚠ / ❌): whether the model compares the colour it read
  with the one asked for, or marks lines regardless of it;
- ``answer``: the whole ``<answer>`` JSON.

It separates what a generation-time F1 mixes: a base that reads colours in its own describe chats
but not inside a trace, an SFT that copies the expression but not the verdicts, and so on.

    python benchmarks/trace_probe.py models/demo-base outputs/demo/sft/final --data outputs/demo/synthref/val/cot/synthref
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

COLOUR_STEP = re.compile(r"# Step \d+: Find the people in an? (\w+) shirt\n((?:- [^\n]*\n?)+)")
COLOUR_LINE = re.compile(r"Person \d+[^:\n]*: (\w+) shirt(?: \(want \w+ shirt\))? → (⚠|❌)")  # trace_wants or not


def colour_marks(text: str, same: bool) -> list[tuple[int, int]]:
    """Spans of the marks of colour-step lines whose shirt is (``same``) or is not the asked colour."""
    spans = []
    for step in COLOUR_STEP.finditer(text):
        for line in COLOUR_LINE.finditer(step[2]):
            if (line[1] == step[1]) == same:
                spans.append((step.start(2) + line.start(2), step.start(2) + line.end(2)))
    return spans


def _group(pattern: re.Pattern):
    return lambda text: [m.span(1) for m in pattern.finditer(text)]


PARTS = {  # part -> the character spans of a target text it covers
    "expression": _group(re.compile(r"detect (.+?)\. To accomplish")),
    "attributes": _group(re.compile(r"Person \d+[^:\n]*: ([^→\n]+) →")),
    "colour": _group(re.compile(r"Person \d+[^:\n]*: (\w+) shirt")),
    "verdict": _group(re.compile(r"→ (⚠|❌|✅)")),
    "same colour": lambda text: colour_marks(text, True),
    "other colour": lambda text: colour_marks(text, False),
    "answer": _group(re.compile(r"<answer>(.*)</answer>", re.S)),
}


def probe(model_path: str, samples) -> dict[str, dict[str, float]]:
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from rexthinker.generation import render_request
    from rexthinker.prompts import target_text
    from rexthinker.sft.data import END_OF_TURN, build_features
    from rexthinker.train.features import collate

    processor = AutoProcessor.from_pretrained(model_path)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_path, dtype=torch.float32).eval()
    right, total = dict.fromkeys(PARTS, 0), dict.fromkeys(PARTS, 0)
    for sample in samples:
        target = target_text(sample, render_request(sample, processor, "train", "system").info) + END_OF_TURN
        features = build_features(sample, processor)
        offsets = processor.tokenizer(target, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        first = features.input_ids.numel() - len(offsets)  # the answer's first token
        batch = collate([features], processor.tokenizer.pad_token_id)
        with torch.no_grad():
            logits = model(**{k: v for k, v in batch.items() if k not in ("labels", "skipped")}).logits[0]
        hit = logits[:-1].argmax(-1) == features.input_ids[1:]  # hit[t]: token t + 1 predicted
        for name, spans in PARTS.items():
            for a, z in spans(target):
                tokens = [first + j - 1 for j, (x, y) in enumerate(offsets) if x < z and y > a]
                total[name] += 1
                right[name] += bool(hit[tokens].all())
    return {name: {"accuracy": right[name] / total[name], "count": total[name]} for name in PARTS if total[name]}


def main() -> None:
    from rexthinker.data.sources import open_samples

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="checkpoint folders")
    parser.add_argument("--data", required=True, help="a HumanRef-CoT prefix (or any data.val entry)")
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--results", type=Path, default=None, help="append one JSON line per model here")
    args = parser.parse_args()
    data = open_samples([args.data])
    samples = [data[i] for i in range(min(args.samples, len(data)))]
    print(f"| model | {' | '.join(PARTS)} |\n|---|{'---|' * len(PARTS)}")
    for path in args.models:
        result = probe(path, samples)
        print(f"| {path} | " + " | ".join(f"{result[p]['accuracy']:.3f} ({result[p]['count']})" if p in result else "–" for p in PARTS) + " |")
        if args.results:
            with args.results.open("a") as f:
                f.write(json.dumps({"model": path, "samples": len(samples), **result}) + "\n")


if __name__ == "__main__":
    main()
