"""The learning probes (benchmarks/copy_probe.py, benchmarks/region_probe.py, benchmarks/trace_probe.py, benchmarks/trace_errors.py) run, score what they
claim to score, and append their result rows; the measured runs themselves are benchmarks."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from collections import Counter

import pytest

from tests.scripts.helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import copy_probe  # noqa: E402
import trace_errors  # noqa: E402
import trace_probe  # noqa: E402


@pytest.mark.parametrize("layout", ["query", "labelled", "enumerate", "summary", "summary-all"])
def test_copy_probe_samples_score_the_right_spans(layout):
    vocab = copy_probe.Vocab("digits")
    ids, loss, spans = copy_probe.make_sample(random.Random(3), vocab, layout, 4, 2)
    words = [vocab.words[i] for i in ids]
    hints = words[: words.index("]]") + 1]
    boxes = [hints[a:b] for a, b in zip(
        [i for i, w in enumerate(hints) if w == "["], [i + 1 for i, w in enumerate(hints) if w == "]"])]  # fmt: skip
    for a, b in spans["restate"] + spans["summary"]:
        assert words[a:b] in boxes and all(loss[a:b])  # a scored box is a copy of a hint, and trained on
    assert spans["answer"] and all(all(loss[a:b]) for a, b in spans["answer"])
    assert bool(spans["restate"]) == (layout in ("enumerate", "summary", "summary-all"))
    if layout == "summary-all":
        assert len(spans["summary"]) == 4  # every summary line states its box


@pytest.mark.parametrize("script, args, key", [
    ("copy_probe.py", ["--layout", "summary-all", "--width", "64", "--hints", "2-3"], "exact_answer"),
    ("region_probe.py", ["--cue", "mark", "--persons", "2-3"], "colour_acc"),
])  # fmt: skip
def test_probe_runs_and_appends_its_row(tmp_path, script, args, key):
    results = tmp_path / "rows.jsonl"
    cmd = [sys.executable, f"benchmarks/{script}", *args, "--seconds", "2", "--eval-every", "2", "--threads", "1",
           "--results", str(results), "--note", "smoke"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(results.read_text())
    assert row["note"] == "smoke" and row["step"] >= 1 and 0.0 <= row[key] <= 1.0


def test_plot_reads_result_rows_and_saved_output(tmp_path):
    import plot_probes

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"note": "a", "step": 2, "exact_answer": 0.5,
                                "history": [{"step": 1, "exact_answer": 0.0}, {"step": 2, "exact_answer": 0.5}]}) + "\n")  # fmt: skip
    saved = tmp_path / "b.log"
    saved.write_text('{"step": 1, "exact_answer": 0.1}\nnoise\n{"note": "b", "step": 2, "exact_answer": 0.2}\n')
    runs = plot_probes.read_runs([rows, saved])
    assert [r["note"] for r in runs] == ["a", "b"]
    assert [h["exact_answer"] for h in runs[1]["history"]] == [0.1, 0.2]
    out = plot_probes.plot(runs, ["exact_answer"], tmp_path / "curves.png", "t")
    assert out.stat().st_size > 1000


def test_trace_probe_splits_colour_verdicts_by_the_asked_colour():
    from rexthinker.data.synthref import generate, level_config

    samples = [s for s in generate(60, seed=5, config=level_config("demo-colour")) if "shirt\n- Person" in s.think]
    assert samples
    for sample in samples:
        same, other = (trace_probe.colour_marks(sample.think, flag) for flag in (True, False))
        assert all(sample.think[a:z] == "⚠" for a, z in same) and all(sample.think[a:z] == "❌" for a, z in other)
        steps = trace_probe.COLOUR_STEP.findall(sample.think)
        lines = [(asked, shirt) for asked, body in steps for shirt, _ in trace_probe.COLOUR_LINE.findall(body)]
        assert len(same) == sum(a == b for a, b in lines) and len(other) == sum(a != b for a, b in lines)
    assert any(trace_probe.colour_marks(s.think, True) for s in samples)
    assert any(trace_probe.colour_marks(s.think, False) for s in samples)


def test_copy_probe_compare_layout_trains_only_the_marks():
    vocab = copy_probe.Vocab("digits", copy_probe.COLOURS)
    rng, seen = random.Random(4), set()
    for _ in range(40):
        ids, loss, spans = copy_probe.make_sample(rng, vocab, "compare", rng.randint(2, 4), 1)
        words = [vocab.words[i] for i in ids]
        asked = words[words.index("Find") + 1]
        assert not spans["answer"] and not spans["restate"]
        for kind, mark in (("same", "yes"), ("other", "no")):
            for a, b in spans[kind]:
                assert words[a:b] == [mark] and loss[a] == 1 and (words[a - 2] == asked) == (kind == "same")
                seen.add(kind)
        marks = [i for i, w in enumerate(words) if w in ("yes", "no")]
        assert len(marks) == len(spans["same"]) + len(spans["other"])
        assert sum(loss) == len(marks) + len(marks) + 3 + 1  # marks, their newlines, "Find <colour> \n", </s>
    assert seen == {"same", "other"}
    assert copy_probe.Vocab("digits").words == vocab.words[: len(copy_probe.Vocab("digits").words)]


def test_copy_probe_writes_its_words_as_trace_text_for_a_checkpoint():
    """``--model``: the probe's words are the trace's text in that checkpoint's tokenizer, and the
    scored marks are its ⚠ / ❌ tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(REPO / "models" / "demo-base")
    vocab = copy_probe.TextVocab("digits", tokenizer, copy_probe.COLOURS)
    ids, loss, spans = copy_probe.make_sample(random.Random(5), vocab, "compare-local", 3, 1)
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_start|>assistant\n") and text.endswith("<|im_end|>")
    lines = [line for line in text.split("\n") if line.startswith("- Person")]
    assert len(lines) == 3
    for line in lines:
        found = re.fullmatch(r"- Person \d \[\d+,\d+,\d+,\d+\]: (\w+) shirt \(want (\w+) shirt →( ⚠| ❌)", line)
        assert found, line
    marks = [tokenizer.decode(ids[a:b]) for kind in ("same", "other") for a, b in spans[kind]]
    assert sorted(marks) == sorted(" ⚠" if m[1] == m[2] else " ❌" for m in (re.search(r"(\w+) shirt \(want (\w+)", x) for x in lines))
    assert all(loss[a] for kind in ("same", "other") for a, _ in spans[kind])


