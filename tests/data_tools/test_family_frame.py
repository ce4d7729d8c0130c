"""``--family``: the data tools write GRPO parquet boxes in a model family's frame (0-1000 relative
for Qwen3-VL / Qwen3.5, recorded in the file), Qwen2.5-VL's output stays the released layout, and
traces that state pixel boxes are refused for a 0-1000 family."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from data_tools.__main__ import main
from data_tools.inspect_data import format_inspection, inspect_file
from rexthinker.coords import RELATIVE_1000, to_relative_frame
from rexthinker.data.errors import DataError
from rexthinker.data.grpo_parquet import FRAME_KEY, SCHEMA, parquet_frame, read_grpo_parquet, write_grpo_parquet
from rexthinker.data.humanref import read_humanref
from rexthinker.data.synthref import generate
from rexthinker.models.families import QWEN2_5_VL, QWEN3_VL
from rexthinker.prompts import prompt_boxes

SYNTHREF = ["synthref", "--train", "6", "--val", "0", "--test", "0", "--seed", "3", "--workers", "1", "--formats", "humanref,parquet"]


def _relative(sample):
    """``(hints, answers)`` of an original-pixel sample in the 0-1000 frame."""
    hints = [to_relative_frame(b, sample.image_size) for b in sample.candidate_boxes]
    return hints, [to_relative_frame(b, sample.image_size) for b in sample.answer_boxes]


def test_synthref_default_is_the_released_layout_and_equals_an_explicit_qwen2_5_vl(tmp_path):
    main([*SYNTHREF, "--out", str(tmp_path / "default")])
    main([*SYNTHREF, "--out", str(tmp_path / "explicit"), "--family", "qwen2_5_vl"])
    default = tmp_path / "default" / "train" / "grpo" / "synthref.parquet"
    assert default.read_bytes() == (tmp_path / "explicit" / "train" / "grpo" / "synthref.parquet").read_bytes()
    assert parquet_frame(default) is None and pq.read_schema(default).equals(SCHEMA, check_metadata=False)
    assert FRAME_KEY not in (pq.read_schema(default).metadata or {})
    assert "box frame: not recorded" in format_inspection(inspect_file(default))
    # the same bytes as the library's writer, which predates --family
    write_grpo_parquet(read_humanref(tmp_path / "default" / "train" / "humanref" / "annotations.jsonl"), tmp_path / "lib.parquet")
    assert default.read_bytes() == (tmp_path / "lib.parquet").read_bytes()
    manifest = json.loads((tmp_path / "default" / "synthref.json").read_text())
    assert (manifest["family"], manifest["frame"]) == ("qwen2_5_vl", "model_pixels")
    assert (manifest["min_pixels"], manifest["max_pixels"]) == QWEN2_5_VL.train_pixels


def test_synthref_for_qwen3_vl_writes_and_records_the_0_1000_frame(tmp_path):
    out = tmp_path / "q3"
    assert main([*SYNTHREF, "--out", str(out), "--family", "qwen3_vl"]) == 0
    path = out / "train" / "grpo" / "synthref.parquet"
    min_pixels, max_pixels = QWEN3_VL.train_pixels  # the family's own limits by default
    assert parquet_frame(path) == {"family": "qwen3_vl", "frame": RELATIVE_1000, "min_pixels": min_pixels, "max_pixels": max_pixels}
    manifest = json.loads((out / "synthref.json").read_text())
    assert (manifest["family"], manifest["frame"], manifest["min_pixels"]) == ("qwen3_vl", RELATIVE_1000, min_pixels)
    originals = read_humanref(out / "train" / "humanref" / "annotations.jsonl")
    rows = read_grpo_parquet(path)  # the record sets the frame; no pixel limits needed
    assert len(rows) == len(originals) == 6
    for row, original in zip(rows, originals):
        assert row.box_frame == (1000, 1000)
        assert (row.candidate_boxes, row.answer_boxes) == _relative(original)
        # a Qwen3-VL prompt uses the stored boxes verbatim and equals the one built from original pixels
        from_row = prompt_boxes(row, *QWEN3_VL.train_pixels, family=QWEN3_VL)
        from_original = prompt_boxes(original, *QWEN3_VL.train_pixels, family=QWEN3_VL)
        assert (from_row.hint_boxes, from_row.answer_boxes) == (from_original.hint_boxes, from_original.answer_boxes)
    # with limits given (as the GRPO trainer passes its processor's), the record still decides
    assert read_grpo_parquet(path, min_pixels=min_pixels, max_pixels=max_pixels)[0].box_frame == (1000, 1000)
    # inspect reads the record, finds every box inside the 0-1000 frame, and says which frame it is
    inspection = inspect_file(path)
    assert inspection.frame["frame"] == RELATIVE_1000 and not inspection.problems
    assert "box frame: relative_1000 for qwen3_vl (recorded)" in format_inspection(inspection)


def test_synthref_refuses_pixel_traces_for_a_0_1000_family(tmp_path):
    with pytest.raises(SystemExit, match="trace_boxes.*Qwen2.5-VL's model-input pixels.*qwen3_vl"):
        main([*SYNTHREF, "--out", str(tmp_path / "a"), "--family", "qwen3_vl", "--level", "demo"])
    with pytest.raises(SystemExit, match="trace_boxes.*qwen3_5"):
        main([*SYNTHREF, "--out", str(tmp_path / "b"), "--family", "qwen3_5", "trace_boxes=true"])
    assert main([*SYNTHREF, "--out", str(tmp_path / "c"), "--family", "qwen3_vl", "--level", "demo", "trace_boxes=false"]) == 0
    with pytest.raises(SystemExit):  # argparse refuses an unknown family
        main([*SYNTHREF, "--out", str(tmp_path / "d"), "--family", "qwen9"])


def test_prepare_for_qwen3_vl_records_the_frame_through_chunks_and_workers(tmp_path, domain):
    argv = ["prepare", "--input", str(domain.rows), "--image-root", str(domain.images), "--candidates", "supplied",
            "--chunk-size", "3", "--family", "qwen3_vl"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "one"), "--workers", "1"]) == 0
    assert main([*argv, "--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    path = tmp_path / "one" / "grpo.parquet"
    assert parquet_frame(path)["frame"] == RELATIVE_1000 and parquet_frame(path)["family"] == "qwen3_vl"
    assert pq.read_table(path).equals(pq.read_table(tmp_path / "two" / "grpo.parquet"))
    assert json.loads((tmp_path / "one" / "prepare.json").read_text())["options"]["family"] == "qwen3_vl"
    humanref = read_humanref(tmp_path / "one" / "humanref" / "annotations.jsonl")  # original pixels, whatever the family
    rows = read_grpo_parquet(path)
    assert len(rows) == len(humanref) == len(domain.samples)
    for row, original in zip(rows, humanref):
        assert row.box_frame == (1000, 1000) and (row.candidate_boxes, row.answer_boxes) == _relative(original)
    # the options digest guards resuming: another family is other options
    with pytest.raises(SystemExit, match="other options"):
        main([*argv[:-1], "qwen2_5_vl", "--out", str(tmp_path / "one"), "--workers", "1"])


def test_a_damaged_frame_record_is_a_data_error(tmp_path):
    samples = generate(2, seed=1)
    path = write_grpo_parquet(samples, tmp_path / "q3.parquet", *QWEN3_VL.train_pixels, family=QWEN3_VL)
    table = pq.read_table(path)
    record = json.loads(table.schema.metadata[FRAME_KEY])
    for bad in ({**record, "frame": "model_pixels"}, {**record, "family": "qwen9"}):
        pq.write_table(table.replace_schema_metadata({FRAME_KEY: json.dumps(bad).encode()}), tmp_path / "bad.parquet")
        with pytest.raises(DataError, match="bad.parquet"):
            read_grpo_parquet(tmp_path / "bad.parquet")


def test_grpo_warns_when_a_parquet_is_in_another_frame_than_the_model(tmp_path, capsys):
    from rexthinker.grpo.trainer import warn_frame_mismatch
    from rexthinker.models.families import QWEN3_5

    main([*SYNTHREF, "--out", str(tmp_path / "px")])
    main([*SYNTHREF, "--out", str(tmp_path / "rel"), "--family", "qwen3_vl"])
    pixels, relative = (str(tmp_path / name / "train" / "grpo" / "synthref.parquet") for name in ("px", "rel"))
    assert warn_frame_mismatch([pixels], QWEN2_5_VL) == warn_frame_mismatch([relative], QWEN3_VL) == []
    assert warn_frame_mismatch([relative], QWEN3_5) == []  # the same 0-1000 frame
    (warning,) = warn_frame_mismatch([pixels, str(tmp_path / "px" / "train")], QWEN3_VL)  # a folder is not checked
    assert pixels in warning and "--family qwen3_vl" in warning and "model_pixels" in warning
    (warning,) = warn_frame_mismatch([relative], QWEN2_5_VL)
    assert relative in warning and "--family qwen2_5_vl" in warning
    assert capsys.readouterr().out.count("[grpo] warning") == 2
