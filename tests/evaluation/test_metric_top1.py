"""RefCOCO-style top-1 Acc@0.5 beside the HumanRef metric: hand-computed cases, the report, run.json."""

from __future__ import annotations

import json

import pytest

from evaluation.metric import evaluate, main
from evaluation.metric_report import details_json, markdown_report, top1_rows
from evaluation.run_humanref import _headline

from .conftest import GOLDEN_GT, GOLDEN_PRED, write_jsonl

TARGET = [0, 0, 10, 10]


def row(sample_id: str, answers: list, domain: str = "refcocog") -> dict:
    return {"id": sample_id, "image_name": f"{sample_id}.jpg", "referring": "x", "domain": domain, "sub_domain": "val",
            "candidate_boxes": [TARGET, [20, 20, 30, 30], [50, 50, 60, 60]], "answer_boxes": answers}  # fmt: skip


# (id, ground-truth answer boxes, predictions or None for no row, counted as correct: True / False / None = not scored)
CASES = [
    ("half", [TARGET], [[0, 0, 10, 5]], True),  # IoU exactly 0.5 counts
    ("below", [TARGET], [[0, 0, 10, 4]], False),  # IoU 0.4
    ("empty", [TARGET], [], False),  # a rejection of a one-target sample
    ("empty2", [TARGET], [[]], False),  # the benchmark's other spelling of no box
    ("missing", [TARGET], None, False),  # no prediction row
    ("second", [TARGET], [[50, 50, 60, 60], TARGET], False),  # only the first box is the answer
    ("extra", [TARGET], [TARGET, [20, 20, 30, 30]], True),  # top-1 right, the rest ignored
    ("two", [TARGET, [20, 20, 30, 30]], [TARGET, [20, 20, 30, 30]], None),  # several targets: not scored
    ("none", [], [], None),  # rejection: not scored
]
GT = [row(i, answers, "rejection" if not answers else "refcocog") for i, answers, _, _ in CASES]
PRED = [{"id": i, "extracted_predictions": pred} for i, _, pred, _ in CASES if pred is not None]
SCORED = [ok for *_, ok in CASES if ok is not None]


@pytest.mark.parametrize("mode", ["reference", "corrected"])
def test_hand_computed_cases(mode):
    result = evaluate(GT, PRED, mode=mode)
    assert result.acc_50_samples == len(SCORED) == 7
    assert result.acc_50 == pytest.approx(sum(SCORED) / len(SCORED)) == pytest.approx(2 / 7)


def test_each_case_alone():
    for sample_id, answers, pred, ok in CASES:
        gt = [row(sample_id, answers, "rejection" if not answers else "refcocog")]
        result = evaluate(gt, [] if pred is None else [{"id": sample_id, "extracted_predictions": pred}])
        if ok is None:
            assert (result.acc_50, result.acc_50_samples) == (None, 0), sample_id
        else:
            assert (result.acc_50, result.acc_50_samples) == (float(ok), 1), sample_id


def test_golden_case_scores_its_single_target_sample():
    # b's one target [0,0,10,10] against [0,0,10,8]: IoU 0.8; a has two targets, c and d none
    result = evaluate(GOLDEN_GT, GOLDEN_PRED)
    assert (result.acc_50, result.acc_50_samples) == (1.0, 1)
    assert result.summary() == evaluate(GOLDEN_GT, GOLDEN_PRED).summary()  # the official numbers are untouched
    assert "acc_50" not in result.summary()


def test_report_markdown_details_and_run_record():
    result = evaluate(GT, PRED, name="m")
    assert top1_rows(result) == [{"model": "m", "acc_50": "0.286", "samples": 7, "not_scored": 2}]
    text = markdown_report(result)
    assert "## Top-1 accuracy (RefCOCO-style Acc@0.5)" in text
    assert "| m | 0.286 | 7 | 2 |" in text
    assert "zero or several targets are not scored" in text
    details = details_json(result)["models"][0]
    assert details["acc_50"] == pytest.approx(2 / 7) and details["acc_50_samples"] == 7
    assert _headline(result)["acc_50"] == pytest.approx(2 / 7) and _headline(result)["acc_50_samples"] == 7


def test_no_single_target_sample_leaves_the_cell_empty():
    gt = [row("two", [TARGET, [20, 20, 30, 30]])]
    result = evaluate(gt, [{"id": "two", "extracted_predictions": [TARGET]}], name="m")
    assert (result.acc_50, result.acc_50_samples) == (None, 0)
    assert "| m |  | 0 | 1 |" in markdown_report(result)


def test_point_files_have_no_top1_accuracy():
    mask = {"size": [64, 64], "counts": [0, 64 * 64]}
    gt = [{**row("p", [TARGET]), "answer_segmentations": [mask]}]
    result = evaluate(gt, [{"id": "p", "extracted_predictions": [[5, 5]]}])
    assert result.kind == "point" and result.acc_50 is None
    assert top1_rows(result) == [] and "Acc@0.5" not in markdown_report(result)


def test_command_line_prints_it(tmp_path, capsys):
    gt, pred = write_jsonl(tmp_path / "gt.jsonl", GT), write_jsonl(tmp_path / "pred.jsonl", PRED)
    assert main(["--gt_path", str(gt), "--pred_path", str(pred), "--pred_names", "m", "--dump_path", str(tmp_path / "out"),
                 "--no_charts"]) == 0  # fmt: skip
    assert "| m | 0.286 | 7 | 2 |" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert set(report) == {"domain_subdomain_metrics", "box_count_metrics"}  # the official layout, unchanged
