"""A pretrained stand-in for Qwen2.5-VL-Instruct at demo scale ("small-base").

The released pipeline fine-tunes a model that already reads box coordinates, finds the region a
box names, and copies numbers from its prompt. The ``small`` checkpoint of
:mod:`rexthinker.models.tiny` has random weights and can do none of that; measured on SynthRef,
8 CPU-minutes of SFT from random weights teach the trace's shape but not the boxes (dev/LOG.md).
So the demo starts, like the real recipe, from a model that has those generic skills: this module
pre-trains ``small`` on two instruction tasks that are not the referring task and contain no
reasoning trace:

- *describe* — "Describe every person." with the box hints in the prompt; the answer lists each
  hint's shirt colour, height, hat, flag and hand-holding partner (dense region captioning);
- *locate* — "Where is Person 3?" / "Where are Person 2 and Person 5?"; the answer is the boxes
  in the referring answer's JSON form (grounded copy of the k-th hint).

Scenes come from SynthRef's generator with their own split name (``pretrain``), so no scene is
shared with the SFT / GRPO / evaluation splits. The result is cached like the random checkpoints:

    python -m rexthinker.models.base              # prints the cached folder, building it if needed
    python -m rexthinker.models.base --steps 400  # a different budget is a different cache entry

What the referring stages then have to learn is the task itself: the plan / action / summary
trace, which persons satisfy the question, and the answer that follows from the summary.

Status (dev/LOG.md, 2026-11-23): the default budget (500 steps x 8 chats, ~25 CPU-minutes on 2
cores) teaches the answer forms but not the skills — shirt colours at chance, the k-th box's first
digits only — so ``make demo`` still starts from the random checkpoint. The module is kept to
pre-train longer where compute allows.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rexthinker.cache import cache_root, cached_build
from rexthinker.data import synthref
from rexthinker.data.sample import RefSample
from rexthinker.prompts import answer_json, build_messages, hint_json, pixel_limits
from rexthinker.sft.data import IGNORE, Features, collate
from rexthinker.train.learner import Learner, LearnerConfig, OptimConfig

BASE_VERSION = 1  # bump when the tasks or the training procedure change
MARKER = "rexthinker_base.json"


@dataclass(frozen=True)
class BaseRecipe:
    """Everything that determines a pre-trained base (and so its cache key)."""

    spec: str = "small"
    steps: int = 500
    batch_size: int = 8
    lr: float = 2.0e-3
    warmup_steps: int = 30
    weight_decay: float = 0.01
    seed: int = 0
    locate_turns: int = 3  # "Where is ..." questions per image, after the description

    def key(self, spec_key: str) -> str:
        payload = dict(dataclasses.asdict(self), spec_key=spec_key, version=BASE_VERSION)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


# --- the tasks -------------------------------------------------------------------------------------
DESCRIBE = "Describe every person."


def describe_line(scene: synthref.Scene, k: int) -> str:
    fig = scene.figures[k]
    parts = [synthref.observe(fig, kind) for kind in ("color", "tall", "hat", "flag")]
    partners = scene.hands.get(k, [])
    if partners:
        parts.append("holds hands with " + " and ".join(f"Person {p + 1}" for p in sorted(partners)))
    return f"Person {k + 1}: " + ", ".join(parts)


def locate_turn(rng: random.Random, n: int, boxes: list[list[int]]) -> tuple[str, str]:
    count = rng.choice((1, 1, 2, 3)) if n >= 3 else 1
    picked = sorted(rng.sample(range(n), min(count, n)))
    names = [f"Person {k + 1}" for k in picked]
    question = f"Where is {names[0]}?" if len(names) == 1 else f"Where are {', '.join(names[:-1])} and {names[-1]}?"
    label = names[0] if len(names) == 1 else "the people asked for"
    return question, answer_json([boxes[k] for k in picked], label)


def make_example(index: int, recipe: BaseRecipe, min_pixels: int, max_pixels: int, split: str = "pretrain"):
    """One image with its chat: [(user text, assistant text), ...]; the first user text carries the hints."""
    rng = synthref.sample_rng(recipe.seed, split, index)
    cfg = synthref.SynthRefConfig()
    scene = synthref._make_scene(rng, cfg, set())
    image, labels = synthref._render(scene, rng, cfg)
    boxes = synthref.label_boxes(labels, scene.n)
    sample = RefSample(id=f"base-{split}-{index}", image_name="", referring="", candidate_boxes=boxes, answer_boxes=[],
                       category=synthref.CATEGORY, image_size=(scene.width, scene.height))  # fmt: skip
    messages, info = build_messages(sample, min_pixels, max_pixels, image=image)
    hint = f"Hint: Object and its coordinates in this image: {hint_json(synthref.CATEGORY, info.hint_boxes)}\n"
    turns = [(hint + DESCRIBE, "\n".join(describe_line(scene, k) for k in range(scene.n)))]
    turns += [locate_turn(rng, scene.n, info.hint_boxes) for _ in range(recipe.locate_turns)]
    return image, turns


def build_features(processor, image, turns: list[tuple[str, str]]) -> Features:
    """Token features of a multi-turn chat; labels cover every assistant turn and its ``<|im_end|>``."""
    tok = processor.tokenizer
    first = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
             f"<|vision_start|><|image_pad|><|vision_end|>{turns[0][0]}<|im_end|>\n<|im_start|>assistant\n")  # fmt: skip
    enc = processor(text=[first], images=[image], return_tensors="pt")
    ids, labels, mm = [enc["input_ids"][0]], [torch.full_like(enc["input_ids"][0], IGNORE)], [enc["mm_token_type_ids"][0]]

    def add(text: str, train: bool) -> None:
        piece = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        ids.append(piece)
        labels.append(piece.clone() if train else torch.full_like(piece, IGNORE))
        mm.append(torch.zeros_like(piece))

    for i, (question, answer) in enumerate(turns):
        if i:
            add(f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n", train=False)
        add(answer + "<|im_end|>", train=True)
        add("\n", train=False)
    return Features(torch.cat(ids), torch.cat(labels), torch.cat(mm), enc["pixel_values"], enc["image_grid_thw"])


# --- training --------------------------------------------------------------------------------------
def _answer_exact(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Teacher-forced share of answers whose every token is the argmax, per task (the first
    assistant turn of a chat describes, the others locate)."""
    pred = logits[:, :-1].argmax(-1)
    gold = labels[:, 1:]
    right, total = {"describe": 0, "locate": 0}, {"describe": 0, "locate": 0}
    for row in range(gold.shape[0]):
        idx = (gold[row] != IGNORE).nonzero().flatten()
        if not len(idx):
            continue
        spans = torch.tensor_split(idx, (torch.diff(idx) > 1).nonzero().flatten() + 1)
        for i, span in enumerate(spans):
            task = "describe" if i == 0 else "locate"
            total[task] += 1
            right[task] += bool((pred[row, span] == gold[row, span]).all())
    return {task: right[task] / max(total[task], 1) for task in total}


