"""Where a referring model's completions go wrong: each trace checked stage by stage against the
gold trace of the same sample, per domain.

    python benchmarks/trace_errors.py outputs/demo/sft/eval_samples.jsonl --data outputs/demo/synthref/val/cot/synthref

``eval_samples.jsonl`` is what an SFT run's evaluation writes (greedy completions of the validation
samples); ``--data`` is the HumanRef-CoT prefix of those samples, whose rule-written traces are the
gold. For every completion, in the order the trace is written:

- ``restated``: the expression in "needs us to detect <expression>. To accomplish" is the one asked;
- ``plan``: the plan's step titles are the gold's;
- ``steps``: every action step marks every candidate as the gold does (⚠ / ❌);
- ``summary``: the ✅ set of the summary is the gold's;
- ``answer = summary``: the answer lists exactly the boxes of the completion's own ✅ lines;
- ``answer``: the answer lists exactly the gold targets' boxes.

Each column is the fraction of samples with that stage right; ``after restated`` is the summary
column among the samples that restated the expression right. The last column names the stage that
fails first most often. Writes a Markdown table (``--out``) and prints it.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

from rexthinker.contracts.completion import parse_completion
from rexthinker.contracts.trace import CHECK, parse_trace
from rexthinker.data.cot_tsv import CotTsvReader

STAGES = ("restated", "plan", "steps", "summary", "answer = summary", "answer")
_CHECKED_BOX = re.compile(r"\[(\d+), (\d+), (\d+), (\d+)\][^\n]*" + CHECK)  # a malformed box is not read


def checked_boxes(think: str) -> list[tuple[int, ...]]:
    """The boxes stated on the ✅ lines of a trace's summary ("- Person 2 [x0, y0, x1, y1]: ... → ✅")."""
    summary = think.rsplit("# Summarize", 1)[-1]
    return sorted(tuple(int(v) for v in m.groups()) for m in _CHECKED_BOX.finditer(summary))


def judge(completion: str, referring: str, gold_think: str) -> dict[str, bool]:
    """Which stages of ``completion`` are right, against the gold trace (see the module doc)."""
    parsed, gold = parse_completion(completion), parse_trace(gold_think)
    pred = parse_trace(parsed.think or "")
    answer = sorted(tuple(round(v) for v in box) for box in parsed.answer.boxes) if parsed.answer.ok else None
    return {
        "restated": pred.referring == referring,
        "plan": pred.plan == gold.plan,
        "steps": [s.marks for s in pred.steps] == [s.marks for s in gold.steps],
        "summary": pred.summary is not None and pred.checked == gold.checked,
        "answer = summary": answer is not None and answer == checked_boxes(parsed.think or ""),
        "answer": answer is not None and answer == checked_boxes(gold_think),
    }


def table(rows: list[tuple[str, dict[str, bool]]]) -> str:
    by_domain = defaultdict(list)
    for domain, verdict in rows:
        by_domain[domain].append(verdict)
    by_domain["all"] = [v for _, v in rows]
    head = ["domain", "n", *STAGES, "after restated", "first wrong"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for domain in sorted(by_domain, key=lambda d: (d == "all", d)):
        verdicts = by_domain[domain]
        cells = [f"{sum(v[s] for v in verdicts) / len(verdicts):.2f}" for s in STAGES]
        restated = [v for v in verdicts if v["restated"]]
        after = f"{sum(v['summary'] for v in restated) / len(restated):.2f}" if restated else "-"
        first = Counter(next((s for s in STAGES if not v[s]), "none") for v in verdicts).most_common(1)[0]
        lines.append(f"| {domain} | {len(verdicts)} | " + " | ".join(cells) + f" | {after} | {first[0]} ({first[1]}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("samples", type=Path, help="eval_samples.jsonl of an SFT run")
    parser.add_argument("--data", required=True, help="HumanRef-CoT prefix of the same samples (their gold traces)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table there (Markdown)")
    args = parser.parse_args(argv)
    gold = {s.id: s for s in CotTsvReader.from_prefix(args.data)}
    rows = []
    for n, line in enumerate(args.samples.read_text().splitlines(), 1):
        item = json.loads(line)
        if item["id"] not in gold:
            raise SystemExit(f"{args.samples}:{n}: sample {item['id']!r} is not in {args.data}")
        sample = gold[item["id"]]
        rows.append((sample.domain or "unknown", judge(item["completion"], sample.referring, sample.think or "")))
    text = table(rows)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
