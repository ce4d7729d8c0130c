"""The rollout interface shared by the vLLM and transformers backends."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
from PIL import Image


@dataclass
class RolloutConfig:
    backend: Literal["vllm", "hf"] = "vllm"
    n: int = 16  # samples per prompt
    temperature: float = 1.0
    top_p: float = 0.99
    max_new_tokens: int = 4096
    max_model_len: int = 8192  # prompt + response tokens (vLLM)
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.6
    cpu_kv_cache_gib: float = 1.0  # vLLM's KV cache on CPU (the VLLM_CPU_KVCACHE_SPACE variable wins when set)
    enforce_eager: bool = False
    # auto: bfloat16 on CUDA, float32 on CPU, or the family's only CPU dtype (Qwen3.5: bfloat16; generation.engine_settings)
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    # return the sampler's log-prob of each token (Completion.logprobs); the GRPO learner recomputes
    # its own, and vLLM's per-token log-prob bookkeeping costs ~8% of CPU generation time, so off
    logprobs: bool = False
    # vLLM sleep mode: the engine frees its GPU memory (weights offloaded to CPU, KV cache dropped)
    # after each generation and wakes for the weight sync. auto: when colocated on GPUs; never on CPU.
    sleep: bool | Literal["auto"] = "auto"
    extra: dict = field(default_factory=dict)  # passed to vllm.LLM as is


@dataclass
class Request:
    """One prompt: chat-template text holding a single ``<|image_pad|>`` and its image."""

    prompt: str
    image: Image.Image
    seed: int  # sampling seed of this prompt's n completions (reproducible rollouts)


@dataclass
class Completion:
    token_ids: list[int]  # the generated tokens
    text: str  # the assistant turn: what the prompt opened, then the generated text (generation.assistant_turn)
    logprobs: list[float] | None  # the sampler's log-prob of each token, when available
    finish_reason: str | None  # "stop" (end of turn), "length" (hit max_new_tokens) or None


class RolloutEngine(Protocol):
    def generate(self, requests: list[Request], n: int) -> list[list[Completion]]: ...

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None: ...


VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")


def forbidden_token_ids(tokenizer) -> list[int]:
    """Tokens a completion must never contain: the vision placeholders. One sampled ``<|image_pad|>``
    in a response makes the learner's forward fail ("image features and image tokens do not
    match"), and a random or young policy does sample them. Both backends suppress them at
    sampling time; the returned log-probs stay the model's raw ones."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS]
    return sorted({i for i in ids if i is not None and i != tokenizer.unk_token_id})


def sleep_enabled(setting: bool | str, colocated_on_gpu: bool, cuda: bool) -> bool:
    """Whether a vLLM engine sleeps between generations. ``"auto"``: when it shares its GPU with the
    learner (``resources.colocate`` with GPUs); ``True``: whenever CUDA is there; never without
    CUDA (vLLM's sleep mode is CUDA-only, so on CPU the setting is a no-op)."""
    if not cuda:
        return False
    return colocated_on_gpu if setting == "auto" else bool(setting)
