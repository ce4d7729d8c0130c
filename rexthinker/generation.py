"""Generate answers for samples with transformers or vLLM, through the shared prompt builder.

Both backends get the same prompt text and the same decoded image, so their outputs are comparable
and a checkpoint's numbers do not depend on the backend beyond sampling noise. Both also check, per
sample, that the model really saw the image in the frame the hints were written in (contracts §1.6):
transformers through ``image_grid_thw`` (``W' = grid_w * patch size``), vLLM through the number of
image tokens it expanded; vLLM is told the processor's pixel limits with every request, so an engine
built with other limits still resizes like the prompt builder.

It is the one generation layer: every path that prompts a model (GRPO rollouts and evaluation, SFT
features and evaluation, inference, the demo) renders its requests with :func:`render_request`,
builds its vLLM engine from :func:`engine_settings` and sends :func:`resize_kwargs` with each
request, so the prompts are identical by construction. The model family (``family``, Qwen2.5-VL by
default; :func:`rexthinker.models.families.model_family` decides it for a checkpoint) sets the box
frame of the hints and the patch size the checks count with.

A chat template's generation prompt may already open the assistant turn (Qwen3.5's thinking
template ends it with ``<think>\\n``). :func:`to_generate` is the one function that cuts that opening off
an assistant turn (the SFT target), and :func:`assistant_turn` the one that puts it back in front of
a completion (what rewards, metrics and answers read), so a model is trained on exactly the
tokens it then generates and is scored on the whole turn.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from PIL import Image

from rexthinker.data.sample import RefSample
from rexthinker.models.families import QWEN2_5_VL, Family, model_family
from rexthinker.prompts import PromptInfo, build_messages, pixel_limits
from rexthinker.train.dist import resolve_dtype


@dataclass
class Generation:
    sample: RefSample
    info: PromptInfo
    prompt: str  # the chat-template text given to the model
    text: str  # the assistant turn: what the prompt opened (assistant_turn), then the completion
    num_tokens: int  # generated tokens


class FrameMismatch(RuntimeError):
    """The model saw the image at another size than the one the hint boxes were written for."""


def check_grid(info: PromptInfo, grid_thw) -> None:
    """``info.model_size`` must equal ``(grid_w * p, grid_h * p)`` of the processor's ``image_grid_thw``
    row, ``p`` the family's patch size (``image_grid_thw`` counts patches)."""
    _, grid_h, grid_w = (int(v) for v in grid_thw)
    patch = info.family.patch_size
    seen = (grid_w * patch, grid_h * patch)
    if seen != tuple(info.model_size):
        raise FrameMismatch(f"prompt written for a {info.model_size} model frame, but the processor made {seen}")


