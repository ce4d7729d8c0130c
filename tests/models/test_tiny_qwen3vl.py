"""The tiny Qwen3-VL checkpoint: loads with Auto* classes as the qwen3_vl family, its processor
resizes with the family's factor, and vLLM and transformers agree on greedy tokens and log-probs."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from rexthinker import coords
from rexthinker.models import families, tiny_qwen3vl
from rexthinker.prompts import THINK_PROMPT

from .test_tiny import _image, _messages, teacher_forced_logprobs  # the same scene and chat as the Qwen2.5-VL checks


@pytest.fixture(scope="module")
def qwen3vl_path():
    return tiny_qwen3vl.get("tiny")


def test_specs_use_head_sizes_vllm_cpu_accepts():
    for spec in tiny_qwen3vl.SPECS.values():
        assert spec.head_dim in (32, 64, 128) and spec.vision_hidden // spec.vision_heads in (32, 64, 128), spec.name
        assert sum(spec.mrope_section) * 2 == spec.head_dim, spec.name
        assert int(spec.num_position_embeddings**0.5) ** 2 == spec.num_position_embeddings, spec.name


def test_checkpoint_is_the_qwen3_vl_family_and_its_processor_uses_the_family_factor(qwen3vl_path):
    from transformers import AutoProcessor

    family = families.family_of(qwen3vl_path)
    assert family is families.QWEN3_VL
    # transformers always interleaves Qwen3-VL's rotary sections; vLLM only when the config says so
    # (without the flag its log-probs drift from transformers' by ~2e-2 on this checkpoint).
    config = json.loads((qwen3vl_path / "config.json").read_text())
    assert config["text_config"]["rope_parameters"]["mrope_interleaved"] is family.mrope_interleaved is True
    processor = AutoProcessor.from_pretrained(qwen3vl_path)
    assert type(processor).__name__ == family.processor_class
    lo, hi = processor.image_processor.size["shortest_edge"], processor.image_processor.size["longest_edge"]
    for w, h in [(300, 200), (451, 277), (1000, 90), (64, 64)]:
        grid = processor.image_processor(images=[Image.new("RGB", (w, h))], return_tensors="pt")["image_grid_thw"][0]
        seen = (int(grid[2]) * family.patch_size, int(grid[1]) * family.patch_size)
        assert coords.model_frame_size(w, h, lo, hi, family.factor) == seen, (w, h)
    text = processor.apply_chat_template(_messages(), add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\n" + THINK_PROMPT + "<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert processor.tokenizer.tokenize("<think>") == ["<think>"]


def _hf(path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    return processor, model


def _hf_greedy(path, n_tokens):
    processor, model = _hf(path)
    text = processor.apply_chat_template(_messages(), add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[_image()], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=n_tokens, do_sample=False)
    return processor, model, text, out[0, inputs["input_ids"].shape[1] :].tolist(), inputs


def test_hf_loads_and_generates_from_an_image(qwen3vl_path):
    processor, model, _, new_tokens, inputs = _hf_greedy(qwen3vl_path, 6)
    assert type(model).__name__ == families.QWEN3_VL.model_class
    assert len(new_tokens) >= 1
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == int(inputs["image_grid_thw"].prod()) // 4 == (288 // 32) * (192 // 32)
    visual = {name.split(".")[0] + "." for name, _ in model.model.visual.named_parameters()}
    assert set(families.QWEN3_VL.projector_prefixes) <= visual


# The vLLM checks run in a subprocess: one in-process vLLM engine per test process, and the session's
# engine (tests/conftest.py) holds the Qwen2.5-VL checkpoint.
_VLLM_SCRIPT = """
import json, sys
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from vllm import SamplingParams
from rexthinker.grpo.experience import collate, collate_shared
from rexthinker.rollout.base import Request, RolloutConfig, forbidden_token_ids
from rexthinker.rollout.vllm_engine import VLLMRollout
from tests.models.test_tiny_qwen3vl import _image, _messages
from tests.rollout.test_weight_sync import logprob_diffs, perturb