def test_trace_errors_finds_the_first_stage_a_completion_gets_wrong(tmp_path):
    """The gold trace with its own answer is right at every stage; a completion that restates another
    expression, flips one step mark, or answers another box than its ✅ line is wrong from exactly
    that stage, and the table counts it there."""
    from rexthinker.contracts.answer import answer_json
    from rexthinker.data import synthref

    config = synthref.level_config("demo", trace_wants=True)
    sample = next(s for s in (synthref.generate_one(i, 0, "val", config) for i in range(40)) if len(trace_errors.checked_boxes(s.think)) == 1)
    right = trace_errors.checked_boxes(sample.think)
    gold = f"<think>{sample.think}</think><answer>{answer_json([list(b) for b in right], 'x')}</answer>"
    assert all(trace_errors.judge(gold, sample.referring, sample.think).values())
    restated = gold.replace(f"detect {sample.referring}.", "detect the tall person.")
    assert trace_errors.judge(restated, sample.referring, sample.think) == {**dict.fromkeys(trace_errors.STAGES, True), "restated": False}
    flipped = gold.replace("→ ⚠", "→ ❌", 1)
    verdict = trace_errors.judge(flipped, sample.referring, sample.think)
    assert not verdict["steps"] and verdict["lists"] and verdict["summary"] and verdict["restated"]
    dropped = gold.replace(next(line for line in sample.think.split("\n") if line.endswith("→ ⚠")) + "\n", "", 1)
    assert not trace_errors.judge(dropped, sample.referring, sample.think)["lists"]
    other = [b for b in trace_errors.checked_boxes(sample.think.replace("❌", "✅")) if b not in right][0]
    astray = gold.rsplit("<answer>", 1)[0] + f"<answer>{answer_json([list(other)], 'x')}</answer>"
    verdict = trace_errors.judge(astray, sample.referring, sample.think)
    assert verdict["summary"] and not verdict["answer = summary"] and not verdict["answer"]
    at = gold.rfind(", ".join(map(str, right[0])), 0, gold.index("</think>"))  # the ✅ line's box, malformed: read as none, no crash
    broken = gold[:at] + "12, , 40" + gold[at + len(", ".join(map(str, right[0]))) :]
    assert not trace_errors.judge(broken, sample.referring, sample.think)["answer = summary"]
    text = trace_errors.table([(sample.domain, trace_errors.judge(t, sample.referring, sample.think)) for t in (gold, restated, astray)])
    assert "| all | 3 | 0.67 | 1.00 | 1.00 | 1.00 | 1.00 | 0.67 | 0.67 | 1.00 | none (1) |" in text
    # the summary's marks against its own observations: the gold is faithful; a flipped mark is counted
    faithful = trace_errors.summary_counts(gold)
    assert faithful and all(mark == ("✅" if match else "❌") for match, mark in faithful)
    last = gold.rindex("→ ✅")
    unfaithful = trace_errors.summary_counts(gold[:last] + "→ ❌" + gold[last + 3 :])
    assert unfaithful[(True, "❌")] == faithful[(True, "❌")] + 1 and unfaithful[(True, "✅")] == faithful[(True, "✅")] - 1
    assert "| all observations as wanted | 4 | 0.75 | 0.25 | 0.00 |" in trace_errors.summary_table(Counter({(True, "✅"): 3, (True, "❌"): 1}))


