"""The prompt builder: exact strings (contracts §1.4, §2), model-frame hints, shuffling."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from rexthinker import prompts
from rexthinker.boxes import box_iou
from rexthinker.contracts import answer, hint
from rexthinker.contracts.completion import parse_completion
from rexthinker.coords import MODEL_PIXELS, RELATIVE_1000, BoxFrame, model_frame_size, to_model_frame
from rexthinker.data.sample import RefSample
from rexthinker.models.families import QWEN2_5_VL, QWEN3_VL


def _sample(**kw) -> RefSample:
    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (128, 128, 128)).save(buf, format="PNG")
    base = dict(
        id="s0", image_name="a.png", referring="the man in red", candidate_boxes=[[10, 20, 110, 220], [300, 40, 400, 470], [500, 5, 639, 479]],
        answer_boxes=[[500, 5, 639, 479], [10, 20, 110, 220]], image_bytes=buf.getvalue(), image_size=(640, 480), think="- Person 1: red → ✅",
    )  # fmt: skip
    base.update(kw)
    return RefSample(**base)


def test_problem_string_is_exactly_the_released_layout():
    problem = hint.grpo_problem("the man in red", "person", [[1, 2, 3, 4], [5, 6, 7, 8]])
    assert problem == (
        '<image>Hint: Object and its coordinates in this image: {"person": [[1, 2, 3, 4], [5, 6, 7, 8]]}\n'
        "Please detect the man in red in this image."
    )


def test_eval_template_and_answer_json():
    assert hint.user_text("x", "person", [[1, 2, 3, 4]], "humanref_eval") == (
        'Hint: {"person": [[1, 2, 3, 4]]}\nLocate x in the image and answer the question in json format.'
    )
    assert answer.answer_json([[94, 45, 445, 271]], "x") == '```json\n[{"bbox_2d": [94, 45, 445, 271], "label": "x"}]\n```'
    assert answer.answer_json([], "x") == "```json\n[]\n```"
    with pytest.raises(KeyError, match="unknown prompt template"):
        hint.user_text("x", "person", [], "nope")


def test_think_prompt_is_byte_exact():
    assert prompts.THINK_PROMPT.startswith("A conversation between User and Assistant. The user asks a question")
    assert prompts.THINK_PROMPT.endswith("<think> reasoning process here </think><answer> answer here </answer>.")
    assert "  " not in prompts.THINK_PROMPT


def test_messages_carry_model_frame_hints():
    sample = _sample()
    messages, info = prompts.build_messages(sample, min_pixels=3136, max_pixels=50176)
    model = model_frame_size(640, 480, 3136, 50176)
    assert info.model_size == model
    assert info.hint_boxes == [to_model_frame(b, (640, 480), model) for b in sample.candidate_boxes]
    assert info.answer_boxes == [info.hint_boxes[0], info.hint_boxes[2]]  # sorted by hint position
    assert messages[0] == {"role": "system", "content": [{"type": "text", "text": prompts.THINK_PROMPT}]}
    text = messages[1]["content"][1]["text"]
    assert text == hint.user_text("the man in red", "person", info.hint_boxes)
    assert messages[1]["content"][0]["image"].size == (640, 480)


def test_boxes_already_in_the_model_frame_are_used_verbatim():
    model = model_frame_size(640, 480, 3136, 50176)
    hints = [[1, 2, 30, 40], [50, 60, 70, 80]]
    sample = _sample(candidate_boxes=hints, answer_boxes=[hints[1]], box_frame=model)
    assert prompts.prompt_boxes(sample, 3136, 50176).hint_boxes == hints


def test_an_image_already_the_model_frames_size_still_has_its_boxes_mapped():
    """Contracts 1.6 maps original pixels with truncation and a clamp to W'-1 even when W' = W: a box
    ending on the right edge (x1 = W) is W - 1 in the prompt, as in the GRPO parquet written from it."""
    buf = io.BytesIO()
    Image.new("RGB", (224, 140), (128, 128, 128)).save(buf, format="PNG")
    boxes = [[157, 30, 224, 131], [18, 36, 64, 140]]
    sample = _sample(candidate_boxes=boxes, answer_boxes=[boxes[0]], image_bytes=buf.getvalue(), image_size=(224, 140))
    assert model_frame_size(224, 140, 3136, 50176) == (224, 140)
    info = prompts.prompt_boxes(sample, 3136, 50176)
    assert info.hint_boxes == [[157, 30, 223, 131], [18, 36, 64, 139]] == [to_model_frame(b, (224, 140), (224, 140)) for b in boxes]
    declared = _sample(candidate_boxes=info.hint_boxes, answer_boxes=info.answer_boxes, image_bytes=buf.getvalue(),
                       image_size=(224, 140), box_frame=(224, 140))  # fmt: skip
    assert prompts.prompt_boxes(declared, 3136, 50176) == info


def test_user_suffix_placement_has_no_system_message():
    messages, _ = prompts.build_messages(_sample(), 3136, 50176, instruction="user_suffix")
    assert [m["role"] for m in messages] == ["user"]
    assert messages[0]["content"][1]["text"].endswith(" " + prompts.THINK_PROMPT[:-1])


def test_shuffle_is_seeded_and_keeps_answers_consistent():
    sample = _sample(candidate_boxes=[[i * 10, 0, i * 10 + 5, 5] for i in range(8)], answer_boxes=[[30, 0, 35, 5]])
    a = prompts.prompt_boxes(sample, 3136, 50176, shuffle_seed=7)
    b = prompts.prompt_boxes(sample, 3136, 50176, shuffle_seed=7)
    assert a == b and sorted(a.order) == list(range(8)) and a.order != list(range(8))
    assert a.answer_boxes[0] in a.hint_boxes
    assert a.hint_boxes[a.order.index(3)] == a.answer_boxes[0]
    with pytest.raises(ValueError, match="shuffle"):
        prompts.target_text(sample, a)


def test_target_text_layout():
    sample = _sample()
    _, info = prompts.build_messages(sample, 3136, 50176)
    assert prompts.target_text(sample, info) == (
        "<think>- Person 1: red → ✅</think><answer>" + answer.answer_json(info.answer_boxes, "the man in red") + "</answer>"
    )


def test_qwen2_5_vl_is_the_default_family_and_writes_model_pixels():
    sample = _sample()
    default, info = prompts.build_messages(sample, 3136, 50176)
    assert prompts.build_messages(sample, 3136, 50176, family=QWEN2_5_VL) == (default, info)
    assert info.family == QWEN2_5_VL and info.frame == BoxFrame(MODEL_PIXELS, info.model_size)


def test_qwen3_vl_prompt_states_0_1000_hints_and_its_target_decodes_to_the_original_boxes():
    sample = _sample()
    lo, hi = QWEN3_VL.train_pixels
    messages, info = prompts.build_messages(sample, lo, hi, family=QWEN3_VL)
    assert info.frame == BoxFrame(RELATIVE_1000, (1000, 1000))
    assert info.model_size == model_frame_size(640, 480, lo, hi, factor=32) != info.frame.size  # what the vision tower sees
    # int(x / 640 * 1000), int(y / 480 * 1000): 10 -> 15, 20 -> 41, 639 -> 998, 479 -> 997
    assert info.hint_boxes == [[15, 41, 171, 458], [468, 83, 625, 979], [781, 10, 998, 997]]
    assert messages[-1]["content"][1]["text"] == hint.user_text("the man in red", "person", info.hint_boxes)
    assert info.answer_boxes == [info.hint_boxes[0], info.hint_boxes[2]]
    written = parse_completion(prompts.target_text(sample, info)).answer.boxes
    decoded = [info.frame.decode(box, info.image_size) for box in written]
    for got, want in zip(decoded, sorted(sample.answer_boxes)):
        # encoding truncates to whole thousandths: back within one of them (0.64 x 0.48 px), below the original
        assert all(0 <= w - g < (640 if i % 2 == 0 else 480) / 1000 for i, (g, w) in enumerate(zip(got, want)))
        assert box_iou(got, want) > 0.98  # 0.988 for the 100 x 200 px box, 0.995 for the 139 x 474 px one


def test_qwen3_vl_refuses_a_trace_that_states_model_frame_boxes():
    sample = _sample(think="- Person 1 [1, 2, 30, 40]: red → ✅")
    _, info = prompts.build_messages(sample, 3136, 50176)
    assert "[1, 2, 30, 40]" in prompts.target_text(sample, info)  # Qwen2.5-VL: the trace's own frame
    _, info = prompts.build_messages(sample, *QWEN3_VL.train_pixels, family=QWEN3_VL)
    with pytest.raises(ValueError, match="trace states boxes"):
        prompts.target_text(sample, info)
    assert prompts.target_text(_sample(), info).startswith("<think>- Person 1: red")  # a trace without boxes is fine


def test_pixel_limits_reads_the_processor(tiny_model_path):
    from transformers import AutoProcessor

    from rexthinker.models.tiny import SPECS

    processor = AutoProcessor.from_pretrained(tiny_model_path)
    assert prompts.pixel_limits(processor) == (SPECS["tiny"].min_pixels, SPECS["tiny"].max_pixels)
