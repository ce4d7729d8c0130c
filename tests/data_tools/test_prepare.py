"""``prepare``: supplied and detector candidates, the no-match policies, bad input reported per row,
deterministic order whatever the worker count, resumable runs."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from data_tools import row_job as prep
from data_tools.__main__ import main
from rexthinker.coords import model_frame_size, to_model_frame
from rexthinker.data.grpo_parquet import read_grpo_parquet
from rexthinker.data.humanref import read_humanref
from rexthinker.detect import DetectorSpec

from .conftest import sample_row, write_rows

LIMITS = {"min_pixels": prep.TRAIN_MIN_PIXELS, "max_pixels": prep.TRAIN_MAX_PIXELS}


def _run(domain, out, rows=None, workers=1, **options):
    options = {"candidates": "supplied", "chunk_size": 5, **options}
    items = prep.jsonl_items(rows or domain.rows)
    return prep.prepare(items, domain.images, out, prep.PrepareOptions(**options), workers=workers)


def test_supplied_candidates_round_trip(tmp_path, domain):
    summary = _run(domain, tmp_path / "out")
    assert summary.rows == summary.written == len(domain.samples) and summary.problems == 0
    assert summary.stats["targets:appended"] == 0
    humanref = read_humanref(tmp_path / "out" / "humanref" / "annotations.jsonl")
    grpo = read_grpo_parquet(tmp_path / "out" / "grpo.parquet", **LIMITS)
    assert [s.id for s in humanref] == [s.id for s in domain.samples]  # input order
    for got, want, row in zip(humanref, domain.samples, grpo):
        assert got.candidate_boxes == want.candidate_boxes and got.answer_boxes == want.answer_boxes
        assert got.image_bytes == want.image_bytes and got.referring == want.referring
        frame = model_frame_size(*want.image_size, **LIMITS)
        assert row.candidate_boxes == [to_model_frame(b, want.image_size, frame) for b in want.candidate_boxes]
        assert row.answer_boxes == [to_model_frame(b, want.image_size, frame) for b in want.answer_boxes]
    assert json.loads((tmp_path / "out" / "prepare.json").read_text())["summary"]["written"] == len(domain.samples)


def test_output_does_not_depend_on_the_worker_count(tmp_path, domain):
    _run(domain, tmp_path / "one", workers=1)
    _run(domain, tmp_path / "two", workers=2)
    for name in ("humanref/annotations.jsonl", "problems.jsonl"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert pq.read_table(tmp_path / "one" / "grpo.parquet").equals(pq.read_table(tmp_path / "two" / "grpo.parquet"))


def test_resume_skips_finished_chunks_and_never_duplicates(tmp_path, domain, monkeypatch):
    out = tmp_path / "out"
    real = prep.process_chunk

    def crash_on_third(job):
        if job.index == 2:
            raise RuntimeError("killed")
        return real(job)

    monkeypatch.setattr(prep, "process_chunk", crash_on_third)
    with pytest.raises(RuntimeError, match="killed"):
        _run(domain, out)
    assert not (out / "grpo.parquet").exists()  # nothing half-merged
    monkeypatch.setattr(prep, "process_chunk", real)
    summary = _run(domain, out)
    assert summary.resumed_chunks == 2 and summary.chunks == 5
    assert summary.written == len(domain.samples)
    again = _run(domain, out)
    assert again.resumed_chunks == again.chunks == 5
    assert len(read_grpo_parquet(out / "grpo.parquet")) == len(domain.samples)
    ids = [json.loads(line)["id"] for line in (out / "humanref" / "annotations.jsonl").read_text().splitlines()]
    assert ids == [s.id for s in domain.samples]
    with pytest.raises(SystemExit, match="other options"):
        _run(domain, out, no_match="drop")
    other = prep.prepare(
        prep.jsonl_items(domain.rows),
        domain.images,
        out,
        prep.PrepareOptions(candidates="supplied", chunk_size=5, no_match="drop"),
        overwrite=True,
    )
    assert other.resumed_chunks == 0 and other.written == len(domain.samples)


def test_a_changed_input_row_redoes_only_its_chunk(tmp_path, domain):
    out = tmp_path / "out"
    _run(domain, out)
    rows = [sample_row(s) for s in domain.samples]
    rows[7]["referring"] = "someone else entirely"
    changed = write_rows(domain.root / "changed.jsonl", rows)
    summary = prep.prepare(
        (prep.Item(str(domain.rows), i.line, i.payload) for i in prep.jsonl_items(changed)),
        domain.images,
        out,
        prep.PrepareOptions(candidates="supplied", chunk_size=5),
    )
    assert summary.resumed_chunks == summary.chunks - 1
    assert read_humanref(out / "humanref" / "annotations.jsonl")[7].referring == "someone else entirely"


def _bad_rows(domain, tmp_path):
    s = domain.samples
    (tmp_path / "img").mkdir()
    broken = domain.images / s[0].image_name
    (tmp_path / "img" / "cut.png").write_bytes(broken.read_bytes()[:300])
    shutil.copytree(domain.images, tmp_path / "img", dirs_exist_ok=True)
    w, h = s[3].image_size
    rows = [
        sample_row(s[0]),
        "{not json",
        {**sample_row(s[1]), "image_name": "nowhere.png"},
        {**sample_row(s[2]), "image_name": "cut.png"},
        {**sample_row(s[3]), "ans": [[w - 10, 5, w + 40, 50]]},  # reaches outside
        {**sample_row(s[4]), "ans": [[10, 10, 5, 20]]},  # no area
        {k: v for k, v in sample_row(s[5]).items() if k != "category"},
        {**sample_row(s[6]), "image_size": [1, 1]},
        {**sample_row(s[7]), "image_name": "../escape.png"},
        sample_row(s[8]),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_bad_rows_are_reported_with_their_line_and_the_rest_goes_on(tmp_path, domain):
    rows = _bad_rows(domain, tmp_path)
    options = prep.PrepareOptions(candidates="supplied", chunk_size=4)
    summary = prep.prepare(prep.jsonl_items(rows), tmp_path / "img", tmp_path / "out", options)
    assert summary.rows == 10 and summary.written == 2
    problems = [json.loads(line) for line in (tmp_path / "out" / "problems.jsonl").read_text().splitlines()]
    assert [(p["line"], p["kind"]) for p in problems] == [
        (2, "bad_json"),
        (3, "missing_image"),
        (4, "bad_image"),
        (5, "box_outside"),
        (6, "bad_box"),
        (7, "missing_field"),
        (8, "size_mismatch"),
        (9, "bad_field"),
    ]
    assert all(p["file"] == str(rows) and p["action"] == "dropped" for p in problems)
    assert summary.stats["dropped:bad_json"] == 1 and summary.stats["dropped:box_outside"] == 1
    text = prep.format_summary(summary, tmp_path / "out")
    assert "box_outside 1" in text and f"{rows} line 3" in text
    clipped = prep.prepare(
        prep.jsonl_items(rows),
        tmp_path / "img",
        tmp_path / "clip",
        prep.PrepareOptions(candidates="supplied", chunk_size=4, clip_boxes=True),
    )
    assert clipped.written == 3 and clipped.stats["changed:clipped_box"] == 1
    kept = read_humanref(tmp_path / "clip" / "humanref" / "annotations.jsonl", image_root=tmp_path / "img")[1]
    assert kept.answer_boxes[0][2] == domain.samples[3].image_size[0] and kept.answer_boxes[0] in kept.candidate_boxes


@pytest.mark.parametrize(
    "policy, hints, answers, counts",
    [
        (
            "append",
            [[0, 0, 10, 10], [50, 50, 60, 60], [20, 0, 30, 10], [52, 40, 70, 58]],
            [[0, 0, 10, 10], [20, 0, 30, 10], [52, 40, 70, 58]],
            (1, 2, 0),
        ),
        (
            "replace",
            [[0, 0, 10, 10], [52, 40, 70, 58], [20, 0, 30, 10]],
            [[0, 0, 10, 10], [20, 0, 30, 10], [52, 40, 70, 58]],
            (1, 1, 1),
        ),
    ],
)
def test_no_match_policies(policy, hints, answers, counts):
    candidates = [[0, 0, 10, 10], [50, 50, 60, 60]]
    targets = [[0, 0, 10, 10.5], [20, 0, 30, 10], [52, 40, 70, 58]]  # matched, far from all, overlapping #2 a little
    got_hints, got_answers, got_counts = prep.attach_targets(candidates, targets, policy)
    assert got_hints == hints and got_answers == answers
    assert (got_counts["matched"], got_counts["appended"], got_counts["replaced"]) == counts
    with pytest.raises(prep.RowProblem, match="overlaps no candidate"):
        prep.attach_targets(candidates, targets, "drop")


def test_matching_is_one_to_one_and_answers_copy_hints():
    candidates = [[0, 0, 10, 10], [100, 100, 110, 110]]
    targets = [[0, 0, 10, 11], [1, 0, 10, 10]]  # both overlap the first candidate only
    hints, answers, counts = prep.attach_targets(candidates, targets, "append")
    assert answers == [[0, 0, 10, 10], [1, 0, 10, 10]] and hints[-1] == [1, 0, 10, 10]
    assert counts["matched"] == 1 and counts["appended"] == 1
    assert all(a in hints for a in answers)


def test_shuffled_hint_order_is_deterministic(tmp_path, domain):
    _run(domain, tmp_path / "a", hint_order="shuffle")
    _run(domain, tmp_path / "b", hint_order="shuffle", chunk_size=7)
    a = read_humanref(tmp_path / "a" / "humanref" / "annotations.jsonl")
    b = read_humanref(tmp_path / "b" / "humanref" / "annotations.jsonl")
    assert a == b
    assert any(s.candidate_boxes != t.candidate_boxes for s, t in zip(a, domain.samples))
    assert all(sorted(s.candidate_boxes) == sorted(t.candidate_boxes) for s, t in zip(a, domain.samples))
    assert all(box in s.candidate_boxes for s in a for box in s.answer_boxes)


def test_detector_candidates(tmp_path, domain, tiny_detector_path):
    rows = write_rows(
        tmp_path / "rows.jsonl",
        [sample_row(s, supplied=False) for s in domain.samples[:4]]
        + [{**sample_row(domain.samples[0], supplied=False), "id": "again", "category": "car"}],
    )
    spec = DetectorSpec(model=str(tiny_detector_path), batch_size=3)
    options = prep.PrepareOptions(candidates="detector", detector=spec, chunk_size=10)
    summary = prep.prepare(prep.jsonl_items(rows), domain.images, tmp_path / "out", options)
    assert summary.written == 5 and summary.stats["detector_calls"] == 5
    samples = read_humanref(tmp_path / "out" / "humanref" / "annotations.jsonl")
    sources = [*domain.samples[:4], domain.samples[0]]
    assert [s.id for s in samples] == [*(s.id for s in sources[:4]), "again"]
    for s, source in zip(samples, sources):
        assert len(s.answer_boxes) == len(source.answer_boxes)
        assert all(box in s.candidate_boxes for box in s.answer_boxes)
        w, h = source.image_size
        assert all(0 <= b[0] < b[2] <= w and 0 <= b[1] < b[3] <= h for b in s.candidate_boxes)
    appended = summary.stats["targets:appended"]
    assert summary.stats["targets:matched"] + appended == sum(len(s.answer_boxes) for s in sources)


def test_cli(tmp_path, domain, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--help"])
    assert exit_info.value.code == 0 and "--no-match" in capsys.readouterr().out
    argv = [
        "prepare",
        "--input",
        str(domain.rows),
        "--image-root",
        str(domain.images),
        "--out",
        str(tmp_path / "o"),
        "--candidates",
        "supplied",
        "--workers",
        "1",
        "--formats",
        "parquet",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{len(domain.samples)} rows read, {len(domain.samples)} written" in printed
    assert (tmp_path / "o" / "grpo.parquet").exists() and not (tmp_path / "o" / "humanref").exists()
    with pytest.raises(SystemExit, match="formats"):
        main([*argv[:-1], "csv"])
