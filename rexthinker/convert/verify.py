"""Checks of a written folder: the files hold exactly the expected tensors, ``from_pretrained`` gives
them back bit for bit, its logits on a probe input match the source weights', and vLLM loads it.

Logit tolerances: with the dtype kept, the converted model computes with the very same numbers as
the source, so anything above ``SAME_DTYPE_TOL`` (absolute) is a fault. When ``--dtype`` changes
the precision, rounding moves logits by a fraction of their scale; the check then allows
``CHANGED_DTYPE_RTOL`` times the largest source logit (at least 1), which a wrong tensor exceeds by
far, and the report says the looser bound was used.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from rexthinker.convert.keys import ConversionError, Skeleton, layout_rules, rename

SAME_DTYPE_TOL = 1e-5
CHANGED_DTYPE_RTOL = 0.05


def probe_image():
    """A fixed 112 x 84 picture: a grey background, two coloured blocks (deterministic, no file)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (112, 84), (228, 228, 228))
    draw = ImageDraw.Draw(image)
    draw.rectangle([8, 14, 40, 80], fill=(200, 40, 40))
    draw.rectangle([64, 10, 100, 80], fill=(40, 70, 190))
    return image


def probe_text(processor) -> str:
    from rexthinker.contracts.hint import user_text
    from rexthinker.prompts import THINK_PROMPT

    text = user_text("the person in red", "person", [[8, 14, 40, 80], [64, 10, 100, 80]])
    messages = [
        {"role": "system", "content": [{"type": "text", "text": THINK_PROMPT}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]},
    ]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def probe_inputs(processor) -> dict:
    return dict(processor(text=[probe_text(processor)], images=[probe_image()], return_tensors="pt"))


@torch.no_grad()
def logits(model, inputs: dict) -> torch.Tensor:
    return model.eval()(**inputs).logits.float()


def tolerance(source_dtype: torch.dtype, out_dtype: torch.dtype, source_logits: torch.Tensor) -> tuple[float, str]:
    if source_dtype == out_dtype:
        return SAME_DTYPE_TOL, "dtype kept: absolute bound"
    scale = max(1.0, float(source_logits.abs().max()))
    why = f"precision changed ({_name(source_dtype)} -> {_name(out_dtype)}): {CHANGED_DTYPE_RTOL} x max |source logit|"
    return CHANGED_DTYPE_RTOL * scale, why


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_files(folder: Path, skeleton: Skeleton, dtype: torch.dtype) -> int:
    """Every stored tensor present once, nothing else, all in ``dtype``; returns the number of files."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    index = folder / "model.safetensors.index.json"
    if len(files) > 1 or index.exists():
        listed = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        if listed != [f.name for f in files]:
            raise ConversionError(f"{index}: lists {listed}, the folder holds {[f.name for f in files]}")
    seen: dict[str, str] = {}
    rules = layout_rules(skeleton.family, "hf")
    for file in files:
        with safe_open(str(file), "pt") as handle:
            for key in handle.keys():
                name = rename(key, rules)
                if name in seen:
                    raise ConversionError(f"{folder}: {name!r} stored in both {seen[name]} and {file.name}")
                seen[name] = file.name
                found = handle.get_slice(key).get_dtype()
                if found != _safetensors_dtype(dtype):
                    raise ConversionError(f"{file.name}: {key!r} stored as {found}, expected {_name(dtype)}")
    if set(seen) != skeleton.stored_names:
        missing, extra = sorted(skeleton.stored_names - set(seen)), sorted(set(seen) - skeleton.stored_names)
        raise ConversionError(f"{folder}: written tensors differ from the model's: missing {missing[:5]}, extra {extra[:5]}")
    return len(files)


def _safetensors_dtype(dtype: torch.dtype) -> str:
    return {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}[dtype]


def compare_tensors(model, expected: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    """``model``'s tensors equal ``expected`` cast to ``dtype``, exactly, name for name."""
    state = model.state_dict()
    if set(state) != set(expected):
        raise ConversionError(f"loaded model names differ: {sorted(set(state) ^ set(expected))[:5]}")
    for name, tensor in state.items():
        want = expected[name].to(dtype) if expected[name].is_floating_point() else expected[name]
        if tensor.dtype != want.dtype or not torch.equal(tensor, want):
            diff = (tensor.float() - want.float()).abs().max() if tensor.shape == want.shape else "shape"
            raise ConversionError(f"{name!r}: the written tensor differs from the source (max diff {diff}, dtype {tensor.dtype})")


def check_vllm(folder: Path, processor=None, max_tokens: int = 4) -> str:
    """Load ``folder`` in vLLM (fp32 on CPU) and greedily generate a few tokens from the probe.

    Runs in a child process: shutting a vLLM engine down tears down process-wide state (its
    parallel groups), which would break any other engine living in the calling process."""
    cmd = [sys.executable, "-m", "rexthinker.convert.verify", str(folder), str(max_tokens)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    marked = [line for line in proc.stdout.splitlines() if line.startswith(_MARK)]
    if proc.returncode != 0 or not marked:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise ConversionError(f"vLLM could not load {folder}:\n{tail}")
    tokens = json.loads(marked[-1][len(_MARK) :])
    if not tokens:
        raise ConversionError(f"vLLM loaded {folder} but generated no token")
    return f"{len(tokens)} greedy token(s): {tokens}"


_MARK = "VLLM_TOKENS "


def _generate_in_vllm(folder: Path, max_tokens: int) -> list[int]:
    from transformers import AutoProcessor
    from vllm import LLM, SamplingParams

    processor = AutoProcessor.from_pretrained(folder)
    on_gpu = torch.cuda.is_available()
    llm = LLM(
        model=str(folder), dtype="auto" if on_gpu else "float32", max_model_len=2048, limit_mm_per_prompt={"image": 1},
        seed=0, enforce_eager=not on_gpu, max_num_seqs=1,
    )  # fmt: skip
    prompt = {"prompt": probe_text(processor), "multi_modal_data": {"image": probe_image()}}
    out = llm.generate([prompt], SamplingParams(max_tokens=max_tokens, temperature=0.0), use_tqdm=False)[0].outputs[0]
    return list(out.token_ids)


if __name__ == "__main__":  # the child process of check_vllm
    print(_MARK + json.dumps(_generate_in_vllm(Path(sys.argv[1]), int(sys.argv[2]))), flush=True)
