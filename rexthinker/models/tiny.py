"""Deterministic small checkpoints of each Qwen model family, built from a config, with no download.

Each checkpoint is the family's real architecture (``Qwen2_5_VLForConditionalGeneration``,
``Qwen3VLForConditionalGeneration``, ``Qwen3_5ForConditionalGeneration``) with random weights
(seeded), a byte-level BPE tokenizer trained here with every Qwen special token, the family's chat
template, an image processor with small pixel limits and a generation config. Builds are cached on
disk under a key derived from everything that goes into them, so tests share one build:

    python -m rexthinker.models.tiny tiny     # prints the cached folder, building it if needed
    python -m rexthinker.models.tiny small
    python -m rexthinker.models.tiny qwen3_vl:tiny qwen3_5:tiny

What every family shares (tokenizer training, processor assembly, saving, the cache) is written once
in :func:`build`. What differs is one spec class per family: its own config fields, chat template,
tokenizer class and image normalisation; the model, config and processor classes and the patch
geometry come from its :class:`~rexthinker.models.families.Family`.

Qwen2.5-VL: ``tiny`` (2 text layers, hidden 64) keeps unit tests fast; ``small`` (4 layers, hidden
256) is what the demo and the benchmarks train. Qwen3-VL and Qwen3.5 have a ``tiny``. Head sizes
are 32 and 64, which vLLM's CPU attention accepts; Qwen3.5's Gated DeltaNet heads are 64, as vLLM's
CPU chunked delta rule refuses 32 (and runs only in bf16).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rexthinker.cache import cache_root, cached_build
from rexthinker.models.families import QWEN2_5_VL, QWEN3_5, QWEN3_VL, Family

# Qwen2.5-VL's added tokens, in the order the released tokenizer lists them.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)  # fmt: skip
# Added (not special) tokens of the released Qwen3-VL and Qwen3.5 tokenizers after those.
QWEN3_ADDED_TOKENS = ("<tool_response>", "</tool_response>", "<think>", "</think>")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # Qwen2.5-VL's image normalisation (OpenAI CLIP's)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

BUILDER_VERSION = 1  # bump when the build procedure changes, so cached builds are not reused


@dataclass(frozen=True, kw_only=True)
class TinySpec:
    """The fields every family's build takes; with its family's own (a subclass), everything that
    determines a built checkpoint, and so its cache key."""

    family: ClassVar[Family]
    rope_theta: ClassVar[float]  # the released checkpoints' value
    chat_template_name: ClassVar[str]  # TRL's byte-exact copy of the released template (trl.chat_template_utils)
    tokenizer_class: ClassVar[str] = "Qwen2Tokenizer"  # its pre-tokeniser is the one the tokenizer is trained with
    added_tokens: ClassVar[tuple[str, ...]] = ()  # plain tokens after QWEN_SPECIAL_TOKENS
    video_processor_class: ClassVar[str]
    image_mean: ClassVar[tuple[float, ...]]
    image_std: ClassVar[tuple[float, ...]]

    name: str
    vocab_size: int  # tokenizer size, special and added tokens included
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    mrope_section: tuple[int, int, int]  # T/H/W rotary frequencies, summing to half the rotary dimension
    vision_hidden: int
    vision_intermediate: int
    vision_depth: int
    vision_heads: int
    tie_word_embeddings: bool
    min_pixels: int
    max_pixels: int
    corpus_samples: int = 400  # SynthRef samples whose text trains the tokenizer
    seed: int = 0

    def key(self) -> str:
        payload = dataclasses.asdict(self)
        if self.family is not QWEN2_5_VL:  # Qwen2.5-VL's keys predate the other families and stay as they were
            payload["family"] = self.family.name
        payload["builder_version"] = BUILDER_VERSION
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def folder(self) -> str:
        """The build's folder name in the cache (Qwen2.5-VL's, like its key, without the family)."""
        stem = f"{self.name}-{self.key()}"
        return stem if self.family is QWEN2_5_VL else f"{self.family.name}-{stem}"

    def chat_template(self) -> str:
        """The family's released chat template, from TRL, which recognises it byte for byte (and swaps
        in its assistant-masking variant for ``assistant_only_loss``), rather than retyped."""
        from trl import chat_template_utils

        return getattr(chat_template_utils, self.chat_template_name)

    def rope_parameters(self) -> dict:
        rope = {"rope_type": "default", "rope_theta": self.rope_theta, "mrope_section": list(self.mrope_section)}
        if self.family.mrope_interleaved:
            rope["mrope_interleaved"] = True  # transformers always interleaves these families; vLLM reads this flag
        return rope

    def text_fields(self, ids: dict[str, int]) -> dict:
        """The family's own text-config fields (``ids``: token ids of QWEN_SPECIAL_TOKENS)."""
        return {}

    def vision_fields(self) -> dict:
        """The family's own vision-config fields."""
        return {}


