"""The one generation layer: every path renders its requests and builds its engines the same way."""

from __future__ import annotations

import pytest
import torch

from rexthinker.data.synthref import generate
from rexthinker.generation import engine_settings, render, render_request, resize_kwargs
from rexthinker.models.families import QWEN2_5_VL, QWEN3_5, QWEN3_VL
from rexthinker.prompts import build_messages, pixel_limits
from rexthinker.sft.data import build_features
from rexthinker.train import dist
from rexthinker.train.learner import resolve_precision


@pytest.fixture(scope="module")
def tiny_processor(tiny_model_path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_path)


def test_rendered_request_is_the_prompt_builder_and_chat_template(tiny_processor):
    sample = generate(1, seed=2, split="val")[0]
    lo, hi = pixel_limits(tiny_processor)
    messages, info = build_messages(sample, lo, hi, shuffle_seed=5)
    request = render_request(sample, tiny_processor, shuffle_seed=5)
    assert request.info == info and request.sample is sample
    assert request.prompt == tiny_processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert request.prompt.count("<|image_pad|>") == 1
    assert request.image.size == messages[-1]["content"][0]["image"].size
    assert [r.prompt for r in render([sample], tiny_processor)] == [render_request(sample, tiny_processor).prompt]


def test_sft_features_start_with_the_rendered_prompt(tiny_processor):
    sample = generate(1, seed=3, split="val")[0]
    request = render_request(sample, tiny_processor)
    prompt_ids = tiny_processor(text=[request.prompt], images=[request.image], return_tensors="pt")["input_ids"][0]
    features = build_features(sample, tiny_processor)
    assert torch.equal(features.input_ids[: len(prompt_ids)], prompt_ids)


def test_engine_settings_on_this_machine():
    on_cpu = not torch.cuda.is_available()
    settings = engine_settings("/m", family=QWEN2_5_VL, seed=3, max_model_len=2048, cpu_kv_cache_gib=0.5, extra={"max_num_seqs": 4})
    assert settings["model"] == "/m" and settings["seed"] == 3 and settings["max_model_len"] == 2048
    assert settings["limit_mm_per_prompt"] == {"image": 1, "video": 0} and settings["max_num_seqs"] == 4
    assert settings["dtype"] == ("float32" if on_cpu else "bfloat16")
    if on_cpu:
        assert settings["enable_chunked_prefill"] is False and settings["kv_cache_memory_bytes"] == 2**29
        assert settings["enforce_eager"] is True and "gpu_memory_utilization" not in settings
    assert "max_model_len" not in engine_settings("/m", family=QWEN2_5_VL)
    assert engine_settings("/m", family=QWEN2_5_VL, dtype="bfloat16")["dtype"] == "bfloat16"
    assert engine_settings("/m", family=QWEN2_5_VL, extra={"dtype": "float16"})["dtype"] == "float16"  # extra wins


def test_engine_settings_come_from_the_checkpoints_family(monkeypatch):
    """What vLLM's CPU backend needs of a family is in the family, read from the checkpoint's config:
    Qwen3.5 (hybrid, DeltaNet kernels in bf16 only) gets bf16 for "auto" and no prefix caching;
    an explicit dtype is passed on as asked (vLLM then refuses fp32 itself, loudly)."""
    from rexthinker.models import tiny

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    qwen3_5 = engine_settings(str(tiny.get("tiny", "qwen3_5")))
    assert qwen3_5["dtype"] == "bfloat16" and qwen3_5["enable_prefix_caching"] is False
    assert engine_settings("/m", family=QWEN3_5, dtype="float32")["dtype"] == "float32"
    for family in (QWEN2_5_VL, QWEN3_VL):
        settings = engine_settings("/m", family=family)
        assert settings["dtype"] == "float32" and "enable_prefix_caching" not in settings
    qwen3_vl = str(tiny.get("tiny", "qwen3_vl"))
    assert engine_settings(qwen3_vl) == {**engine_settings("/m", family=QWEN3_VL), "model": qwen3_vl}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    on_gpu = engine_settings("/m", family=QWEN3_5)
    assert on_gpu["dtype"] == "bfloat16" and "enable_prefix_caching" not in on_gpu  # chunked prefill is on there


def test_one_dtype_rule_for_learner_and_engines():
    assert resolve_precision("auto") == dist.compute_dtype()
    assert dist.resolve_dtype("auto") == str(dist.compute_dtype()).removeprefix("torch.")
    assert dist.resolve_dtype("float32") == "float32"


def test_resize_kwargs_name_both_limits():
    assert resize_kwargs(3136, 200704) == {"size": {"shortest_edge": 3136, "longest_edge": 200704}}


@pytest.mark.parametrize(
    "opened, turn, generated",
    [
        ("", "<think>a</think><answer>None</answer>", "<think>a</think><answer>None</answer>"),  # Qwen2.5-VL, Qwen3-VL
        ("<think>\n", "<think>a</think><answer>None</answer>", "a</think><answer>None</answer>"),  # Qwen3.5's thinking template
        ("<think>\n", "<think>\na</think>", "a</think>"),  # the template's newline is not repeated
    ],
)  # fmt: skip
def test_the_turn_less_what_the_generation_prompt_opened_is_what_the_model_writes(opened, turn, generated):
    from rexthinker.generation import assistant_turn, opened_turn, to_generate

    prompt = "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n" + opened
    assert opened_turn(prompt) == opened
    assert to_generate(prompt, turn) == generated
    assert assistant_turn(prompt, generated) == opened + generated


def test_a_turn_that_does_not_start_as_the_template_opened_it_is_refused():
    from rexthinker.generation import opened_turn, to_generate

    with pytest.raises(ValueError, match="opens the assistant turn with '<think>\\\\n'"):
        to_generate("<|im_start|>assistant\n<think>\n", "<answer>None</answer>")
    with pytest.raises(ValueError, match="does not end with an assistant turn"):
        opened_turn("<|im_start|>user\nq<|im_end|>\n")
