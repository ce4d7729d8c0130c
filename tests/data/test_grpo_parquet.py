"""GRPO parquet rows: model-frame boxes, exact prompt strings, tolerant reading, bad rows."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rexthinker.contracts.answer import answer_json
from rexthinker.contracts.hint import grpo_problem
from rexthinker.coords import model_frame_size, to_model_frame
from rexthinker.data.errors import DataError, ErrorReport
from rexthinker.data.grpo_parquet import read_grpo_parquet, write_grpo_parquet

LIMITS = {"min_pixels": 16 * 28 * 28, "max_pixels": 100 * 28 * 28}  # small enough to force a resize


def test_round_trip_in_the_model_frame(tmp_path, samples):
    path = write_grpo_parquet(samples, tmp_path / "g.parquet", **LIMITS)
    table = pq.read_table(path)
    assert table.column_names == ["images", "problem", "answer"]
    assert table.schema.field("images").type == pa.binary()
    back = read_grpo_parquet(path, **LIMITS)
    assert len(back) == len(samples)
    for row, got, s in zip(table.to_pylist(), back, samples):
        frame = model_frame_size(*s.image_size, **LIMITS)
        assert frame != s.image_size
        hints = [to_model_frame(b, s.image_size, frame) for b in s.candidate_boxes]
        answers = [to_model_frame(b, s.image_size, frame) for b in s.answer_boxes]
        assert row["problem"] == grpo_problem(s.referring, "person", hints)
        assert row["answer"] == answer_json(answers, s.referring)
        assert got.candidate_boxes == hints and got.answer_boxes == answers
        assert got.box_frame == frame and got.image_size == s.image_size
        assert got.image_bytes == s.image_bytes
        assert (got.referring, got.category, got.is_rejection) == (s.referring, s.category, s.is_rejection)
    assert any(r["answer"] == "```json\n[]\n```" for r in table.to_pylist())


def test_frame_is_unset_without_limits_and_limits_come_in_pairs(tmp_path, samples):
    path = write_grpo_parquet(samples[:2], tmp_path / "g.parquet", **LIMITS)
    assert all(s.box_frame is None for s in read_grpo_parquet(path))
    with pytest.raises(ValueError, match="both"):
        read_grpo_parquet(path, min_pixels=LIMITS["min_pixels"])


def test_writer_keeps_model_frame_boxes_and_refuses_other_frames(tmp_path, samples):
    first = write_grpo_parquet(samples[:1], tmp_path / "a.parquet", **LIMITS)
    (in_frame,) = read_grpo_parquet(first, **LIMITS)
    again = write_grpo_parquet([in_frame], tmp_path / "b.parquet", **LIMITS)
    assert pq.read_table(again).to_pylist() == pq.read_table(first).to_pylist()
    with pytest.raises(ValueError, match="frame"):
        write_grpo_parquet([dataclasses.replace(in_frame, box_frame=(28, 28))], tmp_path / "c.parquet", **LIMITS)


def test_struct_images_and_none_answers_are_accepted(tmp_path, samples):
    s = samples[0]
    problem = grpo_problem(s.referring, "person", [[1, 2, 3, 4]])
    table = pa.table(
        {
            "images": [{"bytes": s.image_bytes, "path": None}] * 3,
            "problem": [problem] * 3,
            "answer": [None, "None", answer_json([[1, 2, 3, 4]], s.referring)],
        }
    )
    pq.write_table(table, tmp_path / "h.parquet")
    back = read_grpo_parquet(tmp_path / "h.parquet")
    assert [b.answer_boxes for b in back] == [[], [], [[1, 2, 3, 4]]]
    assert back[0].image_bytes == s.image_bytes and back[0].referring == s.referring
    assert back[2].id == "h-2"


def test_bad_rows_raise_or_are_skipped(tmp_path, samples):
    s = samples[0]
    good = grpo_problem(s.referring, "person", [[1, 2, 3, 4]])
    table = pa.table(
        {
            "images": [s.image_bytes, s.image_bytes[:100], s.image_bytes, s.image_bytes],
            "problem": [good, good, "Find the person.", good],
            "answer": ["[]", "[]", "[]", "```json\n[{\"bbox_2d\": [1, 2]}]\n```"],
        }
    )
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    with pytest.raises(DataError, match=rf"{path} row 1: "):
        read_grpo_parquet(path)
    report = ErrorReport()
    back = read_grpo_parquet(path, on_error="skip", report=report)
    assert len(back) == 1
    expected = [(1, "bad_image", "row"), (2, "bad_problem", "row"), (3, "bad_answer", "row")]
    assert [(e.line, e.kind, e.unit) for e in report.errors] == expected
