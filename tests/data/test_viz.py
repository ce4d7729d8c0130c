"""Visualisation: numbered hints, highlighted answers, captioned grid of the expected size."""

from __future__ import annotations

import numpy as np
from PIL import Image

from rexthinker.data.grpo_parquet import read_grpo_parquet, write_grpo_parquet
from rexthinker.viz import ANSWER_COLOR, HINT_COLOR, draw_sample, render_grid


def _count(image, color):
    return int((np.asarray(image) == color).all(axis=2).sum())


def test_draw_sample_marks_hints_and_answers(samples):
    s = next(x for x in samples if not x.is_rejection)
    image = draw_sample(s)
    assert image.size == s.image_size
    assert _count(image, ANSWER_COLOR) > 0 and _count(image, HINT_COLOR) > 0
    rejection = next(x for x in samples if x.is_rejection)
    assert _count(draw_sample(rejection), ANSWER_COLOR) == 0


def test_model_frame_boxes_are_drawn_in_place(tmp_path, samples):
    limits = {"min_pixels": 16 * 28 * 28, "max_pixels": 100 * 28 * 28}
    (s,) = read_grpo_parquet(write_grpo_parquet(samples[:1], tmp_path / "g.parquet", **limits), **limits)
    assert draw_sample(s).size == samples[0].image_size


def test_render_grid_writes_png_of_expected_size(tmp_path, samples):
    path = tmp_path / "grid.png"
    sheet = render_grid(samples[:5], path, cols=4)
    with Image.open(path) as written:
        assert written.format == "PNG" and written.size == (4 * 320, 2 * (240 + 72)) == sheet.size
    narrow = render_grid(samples[:2], tmp_path / "two.png", cols=4, tile_size=(200, 150), caption_height=50)
    assert narrow.size == (2 * 200, 200)
