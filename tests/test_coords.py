"""Coordinate frames (contracts §1.6): smart_resize parity, truncation/clamping, the reverse map."""

from __future__ import annotations

import random

import pytest

from rexthinker import coords


def test_smart_resize_matches_qwen_vl_utils_and_transformers_on_many_sizes():
    from qwen_vl_utils import smart_resize as reference
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as processor_resize

    rng = random.Random(0)
    limits = [(coords.TRAIN_MIN_PIXELS, coords.TRAIN_MAX_PIXELS), (coords.EVAL_MIN_PIXELS, coords.TRAIN_MAX_PIXELS), (3136, 50176)]
    for _ in range(3000):
        h, w = rng.randint(20, 4000), rng.randint(20, 4000)
        if max(h, w) / min(h, w) > 150:
            continue
        lo, hi = rng.choice(limits)
        ours = coords.smart_resize(h, w, 28, lo, hi)
        assert ours == processor_resize(h, w, 28, lo, hi), (h, w, lo, hi)
        expected = reference(h, w, 28, lo, hi)
        if min(expected) > 0:  # qwen-vl-utils floors a thin side to 0; the processor keeps one patch
            assert ours == expected, (h, w, lo, hi)


def test_smart_resize_matches_the_processor_grid(tiny_model_path):
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_path)
    lo, hi = processor.image_processor.size["shortest_edge"], processor.image_processor.size["longest_edge"]
    for w, h in [(300, 200), (451, 277), (1000, 90), (64, 64)]:
        grid = processor.image_processor(images=[Image.new("RGB", (w, h))], return_tensors="pt")["image_grid_thw"][0]
        assert coords.model_frame_size(w, h, lo, hi) == (int(grid[2]) * 14, int(grid[1]) * 14)


def test_smart_resize_rejects_bad_sizes():
    with pytest.raises(ValueError, match="positive"):
        coords.smart_resize(0, 10)
    with pytest.raises(ValueError, match="aspect ratio"):
        coords.smart_resize(10, 5000)


@pytest.mark.parametrize(
    "box, original, model, expected",
    [
        ([0, 0, 100, 50], (100, 50), (56, 28), [0, 0, 55, 27]),  # far edge clamps to W'-1
        ([10, 10, 20, 20], (100, 100), (56, 56), [5, 5, 11, 11]),  # 5.6 -> 5, 11.2 -> 11 (truncation)
        ([-5, -1, 30, 30], (100, 100), (56, 56), [0, 0, 16, 16]),  # negatives clamp to 0
        ([99.9, 0, 100, 1], (100, 100), (28, 28), [27, 0, 27, 0]),
    ],
)
def test_to_model_frame_truncates_and_clamps(box, original, model, expected):
    assert coords.to_model_frame(box, original, model) == expected


def test_to_original_frame_rescales_without_clamping():
    assert coords.to_original_frame([28, 14, 56, 60], (56, 56), (112, 224)) == [56.0, 56.0, 112.0, 240.0]


def test_xywh_round_trip():
    assert coords.xywh_to_xyxy([10, 20, 5, 6]) == [10, 20, 15, 26]
    assert coords.xyxy_to_xywh([10, 20, 15, 26]) == [10, 20, 5, 6]