@dataclass(frozen=True, kw_only=True)
class Qwen25VLSpec(TinySpec):
    """Qwen2.5-VL: windowed vision attention except in ``fullatt_block_indexes``; head size is hidden / heads."""

    family: ClassVar[Family] = QWEN2_5_VL
    rope_theta: ClassVar[float] = 1000000.0
    chat_template_name: ClassVar[str] = "qwen2_5_vl_chat_template"
    video_processor_class: ClassVar[str] = "Qwen2VLVideoProcessor"
    image_mean: ClassVar[tuple[float, ...]] = CLIP_MEAN
    image_std: ClassVar[tuple[float, ...]] = CLIP_STD

    fullatt_block_indexes: tuple[int, ...]

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def text_fields(self, ids: dict[str, int]) -> dict:
        return dict(max_window_layers=self.num_layers, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"])

    def vision_fields(self) -> dict:
        return dict(fullatt_block_indexes=list(self.fullatt_block_indexes), window_size=112)


@dataclass(frozen=True, kw_only=True)
class _Qwen3Spec(TinySpec):
    """What Qwen3-VL and Qwen3.5 share: a set head size (q/k norms in the text attention), learned
    vision position embeddings resampled to each image's grid, mean/std 0.5, Qwen3's added tokens."""

    added_tokens: ClassVar[tuple[str, ...]] = QWEN3_ADDED_TOKENS
    video_processor_class: ClassVar[str] = "Qwen3VLVideoProcessor"
    image_mean: ClassVar[tuple[float, ...]] = (0.5, 0.5, 0.5)
    image_std: ClassVar[tuple[float, ...]] = (0.5, 0.5, 0.5)

    head_dim: int
    num_position_embeddings: int  # learned vision positions, a square grid resampled per image

    def text_fields(self, ids: dict[str, int]) -> dict:
        return dict(head_dim=self.head_dim)

    def vision_fields(self) -> dict:
        return dict(num_position_embeddings=self.num_position_embeddings)


@dataclass(frozen=True, kw_only=True)
class Qwen3VLSpec(_Qwen3Spec):
    """Qwen3-VL: DeepStack (patch-merger outputs of chosen vision blocks added to the first text layers)."""

    family: ClassVar[Family] = QWEN3_VL
    rope_theta: ClassVar[float] = 5000000.0
    chat_template_name: ClassVar[str] = "qwen3_vl_chat_template"

    deepstack_visual_indexes: tuple[int, ...]  # vision blocks whose merged outputs feed text layers 0, 1, ..

    def vision_fields(self) -> dict:
        return {**super().vision_fields(), "deepstack_visual_indexes": list(self.deepstack_visual_indexes)}


@dataclass(frozen=True, kw_only=True)
class Qwen35Spec(_Qwen3Spec):
    """Qwen3.5 (dense): Gated DeltaNet (linear attention) layers between gated full-attention ones,
    rotary on a quarter of each head, Qwen3.5's own pre-tokeniser and its thinking chat template
    (the generation prompt opens ``<think>``)."""

    family: ClassVar[Family] = QWEN3_5
    rope_theta: ClassVar[float] = 10000000.0
    chat_template_name: ClassVar[str] = "qwen3_5_think_chat_template"
    tokenizer_class: ClassVar[str] = "Qwen3_5Tokenizer"
    partial_rotary_factor: ClassVar[float] = 0.25

    layer_types: tuple[str, ...]  # "linear_attention" or "full_attention", one per text layer
    linear_num_key_heads: int
    linear_num_value_heads: int
    linear_key_head_dim: int
    linear_value_head_dim: int

    def rope_parameters(self) -> dict:
        return {**super().rope_parameters(), "partial_rotary_factor": self.partial_rotary_factor}

    def text_fields(self, ids: dict[str, int]) -> dict:
        return {
            **super().text_fields(ids), "layer_types": list(self.layer_types),
            "linear_num_key_heads": self.linear_num_key_heads, "linear_num_value_heads": self.linear_num_value_heads,
            "linear_key_head_dim": self.linear_key_head_dim, "linear_value_head_dim": self.linear_value_head_dim,
        }  # fmt: skip


SPECS = {
    "tiny": Qwen25VLSpec(
        name="tiny", vocab_size=1024, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2,
        num_kv_heads=1, mrope_section=(4, 6, 6), vision_hidden=64, vision_intermediate=128, vision_depth=2,
        vision_heads=2, fullatt_block_indexes=(1,), tie_word_embeddings=True,
        min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28,
    ),
    "small": Qwen25VLSpec(
        name="small", vocab_size=2048, hidden_size=256, intermediate_size=768, num_layers=4, num_heads=4,
        num_kv_heads=2, mrope_section=(8, 12, 12), vision_hidden=128, vision_intermediate=384,
        vision_depth=4, vision_heads=2, fullatt_block_indexes=(1, 3), tie_word_embeddings=False,
        min_pixels=16 * 28 * 28, max_pixels=128 * 28 * 28,
    ),
}  # fmt: skip
# Every family's specs; Qwen2.5-VL's are SPECS, the ones the demo, benchmarks and most tests use.
FAMILY_SPECS: dict[str, dict[str, TinySpec]] = {
    QWEN2_5_VL.name: SPECS,
    QWEN3_VL.name: {
        "tiny": Qwen3VLSpec(
            name="tiny", vocab_size=1024, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2,
            num_kv_heads=1, head_dim=32, mrope_section=(6, 5, 5), vision_hidden=64, vision_intermediate=128,
            vision_depth=2, vision_heads=2, num_position_embeddings=64, deepstack_visual_indexes=(0,),
            tie_word_embeddings=True, min_pixels=4 * 32 * 32, max_pixels=64 * 32 * 32,
        ),
    },
    QWEN3_5.name: {
        "tiny": Qwen35Spec(
            name="tiny", vocab_size=1024, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2,
            num_kv_heads=1, head_dim=32, mrope_section=(2, 1, 1), vision_hidden=64, vision_intermediate=128,
            vision_depth=2, vision_heads=2, num_position_embeddings=64, layer_types=("linear_attention", "full_attention"),
            linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=64, linear_value_head_dim=64,
            tie_word_embeddings=True, min_pixels=4 * 32 * 32, max_pixels=64 * 32 * 32,
        ),
    },
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


def train_tokenizer(corpus: Iterable[str], vocab_size: int, tokenizer_class: str = "Qwen2Tokenizer"):
    """A byte-level BPE tokenizer trained on ``corpus`` with the normaliser, pre-tokeniser and decoder
    of ``tokenizer_class`` (a transformers Qwen tokenizer) and Qwen2.5-VL's special tokens."""
    import transformers
    from tokenizers import pre_tokenizers, trainers

    cls = getattr(transformers, tokenizer_class)
    backend = cls().backend_tokenizer  # empty vocabulary, but the class's normaliser / pre-tokeniser / decoder
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
    tokenizer = cls(
        vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
        model_max_length=32768,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS)})
    return tokenizer


