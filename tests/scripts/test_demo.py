"""The demo's terminal: stage headers, progress bars and tables there; everything else in the log.
And the summary tables built from the stages' evaluation files."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from tests.scripts.helpers import REPO

sys.path.insert(0, str(REPO / "scripts"))
import demo  # noqa: E402


def test_first_stages_keep_the_terminal_clean_and_log_the_rest(tmp_path, tiny_model_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "scripts/demo.py", "--model", "tiny", "--stages", "data,show", "--train", "6", "--val", "2",
           "--test", "4", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    term = proc.stdout + proc.stderr
    for header in ("=== 1. model", "=== 2. data", "=== 3. show", "=== summary"):
        assert header in term
    assert "WARNING" not in term and "synthref:" not in term  # library and child output stay out
    log = (out / "demo.log").read_text()
    assert "$ python -m data_tools synthref" in log and "synthref:" in log  # the data tool's own output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["baselines"] is None and summary["sft"] is None and summary["grpo"] is None
    assert [s["stage"] for s in summary["stages"]] == ["model", "data", "prompt"]


def test_the_demo_starts_from_the_shipped_base_at_the_demo_level(tmp_path):
    from rexthinker.data.humanref import read_humanref
    from rexthinker.models import base

    out = tmp_path / "demo"
    cmd = [sys.executable, "scripts/demo.py", "--stages", "data", "--train", "4", "--val", "2", "--test", "2", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    term = proc.stdout + proc.stderr
    assert "load the shipped pre-trained base" in term and str(base.SHIPPED) in term and "box_exact" in term
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["base_probes"]["box_exact"] == base.lineage(base.SHIPPED)[-1]["last"]["heldout_box_exact"]
    samples = read_humanref(out / "synthref" / "train" / "humanref" / "annotations.jsonl")
    assert all(2 <= len(s.candidate_boxes) <= 4 and "Person 1 [" in s.think and "(want " not in s.think for s in samples)
    # --synthref passes generator settings over the level to the data
    proc = subprocess.run([*cmd[:-1], str(tmp_path / "wants"), "--synthref", "trace_wants=true"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    samples = read_humanref(tmp_path / "wants" / "synthref" / "train" / "humanref" / "annotations.jsonl")
    assert all("(want " in s.think for s in samples if s.domain != "rejection") and any("(want " in s.think for s in samples)


def test_a_failing_stage_shows_the_end_of_the_log(tmp_path, capfd):
    console = demo.Console(tmp_path / "demo.log")
    cmd = [sys.executable, "-c", "import sys; print('the reason it broke'); sys.exit(3)"]
    try:
        console.run(cmd, "broken", 1, lambda: 0)
    except SystemExit as exc:
        assert exc.code == 3
    else:
        raise AssertionError("a failing stage must stop the demo")
    assert "broken failed (exit 3)" in capfd.readouterr().out
    assert "the reason it broke" in (tmp_path / "demo.log").read_text()


def test_results_table_per_domain():
    per = {"attribute": {"samples": 2, "format": 1.0, "accuracy_f1": 0.5, "rejection_acc": math.nan},
           "rejection": {"samples": 1, "format": 0.5, "accuracy_f1": math.nan, "rejection_acc": 1.0}}  # fmt: skip
    sft_eval = {"format": 0.9, "accuracy_f1": 0.5, "rejection_acc": 1.0, "per_domain": per,
                "baselines": {"all_boxes": {"accuracy_f1": 0.6, "rejection_acc": 0.0,
                                            "per_domain": {"attribute": {"accuracy_f1": 0.6, "rejection_acc": math.nan}}},
                              "no_boxes": {"accuracy_f1": 0.0, "rejection_acc": 1.0,
                                           "per_domain": {"rejection": {"accuracy_f1": math.nan, "rejection_acc": 1.0}}}}}  # fmt: skip
    base, sft = demo._baselines(sft_eval), demo._rates(sft_eval)
    assert (base["f1"], base["rejection"], base["format"]) == (0.6, 1.0, None)
    assert (sft["format"], sft["f1"], sft["rejection"]) == (0.9, 0.5, 1.0)
    lines = demo.results_table({"baselines": base, "sft": sft, "grpo": None})
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert list(rows) == ["attribute", "rejection", "all"]  # rejection last before the total
    assert rows["attribute"] == ["0.600", "–", "0.500", "1.000"]
    assert rows["rejection"] == ["1.000", "–", "1.000", "0.500"]
    assert rows["all"] == ["0.600", "–", "0.500", "0.900"]
    assert demo._json_safe(base)["per_domain"]["attribute"]["rejection"] is None  # NaN is not JSON
