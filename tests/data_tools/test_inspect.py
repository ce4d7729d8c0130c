"""``inspect``: statistics of clean files in the three formats, and every kind of problem found
with its row."""

from __future__ import annotations

import json

import pytest

from data_tools.__main__ import main
from data_tools.inspect_data import format_inspection, inspect_file
from rexthinker.contracts.trace import CHECK, CROSS
from rexthinker.data.cot_tsv import write_cot_tsv
from rexthinker.data.grpo_parquet import write_grpo_parquet
from rexthinker.data.humanref import write_humanref


@pytest.fixture(scope="module")
def files(tmp_path_factory, synth_samples):
    root = tmp_path_factory.mktemp("formats")
    return {
        "humanref": write_humanref(synth_samples, root / "humanref"),
        "cot": write_cot_tsv(synth_samples, root / "cot" / "x")[1],
        "parquet": write_grpo_parquet(synth_samples, root / "g.parquet"),
    }


@pytest.mark.parametrize("fmt", ["humanref", "cot", "parquet"])
def test_clean_files_have_no_problems_and_the_right_counts(files, synth_samples, fmt):
    result = inspect_file(files[fmt])
    assert result.format == fmt and result.samples == len(synth_samples) and result.problems == []
    assert result.images == len(synth_samples)
    rejections = sum(s.is_rejection for s in synth_samples)
    assert result.targets["0"] == rejections and result.rejection_share == rejections / len(synth_samples)
    assert sum(result.hints.values()) == len(synth_samples)
    assert sum(k * v for k, v in result.hints.items()) == sum(len(s.candidate_boxes) for s in synth_samples)
    if fmt != "parquet":  # the parquet layout stores no domain
        assert dict(result.domains) == {
            d: sum(s.domain == d for s in synth_samples) for d in {s.domain for s in synth_samples}
        }
    text = format_inspection(result)
    assert "problems: 0" in text and "targets per sample:" in text and "rejection share" in text


def test_prefix_and_folder_paths_are_understood(files):
    assert inspect_file(str(files["cot"])[: -len(".annotations.tsv")]).format == "cot"
    assert inspect_file(files["humanref"].parent).format == "humanref"


def test_every_problem_is_reported_with_its_line(tmp_path, synth_samples):
    s = [x for x in synth_samples if not x.is_rejection and x.think]
    path = write_humanref(synth_samples, tmp_path / "h")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    by_id = {r["id"]: r for r in rows}
    w = synth_samples[0].image_size[0]
    by_id[s[0].id]["candidate_boxes"][0] = [w - 5, 0, w + 20, 10]  # outside
    by_id[s[1].id]["answer_boxes"][0] = [1, 2, 3, 4]  # not a hint
    by_id[s[2].id]["candidate_boxes"] = []
    by_id[s[2].id]["answer_boxes"] = []
    by_id[s[3].id]["candidate_boxes"].append(by_id[s[3].id]["candidate_boxes"][0])  # duplicate
    by_id[s[4].id]["think"] = by_id[s[4].id]["think"].replace(f"→ {CHECK}", f"→ {CROSS}")  # unfaithful
    by_id[s[5].id]["candidate_boxes"][0] = [5, 5, 5, 9]  # no area
    lines = [json.dumps(r) for r in rows]
    lines.insert(3, "{oops")
    broken = next(x for x in synth_samples if x.id not in {y.id for y in s[:6]})
    (tmp_path / "h" / "images" / broken.image_name).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    path.write_text("\n".join(lines) + "\n")
    result = inspect_file(path)
    line_of = {r["id"]: k + 1 + (k >= 3) for k, r in enumerate(rows)}
    found = {(p["kind"], p["where"].rsplit(" ", 1)[1]) for p in result.problems}
    expected = {
        ("bad_json", "4"), ("bad_image", str(line_of[broken.id])),
        ("box_outside", str(line_of[s[0].id])), ("answer_not_in_hints", str(line_of[s[1].id])),
        ("empty_hints", str(line_of[s[2].id])), ("duplicate_hints", str(line_of[s[3].id])),
        ("trace_disagrees", str(line_of[s[4].id])), ("degenerate_box", str(line_of[s[5].id])),
    }  # fmt: skip
    assert expected <= found, found
    # the reader leaves out the broken image's row, the zero-area box's and the answer that is no hint
    assert result.samples == len(synth_samples) - 3


def test_parquet_read_with_the_wrong_pixel_limits_shows_boxes_outside(files):
    result = inspect_file(files["parquet"], max_pixels=16 * 28 * 28)
    assert result.problem_kinds().get("box_outside", 0) > 0


def test_cli_exit_status_and_json(tmp_path, files, capsys):
    out = tmp_path / "report.json"
    assert main(["inspect", str(files["cot"]), "--json", str(out)]) == 0
    assert "HumanRef-CoT TSV" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["problems"] == [] and report["samples"] > 0 and "targets_per_sample" in report
    assert main(["inspect", str(files["parquet"]), "--max-pixels", str(16 * 28 * 28), "--max-problems", "2"]) == 1
    assert "more (--max-problems, --json)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="cannot tell the format"):
        main(["inspect", str(tmp_path / "report.json")])
