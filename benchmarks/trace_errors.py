"""Where a referring model's completions go wrong: each trace checked stage by stage against the
gold trace of the same sample, per domain.

    python benchmarks/trace_errors.py outputs/demo/sft/eval_samples.jsonl --data outputs/demo/synthref/val/cot/synthref

``eval_samples.jsonl`` is what an SFT run's evaluation writes (greedy completions of the validation
samples); ``--data`` is the HumanRef-CoT prefix of those samples, whose rule-written traces are the
gold. For every completion, in the order the trace is written:

- ``restated``: the expression in "needs us to detect <expression>. To accomplish" is the one asked;
- ``plan``: the plan's step titles are the gold's;
- ``lists``: every action step names the gold's candidates (whatever their marks): a step that looks
  only at those the step before kept must carry its ⚠ set over;
- ``steps``: every action step marks every candidate as the gold does (⚠ / ❌);
- ``summary``: the ✅ set of the summary is the gold's;
- ``answer = summary``: the answer lists exactly the boxes of the completion's own ✅ lines;
- ``answer``: the answer lists exactly the gold targets' boxes.

Each column is the fraction of samples with that stage right; ``after restated`` is the summary
column among the samples that restated the expression right. The last column names the stage that
fails first most often.

A second table takes the action steps' lines one by one, by the kind of step (shirt colour, hat,
flag, height, holding hands, the tree, an order): how often the completion's observation of that
person ("no hat", "second from the left") is the gold one, how often its mark is, and how often the
mark is right where the observation is: reading and comparing, apart.

A third table takes the summary's lines that restate what each step looks for (SynthRef's
``trace_wants``): among those whose observations all match what is wanted ("blue shirt (want blue
shirt), short (want short)") and those where one does not, how often the line is marked ✅, ❌ or
otherwise. A faithful trace marks the first ✅ and the second ❌ (a "(rule out ...)" matches when the
observation differs). Writes the tables (``--out``, Markdown) and prints them.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

from rexthinker.contracts.completion import parse_completion
from rexthinker.contracts.trace import CHECK, CROSS, parse_trace
from rexthinker.data.cot_tsv import CotTsvReader

STAGES = ("restated", "plan", "lists", "steps", "summary", "answer = summary", "answer")
# The kind of an action step, from words of its title (the first that matches).
KINDS = (("shirt", "shirt"), ("hat", "hat"), ("flag", "flag"), ("tall", "height"), ("short", "height"), ("hands", "hands"),
         ("tree", "tree"), ("from the", "order"), ("most", "order"), ("next to", "next to"), ("left of", "side of"),
         ("right of", "side of"))  # fmt: skip
_STEP_LINE = re.compile(r"- \w+ (\d+)[^:\n]*: ([^\n]*?) → ([\u26a0\u274c])")
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
        "lists": [set(s.marks) for s in pred.steps] == [set(s.marks) for s in gold.steps],
        "steps": [s.marks for s in pred.steps] == [s.marks for s in gold.steps],
        "summary": pred.summary is not None and pred.checked == gold.checked,
        "answer = summary": answer is not None and answer == checked_boxes(parsed.think or ""),
        "answer": answer is not None and answer == checked_boxes(gold_think),
    }


def step_lines(think: str) -> dict[tuple[str, int], tuple[str, str]]:
    """``{(step title, candidate): (observation, mark)}`` of a trace's action steps, the observation
    without its "(want ...)"."""
    out = {}
    for block in think.split("\n# ")[1:]:
        title, _, body = block.partition("\n")
        if not title.startswith("Summar"):
            for m in _STEP_LINE.finditer(body):
                out[(title.strip(), int(m.group(1)))] = (m.group(2).split(" (want ")[0].split(" (rule out ")[0], m.group(3))
    return out


def kind_of(title: str) -> str:
    low = title.lower()
    return next((kind for word, kind in KINDS if word in low), "other")


def line_counts(completion: str, gold_think: str) -> dict[str, list[int]]:
    """Per kind of step: [gold lines the completion wrote too, observation right, mark right, mark right
    where the observation is]. A line of a step the completion did not write is not counted."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    pred = step_lines(parse_completion(completion).think or "")
    for key, (said, mark) in step_lines(gold_think).items():
        if key in pred:
            c = counts[kind_of(key[0])]
            read, marked = pred[key][0] == said, pred[key][1] == mark
            c[0] += 1
            c[1] += read
            c[2] += marked
            c[3] += read and marked
    return counts


def line_table(counts: dict[str, list[int]]) -> str:
    lines = ["| step kind | lines | observation right | mark right | mark right where the observation is |", "|---|---|---|---|---|"]
    for kind, (n, read, marked, both) in sorted(counts.items(), key=lambda kv: -kv[1][0]):
        given = f"{both / read:.2f}" if read else "-"
        lines.append(f"| {kind} | {n} | {read / n:.2f} | {marked / n:.2f} | {given} |")
    return "\n".join(lines)


_SUMMARY_LINE = re.compile(r"^- \w+ \d+[^:\n]*: ([^\n]*) → (\S+)$", re.M)
_WANT = re.compile(r"(?:^|, )([^,()]*?) \((want|rule out) ([^()]*)\)")


def summary_counts(completion: str) -> Counter:
    """``{(all observations match what is wanted, mark): lines}`` over the summary lines of a
    completion that restate what is wanted (a reference's "the reference itself" line is left out)."""
    think = parse_completion(completion).think or ""
    counts: Counter = Counter()
    if "# Summar" not in think:
        return counts
    for text, mark in _SUMMARY_LINE.findall(think.rsplit("# Summar", 1)[1]):
        pairs = _WANT.findall(text)
        if pairs and "reference itself" not in text:
            counts[(all((seen == asked) != (kind == "rule out") for seen, kind, asked in pairs), mark)] += 1
    return counts


def summary_table(counts: Counter) -> str:
    lines = [f"| summary lines | n | {CHECK} | {CROSS} | other |", "|---|---|---|---|---|"]
    for match, name in ((True, "all observations as wanted"), (False, "one or more not")):
        row = {mark: n for (m, mark), n in counts.items() if m == match}
        total = sum(row.values())
        if total:
            other = total - row.get(CHECK, 0) - row.get(CROSS, 0)
            lines.append(f"| {name} | {total} | {row.get(CHECK, 0) / total:.2f} | {row.get(CROSS, 0) / total:.2f} | {other / total:.2f} |")
    return "\n".join(lines)


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
    rows, counts, summaries = [], defaultdict(lambda: [0, 0, 0, 0]), Counter()
    for n, line in enumerate(args.samples.read_text().splitlines(), 1):
        item = json.loads(line)
        if item["id"] not in gold:
            raise SystemExit(f"{args.samples}:{n}: sample {item['id']!r} is not in {args.data}")
        sample = gold[item["id"]]
        rows.append((sample.domain or "unknown", judge(item["completion"], sample.referring, sample.think or "")))
        for kind, c in line_counts(item["completion"], sample.think or "").items():
            counts[kind] = [a + b for a, b in zip(counts[kind], c)]
        summaries += summary_counts(item["completion"])
    text = table(rows) + "\n\n" + line_table(counts) + "\n\n" + summary_table(summaries)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
