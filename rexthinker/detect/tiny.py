"""A tiny, randomly initialised Grounding DINO for tests: the real transformers architecture and
processor, built from a config with no download.

- backbone: a 4-stage Swin with one block per stage and 16-dimensional patches (transformers'
  own ``SwinConfig``, ``use_timm_backbone=False``);
- text encoder: a one-layer BERT with a word-piece vocabulary made here. Grounding DINO hard-codes
  the ids of ``[CLS]`` (101), ``[SEP]`` (102), ``.`` (1012) and ``?`` (1029), so the vocabulary is
  padded with ``[unusedN]`` entries to put those tokens at exactly those ids; single letters and
  ``##`` letters follow, so every lower-case word tokenises;
- 12 queries, one encoder layer and two decoder layers (the decoder needs at least two);
- an image processor that resizes to a 96-pixel short side (128 at most; smaller images
  make the coarsest feature map 1x1, which GroupNorm refuses) instead of 800.

Builds are cached under ``$REXTHINKER_CACHE/models/grounding-dino-tiny-<key>``:

    python -m rexthinker.detect.tiny      # prints the folder, building it if needed
"""

from __future__ import annotations

import hashlib
import json
import os
import string
from pathlib import Path

from rexthinker.cache import cache_root, cached_build

BUILDER_VERSION = 1
SPECIAL_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012, "?": 1029}
WORDS = ("person", "people", "car", "dog", "cat", "helmet", "man", "woman", "red", "the", "a", "in")
SPEC = {
    "seed": 0,
    "image_short": 96,
    "image_long": 128,
    "num_queries": 12,
    "d_model": 32,
    "swin": {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2], "window_size": 2, "patch_size": 4},
    "bert": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
}


def key() -> str:
    payload = {"spec": SPEC, "words": WORDS, "builder_version": BUILDER_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def vocabulary() -> list[str]:
    """Word pieces in id order, with Grounding DINO's hard-coded special ids in place."""
    by_id = {i: tok for tok, i in SPECIAL_IDS.items()}
    size = max(SPECIAL_IDS.values()) + 1
    vocab = [by_id.get(i, f"[unused{i}]") for i in range(size)]
    letters = list(string.ascii_lowercase) + [f"##{c}" for c in string.ascii_lowercase]
    vocab += [w for w in (*WORDS, *letters, ",", "-", "'") if w not in vocab]
    return vocab


def build(out_dir: str | os.PathLike) -> Path:
    """Build the tiny detector (model + processor) into ``out_dir`` and return it."""
    import torch
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary()
    tokenizer = BertTokenizer(vocab={tok: i for i, tok in enumerate(vocab)}, do_lower_case=True)
    for tok, i in SPECIAL_IDS.items():
        assert tokenizer.convert_tokens_to_ids(tok) == i, f"{tok} must have id {i}"
    swin = SwinConfig(image_size=SPEC["image_long"], out_features=["stage2", "stage3", "stage4"], **SPEC["swin"])
    bert = BertConfig(vocab_size=len(vocab), max_position_embeddings=64, **SPEC["bert"])
    d = SPEC["d_model"]
    config = GroundingDinoConfig(
        backbone_config=swin, text_config=bert, use_timm_backbone=False, num_queries=SPEC["num_queries"],
        encoder_layers=1, decoder_layers=2, d_model=d, encoder_ffn_dim=2 * d, decoder_ffn_dim=2 * d,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_n_points=2, decoder_n_points=2,
        max_text_len=32,
    )  # fmt: skip
    torch.manual_seed(SPEC["seed"])
    model = GroundingDinoForObjectDetection(config).eval()
    size = {"shortest_edge": SPEC["image_short"], "longest_edge": SPEC["image_long"]}
    processor = GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(size=size), tokenizer=tokenizer)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "rexthinker_tiny_detector.json").write_text(json.dumps({"key": key()}) + "\n")
    return out_dir


def get() -> Path:
    """The cached tiny detector folder, built on first use (atomic: concurrent builders race safely)."""
    target = cache_root() / "models" / f"grounding-dino-tiny-{key()}"
    return cached_build(target, "rexthinker_tiny_detector.json", build)


if __name__ == "__main__":
    print(get())
