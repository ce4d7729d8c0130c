"""Generate answers for samples with transformers or vLLM, through the shared prompt builder.

Both backends get the same prompt text and the same decoded image, so their outputs are comparable
and a checkpoint's numbers do not depend on the backend beyond sampling noise. Both also check, per
sample, that the model really saw the image in the frame the hints were written in (contracts §1.6):
transformers through ``image_grid_thw`` (``W' = grid_w * 14``), vLLM through the number of image
tokens it expanded; vLLM is told the processor's pixel limits with every request, so an engine built
with other limits still resizes like the prompt builder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rexthinker.coords import PATCH_FACTOR
from rexthinker.data.sample import RefSample
from rexthinker.prompts import PromptInfo, build_messages, pixel_limits

PATCH = 14  # vision patch size: image_grid_thw counts patches of this many pixels


@dataclass
class Generation:
    sample: RefSample
    info: PromptInfo
    prompt: str  # the chat-template text given to the model
    text: str  # the completion
    num_tokens: int


class FrameMismatch(RuntimeError):
    """The model saw the image at another size than the one the hint boxes were written for."""


def check_grid(info: PromptInfo, grid_thw) -> None:
    """``info.model_size`` must equal ``(grid_w * 14, grid_h * 14)`` of the processor's ``image_grid_thw`` row."""
    _, grid_h, grid_w = (int(v) for v in grid_thw)
    seen = (grid_w * PATCH, grid_h * PATCH)
    if seen != tuple(info.model_size):
        raise FrameMismatch(f"prompt written for a {info.model_size} model frame, but the processor made {seen}")


def check_image_tokens(info: PromptInfo, count: int) -> None:
    """``count`` image tokens (after the 2x2 merge) must cover exactly ``info.model_size``."""
    width, height = info.model_size
    expected = (width // PATCH_FACTOR) * (height // PATCH_FACTOR)
    if count != expected:
        raise FrameMismatch(
            f"prompt written for a {info.model_size} model frame ({expected} image tokens), but the engine expanded "
            f"the image to {count} tokens: its pixel limits differ from the processor's"
        )


def render(samples: Sequence[RefSample], processor, template: str = "train", instruction: str = "system"):
    lo, hi = pixel_limits(processor)
    for sample in samples:
        messages, info = build_messages(sample, lo, hi, template=template, instruction=instruction)
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        yield sample, info, prompt, messages[-1]["content"][0]["image"]


@torch.no_grad()
def hf_generate(
    model, processor, samples: Sequence[RefSample], *, max_new_tokens: int = 1024, batch_size: int = 8,
    template: str = "train", instruction: str = "system", do_sample: bool = False, temperature: float = 1.0,
    top_p: float = 1.0, progress: bool = False,
) -> list[Generation]:  # fmt: skip
    """Batched, left-padded ``model.generate``; greedy unless ``do_sample``."""
    tokenizer = processor.tokenizer
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    rendered = list(render(samples, processor, template, instruction))
    out: list[Generation] = []
    device = next(model.parameters()).device
    batches = range(0, len(rendered), batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="generate (hf)", unit="batch")
    try:
        for start in batches:
            chunk = rendered[start : start + batch_size]
            inputs = processor(text=[c[2] for c in chunk], images=[c[3] for c in chunk], padding=True, return_tensors="pt").to(device)
            kwargs = dict(do_sample=do_sample, max_new_tokens=max_new_tokens)
            if do_sample:
                kwargs.update(temperature=temperature, top_p=top_p)
            for (_, info, _, _), grid in zip(chunk, inputs["image_grid_thw"]):
                check_grid(info, grid)
            ids = model.generate(**inputs, **kwargs)[:, inputs["input_ids"].shape[1] :]
            for (sample, info, prompt, _), row in zip(chunk, ids):
                row = row[row != tokenizer.pad_token_id]
                text = tokenizer.decode(row, skip_special_tokens=True)
                out.append(Generation(sample, info, prompt, text, int(row.numel())))
    finally:
        tokenizer.padding_side = side
    return out


def vllm_generate(
    llm, processor, samples: Sequence[RefSample], sampling_params, *, template: str = "train",
    instruction: str = "system", progress: bool = False,
) -> list[Generation]:  # fmt: skip
    """One ``llm.generate`` call over all samples (vLLM batches internally). The prompt is text
    with a single ``<|image_pad|>`` per image; vLLM expands it itself, resizing with the pixel limits
    of ``processor`` (passed with each request)."""
    rendered = list(render(samples, processor, template, instruction))
    lo, hi = pixel_limits(processor)
    resize = {"size": {"shortest_edge": lo, "longest_edge": hi}}
    requests = [
        {"prompt": prompt, "multi_modal_data": {"image": image}, "mm_processor_kwargs": resize}
        for _, _, prompt, image in rendered
    ]
    results = llm.generate(requests, sampling_params, use_tqdm=progress)
    image_token = processor.image_token_id
    out = []
    for (sample, info, prompt, _), result in zip(rendered, results):
        check_image_tokens(info, sum(1 for t in result.prompt_token_ids if t == image_token))
        completion = result.outputs[0]
        out.append(Generation(sample, info, prompt, completion.text, len(completion.token_ids)))
    return out
