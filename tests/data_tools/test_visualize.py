"""``visualize`` and its drawing helpers: RLE and polygon masks, ✅/❌/⚠ drawn in colour (as shapes
where the font lacks the glyph), one PNG per format."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from data_tools.__main__ import main
from rexthinker.contracts.trace import CHECK, CROSS, WARN
from rexthinker.data.cot_tsv import write_cot_tsv
from rexthinker.data.grpo_parquet import write_grpo_parquet
from rexthinker.data.humanref import write_humanref
from rexthinker.rle import decode as decode_rle
from rexthinker.viz import (
    FONT_PATH,
    MARK_COLORS,
    draw_marked_text,
    draw_sample,
    draw_sample_with_masks,
    font,
    font_has_glyph,
    render_trace_panel,
    segmentation_mask,
    wrap_marked_text,
)  # fmt: skip


def _count(image, color, tolerance: int = 0) -> int:
    """Pixels within ``tolerance`` of ``color`` on every channel (glyphs are anti-aliased)."""
    diff = np.abs(np.asarray(image.convert("RGB"), dtype=int) - np.asarray(color))
    return int((diff <= tolerance).all(axis=2).sum())


def test_compressed_and_list_rle_decode():
    """Strings made by pycocotools' encoder for known masks."""
    small = np.zeros((7, 9), bool)
    small[1:5, 2:7] = True
    small[6, 0] = small[0, 8] = True
    assert (decode_rle({"size": [7, 9], "counts": "6183K00000006MM"}) == small).all()
    big = np.zeros((40, 60), bool)
    big[5:30, 10:50] = True
    big[35:38, 0:3] = True
    counts = "S13U1000j7f0`G" + "0" * 77 + "[<"
    assert (decode_rle({"size": [40, 60], "counts": counts}) == big).all()
    assert (decode_rle({"size": [7, 9], "counts": b"6183K00000006MM"}) == small).all()
    assert (decode_rle({"size": [2, 2], "counts": [1, 2, 1]}) == np.array([[False, True], [True, False]])).all()
    with pytest.raises(ValueError, match="covers"):
        decode_rle({"size": [3, 3], "counts": [1, 2]})


def test_polygon_masks():
    mask = segmentation_mask([[2, 2, 8, 2, 8, 6, 2, 6]], (10, 8))
    assert mask.shape == (8, 10) and mask[4, 5] and not mask[0, 0]


def test_masks_are_painted_under_the_boxes(synth_samples):
    s = next(x for x in synth_samples if not x.is_rejection)
    plain, masked = np.asarray(draw_sample(s)), np.asarray(draw_sample_with_masks(s))
    assert (plain != masked).any(axis=2).sum() > 50


@pytest.mark.skipif(not FONT_PATH.exists(), reason="DejaVu Sans not installed")
def test_dejavu_lacks_check_and_cross_but_has_warning():
    assert not font_has_glyph(CHECK) and not font_has_glyph(CROSS) and font_has_glyph(WARN)


def test_marks_are_drawn_in_their_colours():
    text = f"- Person 1: red shirt → {CHECK}\n- Person 2: blue → {CROSS}\n- Person 3: hat → {WARN}\ufe0f"
    f = font(16)
    lines = wrap_marked_text(text, f, 400)
    assert [line[-1] for line in lines] == [CHECK, CROSS, WARN + "\ufe0f"]
    canvas = Image.new("RGB", (420, 80), (255, 255, 255))
    draw_marked_text(ImageDraw.Draw(canvas), (4, 4), lines, f)
    for mark, color in MARK_COLORS.items():
        assert _count(canvas, color, tolerance=60) > 3, mark


def test_wrapping_keeps_lines_within_width():
    f = font(14)
    lines = wrap_marked_text("word " * 60 + f"→ {CHECK}", f, 200)
    assert len(lines) > 5 and lines[-1][-1] == CHECK
    assert all(sum(f.getlength(t) if t[0] not in MARK_COLORS else 14 for t in line) <= 200 for line in lines)


def test_trace_panel_shows_the_image_and_the_trace(synth_samples):
    s = next(x for x in synth_samples if x.think and not x.is_rejection)
    panel = render_trace_panel(s, width=1000)
    assert panel.width == 1000 and panel.height >= s.image_size[1]
    assert _count(panel, MARK_COLORS[CHECK]) > 0 and _count(panel, MARK_COLORS[CROSS]) > 0


@pytest.fixture(scope="module")
def written(tmp_path_factory, synth_samples):
    root = tmp_path_factory.mktemp("viz")
    return {
        "humanref": write_humanref(synth_samples, root / "h").parent,
        "cot": root / "c" / "x",
        "parquet": write_grpo_parquet(synth_samples, root / "g.parquet"),
        "_": write_cot_tsv(synth_samples, root / "c" / "x"),
    }


@pytest.mark.parametrize("fmt, extra, size", [
    ("humanref", ["--num", "6", "--cols", "3"], (3 * 320, 2 * 312)),
    ("parquet", ["--start", "4", "--num", "2", "--tile", "200x150"], (400, 222)),
    ("cot", ["--num", "2"], None),
])  # fmt: skip
def test_cli_renders_each_format(tmp_path, written, fmt, extra, size, capsys):
    out = tmp_path / f"{fmt}.png"
    assert main(["visualize", str(written[fmt]), "--out", str(out), *extra]) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(out) as image:
        assert image.format == "PNG"
        if size:
            assert image.size == size
        else:
            assert image.width == 1200 and _count(image, MARK_COLORS[CHECK]) > 0


def test_cli_selects_ids(tmp_path, written, synth_samples, capsys):
    ids = f"{synth_samples[5].id},{synth_samples[2].id},nope"
    assert main(["visualize", str(written["cot"]), "--out", str(tmp_path / "x.png"), "--ids", ids]) == 0
    printed = capsys.readouterr().out
    assert "ids not found: ['nope']" in printed and "2 samples" in printed
