"""Contracts §4 golden case, through the library and the command line, and the report files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation import metric
from evaluation.metric import REFERENCE_THRESHOLDS, evaluate, main
from evaluation.metric_inputs import load_ground_truth, load_predictions
from evaluation.metric_report import domain_rows, write_report

from .conftest import GOLDEN_GT, GOLDEN_PRED, write_jsonl

FIELDS = ("recall_50", "recall_50_95", "precision_50", "precision_50_95", "densityf1_50", "densityf1_50_95")
# contracts §4: R@.5, R, P@.5, P, DF1@.5, DF1 as the official script prints them
EXPECTED = {
    "attribute": ("1.000", "1.000", "0.500", "0.500", "0.333", "0.333"),
    "position": ("1.000", "0.600", "1.000", "0.600", "1.000", "0.600"),
    "all": ("1.000", "0.800", "0.750", "0.550", "0.667", "0.467"),
}


def printed(scores) -> tuple[str, ...]:
    return tuple(f"{getattr(scores, f):.3f}" for f in FIELDS)


def test_thresholds_are_the_official_floats():
    assert REFERENCE_THRESHOLDS.tolist() == np.arange(0.5, 1.0, 0.05).tolist()
    assert REFERENCE_THRESHOLDS[6] == 0.8000000000000003
    assert metric.EXACT_THRESHOLDS.tolist() == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]


def test_golden_case():
    result = evaluate(GOLDEN_GT, GOLDEN_PRED)
    assert result.kind == "box"
    assert printed(result.domains["attribute"]) == EXPECTED["attribute"]
    assert printed(result.domains["position"]) == EXPECTED["position"]
    assert printed(result.all_data) == EXPECTED["all"]
    assert result.all_data.samples == 2
    assert result.rejection_score == 1 and result.rejection_total == 2
    assert result.missing_ids == ["c"] and result.missing_rejection_ids == ["c"]
    assert list(result.domains) == ["attribute", "position"]  # rejection is scored apart
    # the exact values behind the printed ones
    attribute = result.domains["attribute"]
    assert (attribute.recall_50, attribute.precision_50) == (1.0, 0.5)
    assert attribute.densityf1_50 == pytest.approx(1 / 3, rel=1e-15)
    # b: IoU([0,0,10,10], [0,0,10,8]) is exactly 0.8, which fails the official "0.8" (0.8000000000000003)
    position = result.per_sample.matches[1]
    assert position.tolist() == [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    assert set(result.buckets) == {"1", "2-5"}
    assert printed(result.buckets["1"]) == EXPECTED["position"]
    assert printed(result.bucket_average) == EXPECTED["all"]


def test_golden_case_corrected_passes_the_exact_threshold():
    result = evaluate(GOLDEN_GT, GOLDEN_PRED, mode="corrected")
    assert result.per_sample.matches[1].tolist() == [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    assert printed(result.domains["position"]) == ("1.000", "0.700", "1.000", "0.700", "1.000", "0.700")
    assert printed(result.domains["attribute"]) == EXPECTED["attribute"]
    assert result.rejection_score == 1


def test_cli_golden(golden_files, tmp_path, capsys):
    gt_path, pred_path = golden_files
    out = tmp_path / "report"
    assert main(["--gt_path", str(gt_path), "--pred_path", str(pred_path), "--pred_names", "golden",
                 "--dump_path", str(out), "--no_charts"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "| attribute | Overall | golden |  |  |  | 1.000 | 1.000 | 0.500 | 0.500 | 0.333 | 0.333 |  | 1 |" in text
    assert "| position | Overall | golden |  |  |  | 1.000 | 0.600 | 1.000 | 0.600 | 1.000 | 0.600 |  | 1 |" in text
    assert "| Average | All Data | golden |  |  |  | 1.000 | 0.800 | 0.750 | 0.550 | 0.667 | 0.467 |  | 2 |" in text
    assert "| Rejection | Overall | golden |  |  |  |  |  |  |  |  |  | 1 |  |" in text
    assert "1 ground-truth ids have no prediction row (1 of them rejection samples" in text
    assert (out / "comparison.md").read_text() in text

    report = json.loads((out / "comparison.json").read_text())
    assert set(report) == {"domain_subdomain_metrics", "box_count_metrics"}
    rows = report["domain_subdomain_metrics"]
    keys = ["domain", "subdomain", "model", "recall_@point", "precision_@point", "densityf1_@point", "recall_@0.5",
            "recall_@0.5:0.95", "precision_@0.5", "precision_@0.5:0.95", "densityf1_@0.5", "densityf1_@0.5:0.95",
            "rejection_score", "samples"]  # fmt: skip
    assert all(list(row) == keys for row in rows)
    assert [(r["domain"], r["subdomain"]) for r in rows] == [
        ("attribute", "Overall"), ("attribute", "attr"), ("position", "Overall"), ("position", "pos"),
        ("Average", "All Data"), ("Rejection", "Overall"),
    ]  # fmt: skip
    average = rows[4]
    means = (average["recall_@0.5:0.95"], average["precision_@0.5:0.95"], average["densityf1_@0.5:0.95"])
    assert means == (0.8, 0.55, 0.467)
    assert average["recall_@point"] == "" and average["rejection_score"] == "" and average["samples"] == 2
    assert rows[5]["rejection_score"] == 1 and rows[5]["samples"] == ""
    buckets = report["box_count_metrics"]
    assert [r["box count"] for r in buckets] == ["1", "2-5", "Average"]
    assert list(buckets[0])[:2] == ["box count", "model"]

    details = json.loads((out / "details.json").read_text())["models"][0]
    assert details["missing_ids"] == ["c"] and details["rejection_score"] == 1
    assert details["all_data"]["densityf1_50_95"] == pytest.approx(0.4666666666666667)


def test_several_models_sorted_by_densityf1_within_each_group(tmp_path):
    perfect = [{"id": r["id"], "extracted_predictions": r["answer_boxes"]} for r in GOLDEN_GT]
    results = [
        evaluate(GOLDEN_GT, GOLDEN_PRED, name="golden"),
        evaluate(GOLDEN_GT, perfect, name="perfect"),
        evaluate(GOLDEN_GT, GOLDEN_PRED, mode="corrected", name="golden (corrected)"),
    ]
    rows = [r for r in domain_rows(results) if r is not None]
    position = [r["model"] for r in rows if r["domain"] == "position" and r["subdomain"] == "Overall"]
    assert position == ["perfect", "golden (corrected)", "golden"]
    attribute = [r["model"] for r in rows if r["domain"] == "attribute" and r["subdomain"] == "Overall"]
    assert attribute == ["perfect", "golden", "golden (corrected)"]  # a tie keeps the given order
    assert [r["rejection_score"] for r in rows if r["domain"] == "Rejection"] == [1, 2, 1]
    shown = [r["_shown"] for r in rows if r["domain"] == "position"]
    assert shown[:3] == [("position", "Overall"), ("", ""), ("", "")]


def test_cli_both_modes_and_charts(golden_files, tmp_path, capsys):
    gt_path, pred_path = golden_files
    out = tmp_path / "both"
    main(["--gt_path", str(gt_path), "--pred_path", str(pred_path), str(pred_path), "--dump_path", str(out),
          "--mode", "both"])  # fmt: skip
    text = capsys.readouterr().out
    for name in ("Model_1", "Model_2", "Model_1 (corrected)", "Model_2 (corrected)"):
        assert f"| Average | All Data | {name} |" in text
    for chart in ("chart_domains.png", "chart_target_count.png"):
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_rejects_extra_names_and_duplicates(golden_files):
    gt_path, pred_path = golden_files
    with pytest.raises(ValueError, match="names for"):
        main(["--gt_path", str(gt_path), "--pred_path", str(pred_path), "--pred_names", "a", "b"])
    with pytest.raises(ValueError, match="distinct"):
        main(["--gt_path", str(gt_path), "--pred_path", str(pred_path), str(pred_path), "--pred_names", "a", "a"])


def test_write_report_accepts_one_result(tmp_path):
    paths = write_report(evaluate(GOLDEN_GT, GOLDEN_PRED), tmp_path, charts=False)
    assert sorted(paths) == ["details", "json", "markdown"]
    assert all(p.exists() for p in paths.values())


def test_script_runs_as_a_file(golden_files):
    import subprocess
    import sys

    gt_path, pred_path = golden_files
    done = subprocess.run(
        [sys.executable, str(metric.__file__), "--gt_path", str(gt_path), "--pred_path", str(pred_path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "| Average | All Data | Model_1 |  |  |  | 1.000 | 0.800 | 0.750 | 0.550 | 0.667 | 0.467 |  | 2 |" in done.stdout


def test_jsonl_round_trip_through_files(tmp_path):
    gt = load_ground_truth(write_jsonl(tmp_path / "gt.jsonl", GOLDEN_GT))
    preds = load_predictions(write_jsonl(tmp_path / "p.jsonl", GOLDEN_PRED))
    assert evaluate(gt, preds).summary() == evaluate(GOLDEN_GT, GOLDEN_PRED).summary()
