"""``reallod``: positives as targets, negatives as rejections under both labelling assumptions,
per-pair caps, bad lines reported."""

from __future__ import annotations

import json

import pytest

from data_tools.__main__ import main
from rexthinker.data.humanref import read_humanref


@pytest.fixture(scope="module")
def reallod(tmp_path_factory, synth_samples):
    """Two images. Image a: two person pairs (vlm_short: boxes 0-1, llm: box 2, listed twice in
    vlm_short's bboxes to check de-duplication) and a dog pair. Then a broken line, a line without
    pairs, and image b whose stated size is wrong."""
    root = tmp_path_factory.mktemp("reallod")
    (root / "images").mkdir()
    a, b = synth_samples[10], synth_samples[11]
    for s in (a, b):
        (root / "images" / f"{s.id}.png").write_bytes(s.image_bytes)
    pa = a.candidate_boxes
    line_a = {
        "filename": f"{a.id}.png",
        "width": a.image_size[0],
        "height": a.image_size[1],
        "pairs": {
            "vlm_short": {
                "bboxes": [pa[0], pa[1]],
                "category": "person",
                "relation": "multi",
                "positive_expressions": ["two people on the left", "the pair"],
                "negative_expressions": ["a man with a dog", "nobody"],
            },
            "llm": {
                "bboxes": [pa[2], pa[0]],
                "category": "Person",
                "relation": "single",
                "positive_expressions": ["the third one"],
                "negative_expressions": ["a child"],
            },
            "vlm_long": {
                "bboxes": [[1, 1, 30, 30]],
                "category": "dog",
                "relation": "single",
                "positive_expressions": ["a small dog"],
                "negative_expressions": [],
            },
        },
    }
    line_b = {
        "filename": f"{b.id}.png",
        "width": 7,
        "height": 7,
        "pairs": {
            "llm": {
                "bboxes": [b.candidate_boxes[0]],
                "category": "person",
                "positive_expressions": ["x"],
                "negative_expressions": [],
            }
        },
    }
    lines = [json.dumps(line_a), "{broken", json.dumps({"filename": "x.png"}), json.dumps(line_b)]
    (root / "data.jsonl").write_text("\n".join(lines) + "\n")
    return root, a


def _run(root, out, *extra):
    argv = [
        "reallod",
        "--input",
        str(root / "data.jsonl"),
        "--image-root",
        str(root / "images"),
        "--out",
        str(out),
        "--workers",
        "1",
    ]
    assert main([*argv, *extra]) == 0
    return {s.id: s for s in read_humanref(out / "humanref" / "annotations.jsonl")}


def test_positives_and_pair_scoped_negatives(tmp_path, reallod, capsys):
    root, a = reallod
    samples = _run(root, tmp_path / "out")
    pa = [list(map(float, b)) for b in a.candidate_boxes]
    person = [pa[0], pa[1], pa[2]]  # union over the person pairs, duplicates merged, first-seen order
    first = samples["reallod-1-vlm_short-p0"]
    assert first.referring == "two people on the left" and first.candidate_boxes == person
    assert first.answer_boxes == [pa[0], pa[1]] and first.domain == "reallod" and first.sub_domain == "vlm_short"
    assert samples["reallod-1-llm-p0"].answer_boxes == [pa[2], pa[0]]
    assert samples["reallod-1-vlm_long-p0"].candidate_boxes == [[1, 1, 30, 30]]
    negative = samples["reallod-1-vlm_short-n0"]
    assert negative.answer_boxes == [] and negative.domain == "rejection"
    assert negative.candidate_boxes == [pa[0], pa[1]]  # only the pair's own boxes
    assert "reallod-1-vlm_short-n1" not in samples  # one negative per pair by default
    assert len(samples) == 6
    problems = [json.loads(x) for x in (tmp_path / "out" / "problems.jsonl").read_text().splitlines()]
    assert [(p["line"], p["kind"]) for p in problems] == [(2, "bad_json"), (3, "bad_line"), (4, "size_mismatch")]
    assert "size_mismatch 1" in capsys.readouterr().out


def test_category_scoped_negatives_caps_and_sources(tmp_path, reallod):
    root, a = reallod
    samples = _run(root, tmp_path / "cat", "--negative-candidates", "category", "--negatives-per-pair", "0")
    assert samples["reallod-1-vlm_short-n1"].candidate_boxes == samples["reallod-1-llm-p0"].candidate_boxes
    assert len(samples["reallod-1-vlm_short-n1"].candidate_boxes) == 3
    only = _run(root, tmp_path / "only", "--sources", "llm", "--negatives", "skip", "--positives-per-pair", "1")
    assert sorted(only) == ["reallod-1-llm-p0"]
    assert only["reallod-1-llm-p0"].candidate_boxes == [
        list(map(float, a.candidate_boxes[2])),
        list(map(float, a.candidate_boxes[0])),
    ]


def test_detector_negatives_need_the_category_assumption(tmp_path, reallod):
    root, _ = reallod
    with pytest.raises(SystemExit, match="negative-candidates category"):
        main(
            [
                "reallod",
                "--input",
                str(root / "data.jsonl"),
                "--image-root",
                str(root / "images"),
                "--out",
                str(tmp_path / "o"),
                "--candidates",
                "detector",
            ]
        )