def pretrain(model_dir: Path, out_dir: Path, recipe: BaseRecipe, log=print) -> dict:
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(recipe.seed)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    lo, hi = pixel_limits(processor)
    pad_id = processor.tokenizer.pad_token_id
    optim = OptimConfig(lr=recipe.lr, weight_decay=recipe.weight_decay, betas=(0.9, 0.98), scheduler="cosine",
                        warmup_ratio=recipe.warmup_steps / recipe.steps, max_grad_norm=1.0)  # fmt: skip
    learner = Learner(model, optim, LearnerConfig(strategy="single", precision="fp32"), recipe.steps)

    def batch(start: int, size: int, split: str) -> dict:
        feats = [build_features(processor, *make_example(i, recipe, lo, hi, split)) for i in range(start, start + size)]
        return collate(feats, pad_id)

    held_out = batch(0, 32, "pretrain-val")
    history, start_time = [], time.perf_counter()
    for step in range(recipe.steps):
        model.train()
        data = batch(step * recipe.batch_size, recipe.batch_size, "pretrain")
        labels = data.pop("labels")
        data.pop("skipped")
        logits = learner(**data).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE)
        learner.backward(loss)
        stats = learner.step()
        row = {"step": step + 1, "loss": float(loss.detach()), "grad_norm": stats["grad_norm"], "elapsed_s": time.perf_counter() - start_time}
        if (step + 1) % 25 == 0 or step + 1 == recipe.steps:
            model.eval()
            with torch.no_grad():
                data = {k: v for k, v in held_out.items() if k not in ("labels", "skipped")}
                exact = _answer_exact(model(**data).logits, held_out["labels"])
            row.update({f"heldout_exact_{task}": v for task, v in exact.items()})
            log(f"[base] step {step + 1}/{recipe.steps} loss {row['loss']:.4f} held-out exact answers: describe "
                f"{exact['describe']:.3f}, locate {exact['locate']:.3f} ({row['elapsed_s']:.0f} s)")  # fmt: skip
        history.append(row)
    learner.export_hf(out_dir, processor)
    (out_dir / "pretrain_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    return history[-1]


def get(recipe: BaseRecipe | None = None, log=print) -> Path:
    """The cached pre-trained base for ``recipe``, built on first use (atomic, race-free)."""
    from rexthinker.models import tiny

    recipe = recipe or BaseRecipe()
    spec = tiny.SPECS[recipe.spec]
    source = tiny.get(recipe.spec)
    target = cache_root() / "models" / f"{recipe.spec}-base-{recipe.key(spec.key())}"

    def build(folder: Path) -> None:
        log(f"[base] pre-training {recipe.spec} for {recipe.steps} steps x {recipe.batch_size} images (cached in {target})")
        last = pretrain(source, folder, recipe, log)
        (folder / MARKER).write_text(json.dumps({"recipe": dataclasses.asdict(recipe), "source": str(source), "last": last}) + "\n")

    return cached_build(target, MARKER, build)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = BaseRecipe()
    for f in dataclasses.fields(BaseRecipe):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(getattr(defaults, f.name)), default=getattr(defaults, f.name))
    args = parser.parse_args(argv)
    recipe = BaseRecipe(**{f.name: getattr(args, f.name) for f in dataclasses.fields(BaseRecipe)})
    print(get(recipe))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
