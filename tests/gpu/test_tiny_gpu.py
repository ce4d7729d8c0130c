"""GPU checks of the tiny checkpoints (run with ``pytest -m gpu`` on a CUDA machine).

Measures what the CPU suite cannot: the checkpoint in bf16 on CUDA loads and generates from an
image, and its fp32 CUDA logits agree with fp32 CPU logits.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _inputs(path):
    from transformers import AutoProcessor

    from rexthinker.prompts import THINK_PROMPT

    processor = AutoProcessor.from_pretrained(path)
    image = Image.new("RGB", (320, 240), (230, 230, 230))
    ImageDraw.Draw(image).rectangle([40, 60, 100, 200], fill=(200, 30, 30))
    messages = [
        {"role": "system", "content": [{"type": "text", "text": THINK_PROMPT}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Please detect the person in red."}]},
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return processor, processor(text=[text], images=[image], return_tensors="pt")


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_bf16_generation_on_cuda(name):
    from transformers import AutoModelForImageTextToText

    from rexthinker.models import tiny

    path = tiny.get(name)
    _, inputs = _inputs(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.bfloat16).cuda().eval()
    with torch.no_grad():
        out = model.generate(**inputs.to("cuda"), max_new_tokens=16, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_fp32_cuda_logits_match_cpu(name):
    from transformers import AutoModelForImageTextToText

    from rexthinker.models import tiny

    path = tiny.get(name)
    _, inputs = _inputs(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        cpu = model(**inputs).logits
        gpu = model.cuda()(**inputs.to("cuda")).logits.cpu()
    diff = (cpu - gpu).abs().max().item()
    print(f"{name}: max |logit cpu - logit cuda| = {diff:.2e}")
    assert diff < 1e-3
