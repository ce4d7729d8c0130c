"""HumanRef jsonl + images: round trip, unknown keys, malformed rows in raise and skip modes."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from rexthinker.data.errors import DataError, ErrorReport
from rexthinker.data.humanref import read_humanref, write_humanref


def _fields_equal(a, b):
    for f in dataclasses.fields(a):
        assert getattr(a, f.name) == getattr(b, f.name), f.name


def test_round_trip_keeps_every_field(tmp_path, samples):
    path = write_humanref(samples, tmp_path)
    assert path == tmp_path / "annotations.jsonl"
    back = read_humanref(path)
    assert len(back) == len(samples)
    for a, b in zip(back, samples):
        _fields_equal(a, b)
    row = json.loads(path.read_text().splitlines()[0])
    assert list(row)[:8] == [
        "id", "image_name", "referring", "candidate_boxes", "answer_boxes", "answer_segmentations", "domain", "sub_domain"
    ]
    assert "category" not in row  # only written when it is not "person"


def test_without_images_and_with_unknown_keys(tmp_path, samples):
    extra = dataclasses.replace(samples[0], extra={**samples[0].extra, "source": "unit-test", "score": [1, 2]})
    path = write_humanref([extra], tmp_path)
    (back,) = read_humanref(path, load_images=False)
    assert back.image_bytes is None and back.image_size is None
    assert back.extra["source"] == "unit-test" and back.extra["score"] == [1, 2]
    assert back.answer_boxes == extra.answer_boxes


def _broken_file(tmp_path, samples):
    """Six rows: good, bad JSON, missing key, bad box, missing image, truncated image."""
    out = tmp_path / "set"
    write_humanref(samples[:3], out)
    good = [json.loads(line) for line in (out / "annotations.jsonl").read_text().splitlines()]
    missing_key = {k: v for k, v in good[1].items() if k != "referring"}
    bad_box = {**good[1], "candidate_boxes": [[1, 2, 3]]}
    no_image = {**good[1], "image_name": "train/nowhere.png"}
    truncated = good[2]
    image = out / "images" / truncated["image_name"]
    image.write_bytes(image.read_bytes()[:200])
    lines = [json.dumps(good[0]), '{"id": "x", oops', *map(json.dumps, [missing_key, bad_box, no_image, truncated])]
    path = out / "annotations.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_malformed_rows_raise_with_file_and_line(tmp_path, samples):
    path = _broken_file(tmp_path, samples)
    with pytest.raises(DataError, match=rf"{path} line 2: not valid JSON"):
        read_humanref(path)


def test_malformed_rows_are_skipped_and_reported(tmp_path, samples):
    path = _broken_file(tmp_path, samples)
    report = ErrorReport()
    back = read_humanref(path, on_error="skip", report=report)
    assert [s.id for s in back] == [samples[0].id]
    assert [(e.line, e.kind) for e in report.errors] == [
        (2, "bad_json"),
        (3, "missing_field"),
        (4, "bad_box"),
        (5, "missing_image"),
        (6, "bad_image"),
    ]
    assert report.summary() == {"bad_json": 1, "missing_field": 1, "bad_box": 1, "missing_image": 1, "bad_image": 1}
    assert all(e.file == str(path) for e in report.errors)
    assert str(report.errors[0]).startswith(f"{path} line 2: ")


def test_skipped_rows_are_logged_when_nobody_holds_the_report(tmp_path, samples, caplog):
    path = _broken_file(tmp_path, samples)
    with caplog.at_level(logging.WARNING):
        read_humanref(path, on_error="skip")
    assert "skipped 5 bad rows" in caplog.text


def test_on_error_must_be_known(tmp_path, samples):
    path = write_humanref(samples[:1], tmp_path)
    with pytest.raises(ValueError, match="on_error"):
        read_humanref(path, on_error="ignore")
