"""The detector interface on the tiny Grounding DINO (real transformers code path, random weights)
and the shared box selection (clipping, NMS, top-k)."""

from __future__ import annotations

import pytest
from PIL import Image

from rexthinker.detect import DetectorSpec, Detections, caption, load_detector, select
from rexthinker.detect.gdpy import resized_size
from rexthinker.detect.tiny import SPECIAL_IDS


@pytest.fixture(scope="module")
def detector(tiny_detector_path):
    return load_detector(DetectorSpec(model=str(tiny_detector_path), batch_size=2))


@pytest.fixture(scope="module")
def images():
    return [
        Image.new("RGB", (160, 120), (200, 30, 30)),
        Image.new("RGB", (90, 140), (20, 120, 40)),
        Image.new("L", (130, 100), 90),
    ]


def test_tiny_tokenizer_has_the_ids_grounding_dino_hard_codes(detector):
    tokenizer = detector.processor.tokenizer
    for token, index in SPECIAL_IDS.items():
        assert tokenizer.convert_tokens_to_ids(token) == index
    assert tokenizer("person.")["input_ids"] == [101, tokenizer.convert_tokens_to_ids("person"), 1012, 102]


def test_caption_follows_grounding_dino_prompt_rules():
    assert caption("  Traffic   Light ") == "traffic light."
    assert caption("person.") == "person."
    with pytest.raises(ValueError):
        caption("  ")


def test_detect_returns_boxes_inside_the_image(detector, images):
    boxes = detector.detect(images[0], "person")
    assert boxes and all(len(b) == 4 for b in boxes)
    assert all(0 <= b[0] < b[2] <= 160 and 0 <= b[1] < b[3] <= 120 for b in boxes)
    assert detector.detect(images[0], "person", box_threshold=1.0) == []


def test_batches_of_same_size_images_give_the_same_boxes_as_single_images(detector, images):
    """Prompts of different lengths are padded and masked; images of one size need no padding, so
    a batch must reproduce the single-image results (mixed sizes are padded, as in any DETR batch)."""
    same = [images[0], images[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT), images[0].rotate(180)]
    categories = ["person", "red car", "helmet"]
    batched = detector.detect_batch(same, categories)
    for image, category, found in zip(same, categories, batched):
        alone = detector.detect_batch([image], [category])[0]
        assert len(alone) == len(found)
        for a, b in zip(alone.boxes, found.boxes):
            assert a == pytest.approx(b, abs=1e-3)
    assert all(len(d.scores) == len(d.boxes) == len(d.labels) for d in batched)


def test_top_k_and_nms_select_from_the_default_output(detector, images):
    everything = detector.detect_batch(images[:1], ["person"])[0]
    best = detector.detect_batch(images[:1], ["person"], top_k=3)[0]
    assert len(best) == 3 and all(b in everything.boxes for b in best.boxes)
    assert sorted(best.scores, reverse=True) == sorted(everything.scores, reverse=True)[:3]
    thinned = detector.detect_batch(images[:1], ["person"], nms_iou=0.3)[0]
    assert 0 < len(thinned) <= len(everything) and all(b in everything.boxes for b in thinned.boxes)


def test_select_clips_drops_empty_boxes_and_keeps_query_order():
    found = Detections(
        boxes=[[-5, -5, 20, 20], [50, 50, 60, 60], [120, 10, 140, 30], [0, 0, 19, 19], [5, 5, 20, 20]],
        scores=[0.5, 0.9, 0.8, 0.7, 0.6],
        labels=list("abcde"),
    )
    out = select(found, (100, 100))
    assert out.boxes == [[0, 0, 20, 20], [50, 50, 60, 60], [0, 0, 19, 19], [5, 5, 20, 20]]  # c lies outside
    assert out.labels == ["a", "b", "d", "e"]
    assert select(found, (100, 100), top_k=2).labels == ["b", "d"]  # best two, query order kept
    assert select(found, (100, 100), nms_iou=0.5).labels == ["b", "d"]  # a and e overlap d (0.7) heavily


def test_detector_spec_is_validated():
    with pytest.raises(ValueError, match="unknown detector backend"):
        DetectorSpec(backend="yolo")
    with pytest.raises(ValueError, match="config"):
        DetectorSpec(backend="groundingdino-py", model="w.pth")
    with pytest.raises(ValueError, match="top_k"):
        DetectorSpec(top_k=0)


def test_groundingdino_py_resize_rule():
    assert resized_size(640, 480) == (1066, 800)
    assert resized_size(480, 640) == (800, 1066)
    assert resized_size(2000, 500) == (1332, 333)  # long side capped: the short side shrinks


@pytest.mark.gpu
def test_detector_on_cuda_in_bfloat16(tiny_detector_path, images):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    gpu = load_detector(DetectorSpec(model=str(tiny_detector_path), device="cuda", dtype="bfloat16", batch_size=3))
    cpu = load_detector(DetectorSpec(model=str(tiny_detector_path)))
    found = gpu.detect_batch(images, ["person"] * 3)
    for image, det in zip(images, found):
        assert det.boxes and all(
            0 <= b[0] < b[2] <= image.width and 0 <= b[1] < b[3] <= image.height for b in det.boxes
        )
    assert len(gpu.detect(images[0], "person")) == pytest.approx(len(cpu.detect(images[0], "person")), abs=2)
