"""Deterministic small Qwen3-VL checkpoints built from a config, with no download.

The Qwen3-VL counterpart of :mod:`rexthinker.models.tiny` (same tokenizer training, same corpus,
same on-disk cache): the real ``Qwen3VLForConditionalGeneration`` architecture with seeded random
weights, Qwen3-VL's chat template (taken from TRL, like the Qwen2.5-VL one), and its image geometry
(16-pixel patches, 2x2 merge: one image token per 32x32 pixels, mean/std 0.5). What Qwen3-VL adds
over Qwen2.5-VL and the build exercises: learned vision position embeddings resampled to each
image's grid, DeepStack (patch-merger outputs of chosen vision blocks added to the first text
layers), interleaved multimodal rotary sections, q/k norms in the text attention.

    python -m rexthinker.models.tiny_qwen3vl tiny

Head sizes are 32 (text and vision), which vLLM's CPU attention accepts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rexthinker.cache import cache_root, cached_build
from rexthinker.models.tiny import QWEN_SPECIAL_TOKENS, default_corpus, train_tokenizer

# Added (not special) tokens of the released Qwen3-VL tokenizer after Qwen2.5-VL's special ones.
QWEN3_ADDED_TOKENS = ("<tool_response>", "</tool_response>", "<think>", "</think>")

BUILDER_VERSION = 1  # bump when the build procedure changes, so cached builds are not reused


@dataclass(frozen=True)
class Qwen3VLTinySpec:
    """Everything that determines a built checkpoint (and so its cache key)."""

    name: str
    vocab_size: int  # tokenizer size, special and added tokens included
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mrope_section: tuple[int, int, int]  # T/H/W rotary frequencies, summing to head_dim / 2
    vision_hidden: int
    vision_intermediate: int
    vision_depth: int
    vision_heads: int
    num_position_embeddings: int  # learned vision positions, a square grid resampled per image
    deepstack_visual_indexes: tuple[int, ...]  # vision blocks whose merged outputs feed text layers 0, 1, ..
    tie_word_embeddings: bool
    min_pixels: int
    max_pixels: int
    corpus_samples: int = 400
    seed: int = 0

    def key(self) -> str:
        payload = {**dataclasses.asdict(self), "family": "qwen3_vl", "builder_version": BUILDER_VERSION}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


SPECS = {
    "tiny": Qwen3VLTinySpec(
        name="tiny", vocab_size=1024, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2,
        num_kv_heads=1, head_dim=32, mrope_section=(6, 5, 5), vision_hidden=64, vision_intermediate=128,
        vision_depth=2, vision_heads=2, num_position_embeddings=64, deepstack_visual_indexes=(0,),
        tie_word_embeddings=True, min_pixels=4 * 32 * 32, max_pixels=64 * 32 * 32,
    ),
}  # fmt: skip


def qwen3vl_chat_template() -> str:
    """The chat template the released Qwen3-VL checkpoints ship (TRL keeps it byte for byte)."""
    from trl.chat_template_utils import qwen3_vl_chat_template

    return qwen3_vl_chat_template


def build(spec: Qwen3VLTinySpec, out_dir: str | Path, corpus: Iterable[str] | None = None) -> Path:
    """Build the checkpoint for ``spec`` into ``out_dir`` (created) and return it."""
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
    )
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = corpus if corpus is not None else default_corpus(spec.corpus_samples)
    tokenizer = train_tokenizer(corpus, spec.vocab_size - len(QWEN3_ADDED_TOKENS))
    tokenizer.add_tokens(list(QWEN3_ADDED_TOKENS))
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in QWEN_SPECIAL_TOKENS}
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
            num_key_value_heads=spec.num_kv_heads, head_dim=spec.head_dim, max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": list(spec.mrope_section),
                             "mrope_interleaved": True},  # transformers always interleaves; vLLM reads this flag
            pad_token_id=ids["<|endoftext|>"], tie_word_embeddings=spec.tie_word_embeddings,
        ),
        vision_config=dict(
            depth=spec.vision_depth, hidden_size=spec.vision_hidden, intermediate_size=spec.vision_intermediate,
            num_heads=spec.vision_heads, out_hidden_size=spec.hidden_size, patch_size=16, spatial_merge_size=2,
            temporal_patch_size=2, num_position_embeddings=spec.num_position_embeddings,
            deepstack_visual_indexes=list(spec.deepstack_visual_indexes),
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=spec.tie_word_embeddings,
    )  # fmt: skip
    torch.manual_seed(spec.seed)
    model = Qwen3VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"], eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"], do_sample=False, max_new_tokens=1024,
    )
    size = {"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels}
    geometry = dict(patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size, **geometry),
        video_processor=Qwen3VLVideoProcessor(size=size, **geometry),
        tokenizer=tokenizer,
        chat_template=qwen3vl_chat_template(),
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "rexthinker_tiny.json").write_text(json.dumps({"family": "qwen3_vl", "spec": spec.name, "key": spec.key()}) + "\n")
    return out_dir


def get(name: str = "tiny") -> Path:
    """The cached checkpoint folder for a named spec, built on first use (atomic, race-free)."""
    if name not in SPECS:
        raise KeyError(f"unknown tiny Qwen3-VL model {name!r}; choose one of {sorted(SPECS)}")
    spec = SPECS[name]
    target = cache_root() / "models" / f"qwen3vl-{spec.name}-{spec.key()}"
    return cached_build(target, "rexthinker_tiny.json", lambda folder: build(spec, folder))


if __name__ == "__main__":
    import sys

    for arg in sys.argv[1:] or ["tiny"]:
        print(get(arg))