def check_image_tokens(info: PromptInfo, count: int) -> None:
    """``count`` image tokens (after the 2x2 merge) must cover exactly ``info.model_size``."""
    width, height = info.model_size
    expected = (width // info.family.factor) * (height // info.family.factor)
    if count != expected:
        raise FrameMismatch(
            f"prompt written for a {info.model_size} model frame ({expected} image tokens), but the engine expanded "
            f"the image to {count} tokens: its pixel limits differ from the processor's"
        )


class Rendered(NamedTuple):
    """One request as every engine receives it."""

    sample: RefSample
    info: PromptInfo
    prompt: str  # the chat-template text, with one <|image_pad|> for the image
    image: Image.Image  # the decoded image the prompt's hints were written for


def render_request(sample: RefSample, processor, template: str = "train", instruction: str = "system",
                   shuffle_seed: int | None = None, family: Family = QWEN2_5_VL) -> Rendered:  # fmt: skip
    """``sample`` through the shared prompt builder at the processor's pixel limits, in ``family``'s
    box frame, and the chat template."""
    lo, hi = pixel_limits(processor)
    messages, info = build_messages(sample, lo, hi, template=template, instruction=instruction, shuffle_seed=shuffle_seed,
                                    family=family)  # fmt: skip
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return Rendered(sample, info, prompt, messages[-1]["content"][0]["image"])


def render(samples: Sequence[RefSample], processor, template: str = "train", instruction: str = "system",
           family: Family = QWEN2_5_VL) -> list[Rendered]:  # fmt: skip
    return [render_request(sample, processor, template, instruction, family=family) for sample in samples]


ASSISTANT_HEADER = "<|im_start|>assistant\n"  # where the generation prompt of every Qwen chat template starts the turn


def opened_turn(prompt: str) -> str:
    """What the generation prompt ending ``prompt`` already wrote of the assistant turn: "" for
    Qwen2.5-VL and Qwen3-VL, ``"<think>\\n"`` for Qwen3.5's thinking template."""
    _, header, opened = prompt.rpartition(ASSISTANT_HEADER)
    if not header:
        raise ValueError(f"the prompt does not end with an assistant turn ({ASSISTANT_HEADER!r}): ...{prompt[-80:]!r}")
    return opened


def to_generate(prompt: str, turn: str) -> str:
    """The part of the assistant ``turn`` the model writes after ``prompt``: ``turn`` without what the
    generation prompt opened (the whitespace the template puts after an opened tag is the template's).
    A turn that does not start the way the template opened it is refused."""
    opened = opened_turn(prompt)
    tag = opened.rstrip()
    if not turn.startswith(tag):
        raise ValueError(f"the chat template opens the assistant turn with {opened!r}, but the turn starts with {turn[:40]!r}")
    return turn[len(tag) :].removeprefix(opened[len(tag) :])


def assistant_turn(prompt: str, generated: str) -> str:
    """The whole assistant turn of a completion ``generated`` after ``prompt``: what the generation
    prompt opened, then the generated text."""
    return opened_turn(prompt) + generated


def resize_kwargs(min_pixels: int, max_pixels: int) -> dict:
    """vLLM's per-request ``mm_processor_kwargs`` that resize an image within these pixel limits."""
    return {"size": {"shortest_edge": min_pixels, "longest_edge": max_pixels}}


def engine_settings(
    model: str, *, family: Family | None = None, seed: int = 0, dtype: str = "auto", max_model_len: int | None = None,
    enforce_eager: bool | None = None, tensor_parallel_size: int = 1, gpu_memory_utilization: float | None = None,
    cpu_kv_cache_gib: float = 1.0, sleep: bool = False, extra: dict | None = None,
) -> dict:  # fmt: skip
    """The keyword arguments of ``vllm.LLM`` for a referring model: one image per prompt, ``dtype``
    "auto" = bf16 on CUDA and fp32 on CPU (or the family's only CPU dtype, ``Family.vllm_cpu_dtype``),
    eager mode on CPU unless ``enforce_eager`` says otherwise, the CPU backend's fixes below, then
    ``extra`` as given. None leaves vLLM's default. ``family`` is the checkpoint's architecture
    (None: read from ``model``'s config, :func:`~rexthinker.models.families.model_family`)."""
    cuda = torch.cuda.is_available()
    family = family or model_family(model)
    if dtype == "auto" and not cuda and family.vllm_cpu_dtype:
        dtype = family.vllm_cpu_dtype
    kwargs = dict(model=str(model), dtype=resolve_dtype(dtype), seed=seed, limit_mm_per_prompt={"image": 1, "video": 0},
                  tensor_parallel_size=tensor_parallel_size, enforce_eager=not cuda if enforce_eager is None else enforce_eager)  # fmt: skip
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    if cuda:
        if gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if tensor_parallel_size > 1 and os.environ.get("VLLM_RAY_BUNDLE_INDICES"):
            kwargs["distributed_executor_backend"] = "ray"  # workers on the bundles the GRPO driver reserved
    else:
        # vLLM 0.32's CPU runner crashes ("CPU Generator does not use offset") when a seeded
        # request's prefill is split across steps; unsplit prefills avoid that path.
        kwargs["enable_chunked_prefill"] = False
        # An explicit size, not vLLM's default share of RAM (0.92), which fails at start-up as
        # soon as other processes (Ray, the learner, the page cache) hold more than 8% of it.
        kwargs["kv_cache_memory_bytes"] = int(cpu_kv_cache_gib * 2**30)
        if family.hybrid:  # vLLM caches a hybrid model's prefixes in "align" mode, which needs chunked prefill
            kwargs["enable_prefix_caching"] = False
    if sleep:
        kwargs["enable_sleep_mode"] = True
    kwargs.update(extra or {})
    return kwargs


def new_engine(model: str, **settings):
    """A ``vllm.LLM`` built from :func:`engine_settings`."""
    from vllm import LLM

    return LLM(**engine_settings(model, **settings))


@torch.no_grad()
def hf_generate(
    model, processor, samples: Sequence[RefSample], *, max_new_tokens: int = 1024, batch_size: int = 8,
    template: str = "train", instruction: str = "system", do_sample: bool = False, temperature: float = 1.0,
    top_p: float = 1.0, progress: bool = False, streamer=None, family: Family = QWEN2_5_VL,
) -> list[Generation]:  # fmt: skip
    """Batched, left-padded ``model.generate``; greedy unless ``do_sample``. ``streamer`` (a transformers
    streamer, one sample only) sees the tokens as they are generated."""
    if streamer is not None and len(samples) != 1:
        raise ValueError(f"a streamer follows one sample, got {len(samples)}")
    tokenizer = processor.tokenizer
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    rendered = render(samples, processor, template, instruction, family)
    out: list[Generation] = []
    device = next(model.parameters()).device
    batches = range(0, len(rendered), batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="generate (hf)", unit="batch")
    try:
        for start in batches:
            chunk = rendered[start : start + batch_size]
            inputs = processor(text=[r.prompt for r in chunk], images=[r.image for r in chunk], padding=True, return_tensors="pt").to(device)
            kwargs = dict(do_sample=do_sample, max_new_tokens=max_new_tokens)
            if do_sample:
                kwargs.update(temperature=temperature, top_p=top_p)
            if streamer is not None:
                kwargs["streamer"] = streamer
            for r, grid in zip(chunk, inputs["image_grid_thw"]):
                check_grid(r.info, grid)
            ids = model.generate(**inputs, **kwargs)[:, inputs["input_ids"].shape[1] :]
            for r, row in zip(chunk, ids):
                row = row[row != tokenizer.pad_token_id]
                text = assistant_turn(r.prompt, tokenizer.decode(row, skip_special_tokens=True))
                out.append(Generation(r.sample, r.info, r.prompt, text, int(row.numel())))
    finally:
        tokenizer.padding_side = side
    return out


def vllm_generate(
    llm, processor, samples: Sequence[RefSample], sampling_params, *, template: str = "train",
    instruction: str = "system", progress: bool = False, family: Family = QWEN2_5_VL,
) -> list[Generation]:  # fmt: skip
    """One ``llm.generate`` call over all samples (vLLM batches internally). The prompt is text
    with a single ``<|image_pad|>`` per image; vLLM expands it itself, resizing with the pixel limits
    of ``processor`` (passed with each request)."""
    rendered = render(samples, processor, template, instruction, family)
    resize = resize_kwargs(*pixel_limits(processor))
    requests = [{"prompt": r.prompt, "multi_modal_data": {"image": r.image}, "mm_processor_kwargs": resize} for r in rendered]
    results = llm.generate(requests, sampling_params, use_tqdm=progress)
    image_token = processor.image_token_id
    out = []
    for r, result in zip(rendered, results):
        check_image_tokens(r.info, sum(1 for t in result.prompt_token_ids if t == image_token))
        completion = result.outputs[0]
        out.append(Generation(r.sample, r.info, r.prompt, assistant_turn(r.prompt, completion.text), len(completion.token_ids)))
    return out
