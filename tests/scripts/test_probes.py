"""The learning probes (benchmarks/copy_probe.py, benchmarks/region_probe.py) run, score what they
claim to score, and append their result rows; the measured runs themselves are benchmarks."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from tests.scripts.helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import copy_probe  # noqa: E402


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
