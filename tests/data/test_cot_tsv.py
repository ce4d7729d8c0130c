"""HumanRef-CoT TSV: round trip, xywh storage, seeking random access, b'...' cells, bad rows."""

from __future__ import annotations

import base64
import json
import pickle

import pytest

from rexthinker.coords import xyxy_to_xywh
from rexthinker.data.cot_tsv import CotTsvReader, cot_paths, write_cot_tsv
from rexthinker.data.errors import DataError, ErrorReport


def test_round_trip_and_stored_layout(tmp_path, samples):
    images, annotations, lineidx = write_cot_tsv(samples, tmp_path / "cot" / "x")
    with CotTsvReader(images, annotations, lineidx) as reader:
        assert len(reader) == len(samples)
        assert list(reader) == samples
        assert reader[3] == samples[3] and reader[-1] == samples[-1]
        raw = reader.record(2)
    s = samples[2]
    assert raw.annotation["gt_boxes"] == [xyxy_to_xywh(b) for b in s.candidate_boxes]
    assert raw.annotation["region_map"] == {s.referring: s.answer_indices}
    assert raw.annotation["think"] == s.think
    offsets = [int(x) for x in lineidx.read_text().split()]
    with open(annotations, "rb") as fh:
        data = fh.read()
    assert all(o == 0 or data[o - 1 : o] == b"\n" for o in offsets) and len(offsets) == len(samples)
    key, cell = images.read_bytes()[raw.image_offset :].split(b"\n", 1)[0].split(b"\t")
    assert key.decode() == s.image_name and base64.b64decode(cell) == s.image_bytes


def _garble_rows(path, count):
    """Overwrite the first ``count`` lines with same-length junk, keeping every later offset valid."""
    lines = path.read_bytes().split(b"\n")
    for k in range(count):
        lines[k] = b"#" * len(lines[k])
    path.write_bytes(b"\n".join(lines))


def test_random_access_seeks_instead_of_scanning(tmp_path, samples):
    images, annotations, lineidx = write_cot_tsv(samples[:6], tmp_path / "x")
    _garble_rows(annotations, 4)
    _garble_rows(images, 4)
    reader = CotTsvReader(images, annotations, lineidx)
    assert reader[5] == samples[5] and reader[4] == samples[4]  # earlier rows are never parsed
    with pytest.raises(DataError, match=rf"{annotations} line 1: "):
        reader.record(0)
    # the index was read from the .lineidx file, not rebuilt by reading the annotation file
    lineidx.write_text("".join(f"{o}\n" for o in reader.offsets[4:]))
    short = CotTsvReader(images, annotations, lineidx)
    assert len(short) == 2 and short[0] == samples[4]


def test_index_is_built_in_one_pass_without_lineidx(tmp_path, samples):
    images, annotations, lineidx = write_cot_tsv(samples, tmp_path / "x")
    expected = [int(x) for x in lineidx.read_text().split()]
    lineidx.unlink()
    reader = CotTsvReader(images, annotations)
    assert reader.offsets == expected
    assert list(reader) == samples


def test_reader_survives_pickling(tmp_path, samples):
    prefix = tmp_path / "x"
    write_cot_tsv(samples[:3], prefix)
    reader = CotTsvReader.from_prefix(prefix)
    assert reader[1] == samples[1]
    clone = pickle.loads(pickle.dumps(reader))
    assert clone[2] == samples[2]


def _handmade(tmp_path, rows, image_cells):
    """Write TSV files by hand: ``image_cells`` are raw image-row bytes, ``rows`` (image number, json)."""
    images, annotations, lineidx = cot_paths(tmp_path / "hand")
    offsets, blob = [], b""
    for cell in image_cells:
        offsets.append(len(blob))
        blob += cell + b"\n"
    images.write_bytes(blob)
    lines = [f"{offsets[k]}\t{json.dumps(row) if isinstance(row, dict) else row}\n".encode() for k, row in rows]
    annotations.write_bytes(b"".join(lines))
    positions, at = [], 0
    for line in lines:
        positions.append(at)
        at += len(line)
    lineidx.write_text("".join(f"{p}\n" for p in positions))
    return images, annotations


def test_bytes_repr_wrapper_and_several_referrings(tmp_path, samples):
    s = samples[0]
    cell = b"img.png\tb'" + base64.b64encode(s.image_bytes) + b"'"
    row = {
        "gt_boxes": [xyxy_to_xywh(b) for b in s.candidate_boxes],
        "region_map": {"the first one": [0], "nobody": []},
        "think": "because",
        "source": "humanref",
    }
    reader = CotTsvReader(*_handmade(tmp_path, [(0, row)], [cell]))
    first, second = reader.samples(0)
    assert first.image_bytes == s.image_bytes and first.image_size == s.image_size
    assert first.candidate_boxes == s.candidate_boxes and first.answer_boxes == [s.candidate_boxes[0]]
    assert second.referring == "nobody" and second.is_rejection
    assert (first.id, second.id) == ("0#0", "0#1") and first.image_name == "img.png"
    assert first.extra == {"source": "humanref"} and first.think == "because"
    assert reader[0] == first and list(reader) == [first, second]


def test_bad_rows_raise_or_are_skipped(tmp_path, samples):
    s = samples[0]
    good_cell = b"a.png\t" + base64.b64encode(s.image_bytes)
    row = {"gt_boxes": [xyxy_to_xywh(b) for b in s.candidate_boxes], "region_map": {"x": [0]}}
    cells = [good_cell, b"b.png\t!!not base64!!", b"c.png\t" + base64.b64encode(s.image_bytes[:150])]
    rows = [(0, row), (0, "{broken json"), (1, row), (2, row), (0, {**row, "region_map": {"x": [99]}})]
    paths = _handmade(tmp_path, rows, cells)
    with pytest.raises(DataError, match=rf"{paths[1]} line 2: annotation is not valid JSON"):
        list(CotTsvReader(*paths))
    report = ErrorReport()
    reader = CotTsvReader(*paths, on_error="skip", report=report)
    assert [x.referring for x in reader] == ["x"]
    expected = [(2, "bad_json"), (3, "bad_base64"), (4, "bad_image"), (5, "bad_index")]
    assert [(e.line, e.kind) for e in report.errors] == expected
    assert reader.samples(2) == []
    with pytest.raises(DataError, match="line 3"):
        reader[2]