path = sys.argv[1]
processor = AutoProcessor.from_pretrained(path)
prompt = processor.apply_chat_template(_messages(), add_generation_prompt=True, tokenize=False)
cfg = RolloutConfig(temperature=1.0, top_p=1.0, max_new_tokens=12, max_model_len=2048, enforce_eager=True, logprobs=True)
engine = VLLMRollout(path, cfg, forbidden=forbidden_token_ids(processor.tokenizer))
params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True, logprobs=5)
greedy = engine.llm.generate([{"prompt": prompt, "multi_modal_data": {"image": _image()}}], params, use_tqdm=False)[0].outputs[0]
result = {"greedy_tokens": list(greedy.token_ids),  # and per step the top-5 tokens' log-probs
          "greedy_logprobs": [[[t, lp.logprob] for t, lp in step.items()] for step in greedy.logprobs]}
requests = [Request(prompt, _image(), seed=100), Request(prompt.replace("red", "blue"), _image(), seed=101)]
before = engine.generate(requests, n=2)
perturbed = perturb(AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval())
engine.load_weights((name, p.detach().clone()) for name, p in perturbed.state_dict().items())
after = engine.generate(requests, n=2)
result["sync_changed_samples"] = [[c.token_ids for c in g] for g in before] != [[c.token_ids for c in g] for g in after]
result["sync_diffs"] = {f"{layout.__name__}/{chunk}": max(logprob_diffs(perturbed, processor, requests, after, layout, chunk))
                        for layout, chunk in ((collate, 0), (collate_shared, 0), (collate_shared, 5))}
print("RESULT " + json.dumps(result))
"""


@pytest.mark.vllm
def test_vllm_matches_hf_before_and_after_a_weight_sync(qwen3vl_path):
    """vLLM (fp32, CPU) and transformers on the same prompt and image (DeepStack, learned vision
    positions and interleaved M-RoPE all on the path): the same greedy tokens, and the log-probs of
    each step's top-5 tokens within 1e-3; then, after pushing perturbed weights into the engine, its
    samples' log-probs equal the learner's within 1e-3 in both learner layouts (one pass, shared
    prompt pass, chunked)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _VLLM_SCRIPT, str(qwen3vl_path)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT ") :])
    print({k: v for k, v in result.items() if k != "greedy_logprobs"})

    processor, model, text, hf_tokens, inputs = _hf_greedy(qwen3vl_path, 8)
    vllm_tokens = result["greedy_tokens"]
    assert vllm_tokens[: len(hf_tokens)] == hf_tokens
    hf_logprobs = teacher_forced_logprobs(model, inputs, vllm_tokens)
    diff = max(abs(hf_logprobs[i, t].item() - lp) for i, step in enumerate(result["greedy_logprobs"]) for t, lp in step)
    print(f"greedy: max |log-prob vLLM - HF| over the top-5 tokens of each step = {diff:.2e}")
    assert diff < 1e-3
    # The compared numbers depend on the image (the vision path is really exercised): another image
    # moves them by far more than the tolerance.
    other = processor(text=[text], images=[Image.new("RGB", (300, 200), (20, 200, 20))], return_tensors="pt")
    other_logprobs = teacher_forced_logprobs(model, {**inputs, "pixel_values": other["pixel_values"]}, vllm_tokens)
    assert (other_logprobs - hf_logprobs).abs().max().item() > 1e-2

    assert result["sync_changed_samples"]
    assert max(result["sync_diffs"].values()) <= 1e-3, result["sync_diffs"]


def test_freeze_treats_the_deepstack_mergers_as_projector(qwen3vl_path):
    from rexthinker.models.load import ModelConfig, load_policy

    model, _ = load_policy(str(qwen3vl_path), ModelConfig(freeze_vision=True, freeze_projector=False))
    trainable = {name for name, p in model.model.visual.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith(("merger.", "deepstack_merger_list.")) for name in trainable)
    assert any(name.startswith("deepstack_merger_list.") for name in trainable)
    assert all(p.requires_grad for p in model.model.language_model.parameters())