def test_trace_errors_scores_reading_and_comparing_apart():
    """Per kind of step: a line whose observation is wrong but whose mark follows the gold one counts
    as misread and rightly marked; a line with the right observation and the wrong mark counts as
    read and misjudged; lines of steps the completion did not write are not counted."""
    from rexthinker.data import synthref

    config = synthref.level_config("demo", trace_wants=True)
    sample = next(s for s in (synthref.generate_one(i, 0, "val", config) for i in range(60)) if ": Check who has no hat\n" in s.think)
    hat_lines = sample.think.split(": Check who has no hat\n", 1)[1].split("\n\n")[0].split("\n")
    gold = f"<think>{sample.think}</think><answer>[]</answer>"
    assert {k: c[0] for k, c in trace_errors.line_counts(gold, sample.think).items()}["hat"] == len(hat_lines)
    assert all(c[0] == c[1] == c[2] == c[3] for c in trace_errors.line_counts(gold, sample.think).values())
    said = "no hat" if ": no hat (" in hat_lines[0] else "wears a hat"
    misread = gold.replace(hat_lines[0], hat_lines[0].replace(f": {said} (", ": wears a hat (" if said == "no hat" else ": no hat ("), 1)
    n, read, marked, both = trace_errors.line_counts(misread, sample.think)["hat"]
    assert (n - read, n - marked, both) == (1, 0, read)
    misjudged = gold.replace(hat_lines[0], hat_lines[0][:-1] + ("❌" if hat_lines[0].endswith("⚠") else "⚠"), 1)
    n, read, marked, both = trace_errors.line_counts(misjudged, sample.think)["hat"]
    assert (n - read, n - marked, read - both) == (0, 1, 1)
    retitled = gold.replace(": Check who has no hat\n", ": Check who has a hat\n")
    assert "hat" not in trace_errors.line_counts(retitled, sample.think)
    assert "| hat | 3 |" in trace_errors.line_table({"hat": [3, 2, 2, 2]})
