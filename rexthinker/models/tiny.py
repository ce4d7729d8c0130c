"""Deterministic small Qwen2.5-VL checkpoints built from a config, with no download.

Each checkpoint is the real ``Qwen2_5_VLForConditionalGeneration`` architecture with random weights
(seeded), a byte-level BPE tokenizer trained here with every Qwen2.5-VL special token and the Qwen2
pre-tokenizer, Qwen2.5-VL's chat template, an image processor with small pixel limits and a
generation config. Builds are cached on disk under a key derived from everything that goes into
them, so tests share one build:

    python -m rexthinker.models.tiny tiny     # prints the cached folder, building it if needed
    python -m rexthinker.models.tiny small

``tiny`` (2 text layers, hidden 64) keeps unit tests fast; ``small`` (4 layers, hidden 256) is what
the demo and the benchmarks train. Head sizes are 32 and 64, which vLLM's CPU attention accepts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rexthinker.cache import cache_root, cached_build

# Qwen2.5-VL's added tokens, in the order the released tokenizer lists them.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)  # fmt: skip

BUILDER_VERSION = 1  # bump when the build procedure changes, so cached builds are not reused


@dataclass(frozen=True)
class TinySpec:
    """Everything that determines a built checkpoint (and so its cache key)."""

    name: str
    vocab_size: int  # BPE vocabulary including the special tokens
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    mrope_section: tuple[int, int, int]  # sums to head_dim / 2
    vision_hidden: int
    vision_intermediate: int
    vision_depth: int
    vision_heads: int
    fullatt_block_indexes: tuple[int, ...]
    tie_word_embeddings: bool
    min_pixels: int
    max_pixels: int
    corpus_samples: int = 400  # SynthRef samples whose text trains the tokenizer
    seed: int = 0
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def key(self) -> str:
        payload = {k: v for k, v in dataclasses.asdict(self).items() if k != "extra"}
        payload["builder_version"] = BUILDER_VERSION
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


SPECS = {
    "tiny": TinySpec(
        name="tiny", vocab_size=1024, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2,
        num_kv_heads=1, mrope_section=(4, 6, 6), vision_hidden=64, vision_intermediate=128, vision_depth=2,
        vision_heads=2, fullatt_block_indexes=(1,), tie_word_embeddings=True,
        min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28,
    ),
    "small": TinySpec(
        name="small", vocab_size=2048, hidden_size=256, intermediate_size=768, num_layers=4, num_heads=4,
        num_kv_heads=2, mrope_section=(8, 12, 12), vision_hidden=128, vision_intermediate=384,
        vision_depth=4, vision_heads=2, fullatt_block_indexes=(1, 3), tie_word_embeddings=False,
        min_pixels=16 * 28 * 28, max_pixels=128 * 28 * 28,
    ),
}  # fmt: skip


def default_corpus(num_samples: int, seed: int = 1234) -> list[str]:
    """Text the tokenizer is trained on: the prompts and answers the pipeline really produces."""
    from rexthinker.contracts.answer import answer_json
    from rexthinker.contracts.hint import USER_TEMPLATES, hint_json
    from rexthinker.data import synthref
    from rexthinker.prompts import THINK_PROMPT

    texts = [THINK_PROMPT, *USER_TEMPLATES.values()]
    for s in synthref.generate(num_samples, seed=seed):
        boxes = [[int(v) for v in b] for b in s.candidate_boxes]
        texts.append(USER_TEMPLATES["train"].format(hint=hint_json(s.category, boxes), referring=s.referring))
        texts.append(f"<think>{s.think}</think><answer>{answer_json(s.answer_boxes, s.referring)}</answer>")
    return texts


def train_tokenizer(corpus: Iterable[str], vocab_size: int):
    """A Qwen2-style byte-level BPE tokenizer trained on ``corpus``, with Qwen2.5-VL's special tokens."""
    from tokenizers import pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    base = Qwen2Tokenizer()  # empty vocabulary, but Qwen2's normaliser / pre-tokeniser / decoder
    backend = base.backend_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(QWEN_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    backend.train_from_iterator(list(corpus), trainer=trainer)
    model = json.loads(backend.to_str())["model"]
    vocab = {tok: i for tok, i in model["vocab"].items() if tok not in QWEN_SPECIAL_TOKENS}
    vocab = {tok: i for i, tok in enumerate(sorted(vocab, key=vocab.get))}
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
        model_max_length=32768,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS)})
    return tokenizer


def qwen25vl_chat_template() -> str:
    """The chat template the released Qwen2.5-VL checkpoints ship. TRL recognises it byte for byte
    (and swaps in its assistant-masking variant for ``assistant_only_loss``), so it is taken from
    TRL rather than retyped."""
    from trl.chat_template_utils import qwen2_5_vl_chat_template

    return qwen2_5_vl_chat_template


def build(spec: TinySpec, out_dir: str | Path, corpus: Iterable[str] | None = None) -> Path:
    """Build the checkpoint for ``spec`` into ``out_dir`` (created) and return it."""
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(corpus if corpus is not None else default_corpus(spec.corpus_samples), spec.vocab_size)
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in QWEN_SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
            num_key_value_heads=spec.num_kv_heads, max_position_embeddings=4096, max_window_layers=spec.num_layers,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": list(spec.mrope_section)},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
            tie_word_embeddings=spec.tie_word_embeddings,
        ),
        vision_config=dict(
            depth=spec.vision_depth, hidden_size=spec.vision_hidden, intermediate_size=spec.vision_intermediate,
            num_heads=spec.vision_heads, out_hidden_size=spec.hidden_size,
            fullatt_block_indexes=list(spec.fullatt_block_indexes), window_size=112,
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=spec.tie_word_embeddings,
    )  # fmt: skip
    torch.manual_seed(spec.seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"], eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"], do_sample=False, max_new_tokens=1024,
    )
    size = {"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size),
        video_processor=Qwen2VLVideoProcessor(size=size),
        tokenizer=tokenizer,
        chat_template=qwen25vl_chat_template(),
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "rexthinker_tiny.json").write_text(json.dumps({"spec": spec.name, "key": spec.key()}) + "\n")
    return out_dir


def get(name: str = "tiny") -> Path:
    """The cached checkpoint folder for a named spec, built on first use (atomic, race-free)."""
    if name not in SPECS:
        raise KeyError(f"unknown tiny model {name!r}; choose one of {sorted(SPECS)}")
    spec = SPECS[name]
    target = cache_root() / "models" / f"{spec.name}-{spec.key()}"
    return cached_build(target, "rexthinker_tiny.json", lambda folder: build(spec, folder))


if __name__ == "__main__":
    import sys

    for arg in sys.argv[1:] or ["tiny"]:
        print(get(arg))