def build(spec: TinySpec, out_dir: str | Path, corpus: Iterable[str] | None = None) -> Path:
    """Build the checkpoint for ``spec`` into ``out_dir`` (created) and return it."""
    import torch
    import transformers
    from transformers import GenerationConfig, Qwen2VLImageProcessor

    family = spec.family
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = corpus if corpus is not None else default_corpus(spec.corpus_samples)
    tokenizer = train_tokenizer(corpus, spec.vocab_size - len(spec.added_tokens), spec.tokenizer_class)
    if spec.added_tokens:
        tokenizer.add_tokens(list(spec.added_tokens))
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in QWEN_SPECIAL_TOKENS}
    model_class = getattr(transformers, family.model_class)
    config = model_class.config_class(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
            num_key_value_heads=spec.num_kv_heads, max_position_embeddings=4096, rope_parameters=spec.rope_parameters(),
            pad_token_id=ids["<|endoftext|>"], tie_word_embeddings=spec.tie_word_embeddings, **spec.text_fields(ids),
        ),
        vision_config=dict(
            depth=spec.vision_depth, hidden_size=spec.vision_hidden, intermediate_size=spec.vision_intermediate,
            num_heads=spec.vision_heads, out_hidden_size=spec.hidden_size, patch_size=family.patch_size,
            spatial_merge_size=family.merge_size, temporal_patch_size=2, **spec.vision_fields(),
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=spec.tie_word_embeddings,
    )  # fmt: skip
    torch.manual_seed(spec.seed)
    model = model_class(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"], eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"], do_sample=False, max_new_tokens=1024,
    )
    size = {"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels}
    geometry = dict(patch_size=family.patch_size, merge_size=family.merge_size, temporal_patch_size=2,
                    image_mean=list(spec.image_mean), image_std=list(spec.image_std))  # fmt: skip
    processor = getattr(transformers, family.processor_class)(
        image_processor=Qwen2VLImageProcessor(size=size, **geometry),
        video_processor=getattr(transformers, spec.video_processor_class)(size=size, **geometry),
        tokenizer=tokenizer,
        chat_template=spec.chat_template(),
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    marker = {"family": family.name, "spec": spec.name, "key": spec.key()}
    (out_dir / "rexthinker_tiny.json").write_text(json.dumps(marker) + "\n")
    return out_dir


def get(name: str = "tiny", family: str = QWEN2_5_VL.name) -> Path:
    """The cached checkpoint folder for a named spec of ``family``, built on first use (atomic, race-free)."""
    if family not in FAMILY_SPECS:
        raise KeyError(f"no tiny builds for model family {family!r}; choose one of {sorted(FAMILY_SPECS)}")
    specs = FAMILY_SPECS[family]
    if name not in specs:
        raise KeyError(f"unknown tiny {family} model {name!r}; choose one of {sorted(specs)}")
    spec = specs[name]
    return cached_build(cache_root() / "models" / spec.folder, "rexthinker_tiny.json", lambda folder: build(spec, folder))


if __name__ == "__main__":
    import sys

    for arg in sys.argv[1:] or ["tiny"]:  # [family:]name
        family, _, name = arg.rpartition(":")
        print(get(name, family or QWEN2_5_VL.name))
