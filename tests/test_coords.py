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


def test_smart_resize_matches_the_processor_at_the_qwen3_factor():
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as processor_resize

    rng = random.Random(1)
    for _ in range(1000):
        h, w = rng.randint(20, 4000), rng.randint(20, 4000)
        if max(h, w) / min(h, w) > 150:
            continue
        assert coords.smart_resize(h, w, 32, 16 * 32 * 32, 1280 * 32 * 32) == processor_resize(h, w, 32, 16 * 32 * 32, 1280 * 32 * 32)


@pytest.mark.parametrize(
    "box, original, expected",
    [
        ([30, 20, 150, 100], (300, 200), [100, 100, 500, 500]),
        ([0, 0, 300, 200], (300, 200), [0, 0, 1000, 1000]),  # the far edge is 1000, inside the range
        ([-5, -1, 301, 250], (300, 200), [0, 0, 1000, 1000]),  # out of the image: clamped to [0, 1000]
        ([1, 1, 2, 2], (3000, 3000), [0, 0, 0, 0]),  # 0.33 and 0.67 truncate to 0
        ([99.9, 0, 100, 1], (100, 100), [999, 0, 1000, 10]),
    ],
)
def test_to_relative_frame_truncates_and_clamps(box, original, expected):
    assert coords.to_relative_frame(box, original) == expected
    assert coords.box_frame(coords.RELATIVE_1000, *original).encode(box, original) == expected


def test_relative_frame_decodes_like_the_qwen3_vl_cookbook():
    frame = coords.box_frame(coords.RELATIVE_1000, 300, 200)
    assert frame == coords.BoxFrame(coords.RELATIVE_1000, (1000, 1000))
    assert frame.decode([100, 100, 500, 500], (300, 200)) == [30.0, 20.0, 150.0, 100.0]
    assert frame.decode([0, 0, 1200, 1000], (300, 200)) == [0.0, 0.0, 360.0, 200.0]  # no clamping


def test_pixel_frame_is_the_contract_frame_at_any_factor():
    frame = coords.box_frame(coords.MODEL_PIXELS, 300, 200, min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28)
    assert frame.size == coords.model_frame_size(300, 200, 4 * 28 * 28, 64 * 28 * 28) == (252, 168)
    assert frame.encode([0, 0, 300, 200], (300, 200)) == coords.to_model_frame([0, 0, 300, 200], (300, 200), (252, 168))
    # Qwen3-VL geometry: 300x200 -> round(9.4) x round(6.25) tokens of 32 px, within 4..64 tokens.
    frame32 = coords.box_frame(coords.MODEL_PIXELS, 300, 200, factor=32, min_pixels=4 * 32 * 32, max_pixels=64 * 32 * 32)
    assert frame32.size == (288, 192)
    assert frame32.encode([30, 20, 300, 200], (300, 200)) == [28, 19, 287, 191]


@pytest.mark.parametrize("kind", coords.FRAME_KINDS)
def test_round_trip_loses_less_than_one_frame_unit(kind):
    """original -> frame -> original lands at most one frame unit below the input (truncation), for
    every in-image coordinate. (frame -> original -> frame is not always the identity: the float
    rescale can land a hair under an integer, which truncation then drops by one.)"""
    rng = random.Random(2)
    for _ in range(300):
        w, h = rng.randint(30, 3000), rng.randint(30, 3000)
        if max(w, h) / min(w, h) > 150:
            continue
        frame = coords.box_frame(kind, w, h)
        unit_x, unit_y = w / frame.size[0], h / frame.size[1]
        box = [rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, h)]
        back = frame.decode(frame.encode(box, (w, h)), (w, h))
        for i, (v, b) in enumerate(zip(box, back)):
            unit = unit_x if i % 2 == 0 else unit_y
            assert 0 <= v - b < unit + 1e-9, (kind, w, h, box, back)


def test_unknown_frame_kind_is_refused():
    with pytest.raises(ValueError, match="unknown box frame"):
        coords.box_frame("normalized_0_1", 100, 100)
