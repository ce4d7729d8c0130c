"""Inference: the library call (both backends, boxes or a detector), the command line, reading an
answer back to original pixels, faithfulness, and the picture with its ✅ / ❌ marks."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rexthinker.boxes import box_iou
from rexthinker.contracts.answer import answer_json
from rexthinker.coords import model_frame_size
from rexthinker.data.sample import RefSample, encode_png
from rexthinker.data.synthref import generate
from rexthinker.generation import FrameMismatch, Generation, check_grid, check_image_tokens
from rexthinker.inference import DISPLAY_SIDE, Referrer, draw_result, interpret, read_boxes_file
from rexthinker.models.families import QWEN3_VL
from rexthinker.prompts import prompt_boxes
from rexthinker.viz import ANSWER_COLOR, HINT_COLOR, MARK_COLORS

ROOT = Path(__file__).resolve().parents[1]
CHECK, CROSS, WARN = "\u2705", "\u274c", "\u26a0"


def _trace(checked: set[int], n: int) -> str:
    """A real-looking plan / action / summary trace over ``n`` persons."""
    lines = [
        "OK, the user needs us to detect the person wearing a hat. To accomplish this task, I need to break it "
        "down into the following steps:",
        "- Step 1: Find the people wearing a hat.",
        "",
        "# Step 1: Find the people wearing a hat",
    ]
    for k in range(1, n + 1):
        hat = k in checked
        lines.append(f"- Person {k}: {'a black hat' if hat else 'no hat'} → {WARN if hat else CROSS}")
    lines += ["", "# Summarize and Re-Check answer",
              "Let's now recheck our answer and put ✅ for the target person and ❌ for others"]  # fmt: skip
    for k in range(1, n + 1):
        hat = k in checked
        lines.append(f"- Person {k}: {'wears a hat' if hat else 'no hat'} → {CHECK if hat else CROSS}")
    return "\n".join(lines)


def _generation(sample: RefSample, answer_ks: list[int], checked: set[int] | None = None) -> Generation:
    """A completion answering hints ``answer_ks`` (1-based) after a trace that checks ``checked``."""
    info = prompt_boxes(sample, 16 * 28 * 28, 1280 * 28 * 28)
    boxes = [info.hint_boxes[k - 1] for k in answer_ks]
    think = _trace(set(answer_ks) if checked is None else checked, len(info.hint_boxes))
    text = f"<think>{think}</think><answer>{answer_json(boxes, sample.referring)}</answer>"
    return Generation(sample, info, "prompt", text, 42)


@pytest.fixture(scope="module")
def sample():
    return next(s for s in generate(8, seed=0, split="test") if len(s.candidate_boxes) >= 4)


def _count(image, color) -> int:
    return int((np.asarray(image) == np.asarray(color, dtype=np.uint8)).all(axis=2).sum())


def test_interpret_maps_answers_back_and_names_their_candidates(sample):
    result = interpret(_generation(sample, [3, 1]))
    assert result.answer_candidates == [3, 1] and not result.unfaithful and not result.is_rejection
    (width, height), (mw, mh) = result.info.image_size, result.info.model_size
    for got, k in zip(result.answer_boxes_original, [3, 1]):
        want = sample.candidate_boxes[k - 1]
        # original -> model truncates; back is exact: within one model pixel, below the original value
        assert all(0 <= w - g < (width / mw if i % 2 == 0 else height / mh) for i, (g, w) in enumerate(zip(got, want)))
    assert result.candidates_original == [list(map(float, b)) for b in sample.candidate_boxes]
    assert result.trace.checked == {1, 3}

    assert interpret(_generation(sample, [1], checked={1, 2})).unfaithful
    garbled = interpret(Generation(sample, result.info, "p", "<think>hmm</think><answer>[{'bbox", 3))
    assert garbled.answer_boxes_original == [] and not garbled.is_rejection and garbled.completion.problems
    rejection = interpret(Generation(sample, result.info, "p", "<think>x</think><answer>None</answer>", 3))
    assert rejection.is_rejection and rejection.answer_boxes_original == []


def test_frame_checks_catch_a_resize_mismatch(sample):
    info = prompt_boxes(sample, 16 * 28 * 28, 1280 * 28 * 28)
    mw, mh = info.model_size
    check_grid(info, (1, mh // 14, mw // 14))
    check_image_tokens(info, (mw // 28) * (mh // 28))
    with pytest.raises(FrameMismatch):
        check_grid(info, (1, mh // 14 + 2, mw // 14))
    with pytest.raises(FrameMismatch):
        check_image_tokens(info, (mw // 28) * (mh // 28) - 1)


def test_qwen3_vl_answers_decode_from_0_1000_and_its_frame_is_checked_at_factor_32(sample):
    info = prompt_boxes(sample, *QWEN3_VL.train_pixels, family=QWEN3_VL)
    text = f"<think>x</think><answer>{answer_json([info.hint_boxes[1]], sample.referring)}</answer>"
    result = interpret(Generation(sample, info, "p", text, 3))
    (width, height), box = sample.image_size, info.hint_boxes[1]
    assert result.answer_candidates == [2] and max(box) <= 1000
    assert result.answer_boxes_original == [[v / 1000 * (width if i % 2 == 0 else height) for i, v in enumerate(box)]]
    assert box_iou(result.answer_boxes_original[0], sample.candidate_boxes[1]) > 0.98
    mw, mh = info.model_size
    check_grid(info, (1, mh // 16, mw // 16))
    check_image_tokens(info, (mw // 32) * (mh // 32))
    with pytest.raises(FrameMismatch):
        check_grid(info, (1, mh // 14, mw // 14))


@pytest.mark.parametrize("size", [(64, 40), (4000, 2600)])
def test_draw_result_draws_boxes_marks_and_readable_labels(sample, size):
    """The same answer drawn on a tiny and on a huge image: same layout, marks in their colours."""
    image = sample.load_image().resize(size)
    ratio = (size[0] / sample.image_size[0], size[1] / sample.image_size[1])
    scaled = RefSample(
        id=sample.id, image_name="", referring=sample.referring, category="person", answer_boxes=[],
        candidate_boxes=[[v * ratio[i % 2] for i, v in enumerate(b)] for b in sample.candidate_boxes],
        image_bytes=encode_png(image), image_size=size,
    )  # fmt: skip
    result = interpret(_generation(scaled, [2]))
    picture = draw_result(result, image)
    shown_w = round(size[0] * DISPLAY_SIDE / max(size))
    assert picture.width > 2 * shown_w and picture.height > round(size[1] * DISPLAY_SIDE / max(size))
    assert _count(picture, MARK_COLORS[CHECK]) > 20 and _count(picture, MARK_COLORS[CROSS]) > 20
    assert _count(picture, HINT_COLOR) > 0 and _count(picture, ANSWER_COLOR) > 0
    no_trace = interpret(Generation(scaled, result.info, "p", "<answer>[]</answer>", 1))
    assert _count(draw_result(no_trace, image), MARK_COLORS[CHECK]) == 0


@pytest.mark.vllm
def test_refer_with_vllm_and_draw(sample, tiny_model_path, tiny_vllm, tmp_path):
    """The session engine was built with the tiny model's own pixel limits; other limits travel with
    the request (generation checks the image token count against the prompt's frame)."""
    lo, hi = 16 * 28 * 28, 128 * 28 * 28
    referrer = Referrer(tiny_model_path, "vllm", engine=tiny_vllm, max_new_tokens=16, min_pixels=lo, max_pixels=hi)
    image = sample.load_image()
    result = referrer.refer(image, "person", sample.referring, boxes=sample.candidate_boxes)
    assert result.candidates_original == [list(map(float, b)) for b in sample.candidate_boxes]
    assert result.info.model_size == model_frame_size(*image.size, min_pixels=lo, max_pixels=hi)
    assert result.info.model_size != model_frame_size(*image.size, min_pixels=3136, max_pixels=50176)
    assert json.dumps([[int(v) for v in b] for b in result.info.hint_boxes]) in result.prompt
    assert isinstance(result.raw, str) and 0 < result.num_tokens <= 16
    path = tmp_path / "answer.png"
    draw_result(result, image).save(path)
    with Image.open(path) as written:
        assert written.format == "PNG" and written.width >= 2 * DISPLAY_SIDE * 0.9 and written.height >= 300


@pytest.fixture(scope="module")
def hf_referrer(tiny_model_path):
    return Referrer(tiny_model_path, "hf", max_new_tokens=6, min_pixels=3136, max_pixels=50176)


def test_refer_with_a_detector(sample, hf_referrer):
    from rexthinker.detect import DetectorSpec, load_detector
    from rexthinker.detect import tiny as tiny_detector

    detector = load_detector(DetectorSpec(model=str(tiny_detector.get())))
    image = sample.load_image()
    result = hf_referrer.refer(image, "person", sample.referring, boxes=detector)
    assert result.candidates_original == detector.detect(image, "person")
    assert len(result.info.hint_boxes) == len(result.candidates_original)


def test_command_line_prints_and_saves_png(sample, tiny_model_path, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("infer_cli", ROOT / "scripts" / "infer.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    image_path, boxes_path, vis = tmp_path / "scene.png", tmp_path / "boxes.json", tmp_path / "vis" / "out.png"
    sample.load_image().save(image_path)
    boxes_path.write_text(json.dumps({"person": sample.candidate_boxes}))
    assert read_boxes_file(boxes_path) == [list(map(float, b)) for b in sample.candidate_boxes]
    cli.main([
        "--model", str(tiny_model_path), "--image", str(image_path), "--referring", sample.referring,
        "--boxes", str(boxes_path), "--vis", str(vis), "--backend", "hf", "--max-new-tokens", "6",
        "--min-pixels", "3136", "--max-pixels", "50176",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert f"{len(sample.candidate_boxes)} candidates" in out and "answer" in out and "saved" in out
    with Image.open(vis) as written:
        assert written.format == "PNG" and written.width > 1000


def test_pixel_limits_default_to_the_checkpoints_family(sample, tmp_path, capsys):
    """Without --min/--max-pixels a Qwen3-VL checkpoint is fed at its own family's limits (16..1280
    tokens of 32 x 32 pixels), not Qwen2.5-VL's 28 x 28 constants; explicit limits still win."""
    from rexthinker.coords import RELATIVE_1000
    from rexthinker.models import tiny
    from rexthinker.models.families import QWEN2_5_VL
    from rexthinker.prompts import pixel_limits

    model = tiny.get("tiny", "qwen3_vl")
    referrer = Referrer(model, "hf", max_new_tokens=4)
    assert (referrer.min_pixels, referrer.max_pixels) == pixel_limits(referrer.processor) == QWEN3_VL.train_pixels
    assert QWEN3_VL.train_pixels == (16 * 32 * 32, 1280 * 32 * 32) != QWEN2_5_VL.train_pixels
    image = sample.load_image()
    result = referrer.refer(image, "person", sample.referring, boxes=sample.candidate_boxes)
    assert result.info.model_size == model_frame_size(*image.size, *QWEN3_VL.train_pixels, factor=QWEN3_VL.factor)
    assert result.info.frame.kind == RELATIVE_1000 and 0 < result.num_tokens <= 4
    explicit = Referrer(model, "hf", max_new_tokens=4, min_pixels=4 * 32 * 32, max_pixels=64 * 32 * 32, engine=referrer.engine)
    assert pixel_limits(explicit.processor) == (4 * 32 * 32, 64 * 32 * 32)

    spec = importlib.util.spec_from_file_location("infer_cli", ROOT / "scripts" / "infer.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert (cli.parse_args(["--model", "m", "--image", "i", "--referring", "r", "--boxes", "b", "--vis", "v"]).min_pixels) is None
    image_path, boxes_path = tmp_path / "scene.png", tmp_path / "boxes.json"
    image.save(image_path)
    boxes_path.write_text(json.dumps(sample.candidate_boxes))
    cli.main(["--model", str(model), "--image", str(image_path), "--referring", sample.referring, "--boxes", str(boxes_path),
              "--vis", str(tmp_path / "vis.png"), "--backend", "hf", "--max-new-tokens", "4"])  # fmt: skip
    hints = [[int(v) for v in b] for b in prompt_boxes(sample, *QWEN3_VL.train_pixels, family=QWEN3_VL).hint_boxes]
    assert "saved" in capsys.readouterr().out and (tmp_path / "vis.png").exists()
    assert hints == result.info.hint_boxes
