"""Bad rows never pass silently: every format, every corruption kind, checked when a file is opened.

One file per format holds one row of each kind among good rows (tests/data/corrupt.py). With
``on_error="skip"`` exactly the good rows stay and the report names each bad row by line and kind;
with ``"raise"`` opening the file stops at the first bad row, naming the file and the line.
"""

from __future__ import annotations

import json
import re

import pytest

from rexthinker.coords import check_image_size
from rexthinker.data.errors import BadRow, DataError, ErrorReport, check_boxes
from rexthinker.data.sources import DataConfig, open_samples, open_training_samples
from tests.data.corrupt import corrupt_cot_tsv, corrupt_grpo_parquet, corrupt_humanref

LIMITS = {"min_pixels": 16 * 28 * 28, "max_pixels": 100 * 28 * 28}


@pytest.fixture(params=["cot_tsv", "humanref", "grpo_parquet"])
def corrupt(request, tmp_path, samples):
    good = samples[:4]
    if request.param == "cot_tsv":
        return corrupt_cot_tsv(good, tmp_path / "cot"), {}
    if request.param == "humanref":
        return corrupt_humanref(good, tmp_path / "humanref"), {}
    return corrupt_grpo_parquet(good, tmp_path / "grpo.parquet", **LIMITS), LIMITS


def test_skip_keeps_exactly_the_good_rows_and_names_every_bad_one(corrupt):
    data, limits = corrupt
    report = ErrorReport()
    kept = open_samples(str(data.path), on_error="skip", report=report, **limits)
    assert [kept[i].id for i in range(len(kept))] == data.kept
    assert [(e.line, e.kind) for e in report.errors] == data.errors
    assert [(w.line, w.kind) for w in report.warnings] == data.warnings
    assert {e.file for e in report.errors + report.warnings} == {str(data.report_file)}


def test_raise_stops_at_the_first_bad_row_when_the_file_is_opened(corrupt):
    data, limits = corrupt
    unit = "row" if data.path.suffix == ".parquet" else "line"
    with pytest.raises(DataError, match=rf"^{re.escape(str(data.report_file))} {unit} {data.errors[0][0]}: "):
        open_samples(str(data.path), **limits)


def test_cot_rows_are_all_checked_at_open_and_the_index_survives_a_reopen(tmp_path, samples):
    data = corrupt_cot_tsv(samples[:4], tmp_path / "cot")
    report = ErrorReport()
    first = open_samples(str(data.path), on_error="skip", report=report)
    again = open_samples(str(data.path), on_error="skip", report=ErrorReport())  # a resumed run opens it again
    assert first.rows == again.rows and len(first) == len(data.kept)
    counts = (len(report.errors), len(report.warnings))
    for _ in range(2):  # reading every kept row, twice: no bad row met, no warning recorded again
        assert [first[i].id for i in range(len(first))] == data.kept
    assert (len(report.errors), len(report.warnings)) == counts == (len(data.errors), 1)


def test_training_open_prints_the_summary_and_writes_every_row(tmp_path, samples, capsys):
    data = corrupt_humanref(samples[:4], tmp_path / "humanref")
    config = DataConfig(train=[str(data.path)], on_error="skip")
    kept = open_training_samples(config, tmp_path / "run", "sft")
    assert [s.id for s in kept] == data.kept
    out = capsys.readouterr().out
    assert f"[sft] data.train: skipped {len(data.errors)} bad rows" in out and "kept 1 rows with warnings" in out
    rows = [json.loads(line) for line in (tmp_path / "run" / "data_errors.jsonl").read_text().splitlines()]
    assert [(r["line"], r["kind"], r["action"]) for r in rows] == [(n, k, "skipped") for n, k in data.errors] + [
        (n, k, "kept") for n, k in data.warnings
    ]
    assert all(r["file"] == str(data.path) and r["unit"] == "line" and r["reason"] for r in rows)
    with pytest.raises(DataError, match=rf"{re.escape(str(data.path))} line 2: "):
        open_training_samples(DataConfig(train=[str(data.path)]), tmp_path / "run", "sft")


def test_a_clean_open_removes_a_stale_report(tmp_path, samples):
    data = corrupt_humanref(samples[:4], tmp_path / "humanref")
    open_training_samples(DataConfig(train=[str(data.path)], on_error="skip"), tmp_path / "run", "sft")
    clean = tmp_path / "clean" / "annotations.jsonl"
    from rexthinker.data.humanref import write_humanref

    write_humanref(samples[:2], clean.parent)
    open_training_samples(DataConfig(train=[str(clean)]), tmp_path / "run", "sft")
    assert not (tmp_path / "run" / "data_errors.jsonl").exists()


BOX_CASES = [
    # hints, answers, frame, clamped -> error kind, or None (clean) or "box_clamped" (kept, warned)
    ([[10, 10, 50, 50]], [[10, 10, 50, 50]], (100, 80), True, None),
    ([[0, 0, 100, 80]], [], (100, 80), False, None),  # edge to edge
    ([[50, 10, 10, 50]], [], (100, 80), True, "swapped_box"),
    ([[10, 50, 50, 10]], [], None, True, "swapped_box"),
    ([[10, 10, 10, 50]], [], (100, 80), True, "degenerate_box"),
    ([[10, 10, 50, 10]], [], None, False, "degenerate_box"),
    ([[-5, 10, 50, 50]], [[-5, 10, 50, 50]], (100, 80), True, "box_clamped"),
    ([[-5, 10, 50, 50]], [], None, True, "box_clamped"),  # image size unknown: negatives still seen
    ([[10, 10, 120, 50]], [], (100, 80), True, "box_clamped"),
    ([[110, 10, 120, 50]], [], (100, 80), True, "box_outside"),
    ([[-50, 10, -5, 50]], [], (100, 80), True, "box_outside"),
    ([[-5, 10, 50, 50]], [], (100, 80), False, "box_outside"),  # verbatim boxes: nothing clamps them
    ([[-5, 10, 50, 50]], [], None, False, "box_outside"),
    ([[10, 10, 101, 50]], [], (100, 80), False, "box_outside"),
    ([[10, 10, 50, 50]], [[10, 10, 50, 51]], (100, 80), True, "answer_not_in_hints"),
    ([[10.0, 10.0, 50.0, 50.0]], [[10, 10, 50, 50]], (100, 80), True, None),  # 10 == 10.0
]


@pytest.mark.parametrize("hints, answers, frame, clamped, expected", BOX_CASES)
def test_box_rules(hints, answers, frame, clamped, expected):
    if expected in (None, "box_clamped"):
        warnings = check_boxes(hints, answers, frame, clamped)
        assert [kind for kind, _ in warnings] == ([expected] if expected else [])
    else:
        with pytest.raises(BadRow) as caught:
            check_boxes(hints, answers, frame, clamped)
        assert caught.value.kind == expected


@pytest.mark.parametrize(
    "size, ok",
    [((600, 2), False), ((2, 600), False), ((400, 14), False), ((3000, 15), True), ((3001, 15), False), ((15, 15), True),
     ((640, 480), True)],
)  # fmt: skip
def test_image_sizes_the_prompt_builder_cannot_handle(size, ok):
    if ok:
        check_image_size(*size)
    else:
        with pytest.raises(ValueError, match=f"{size[0]}x{size[1]} image"):
            check_image_size(*size)
