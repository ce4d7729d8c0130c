"""Region probe: how fast does a small Qwen2.5-VL, trained from scratch on CPU, learn the shirt
colour of "Person k" when several people stand in a row? (issue 14, step 2)

Scenes are SynthRef-like: N coloured figures side by side (torso colour from 6, a head, legs) on a
light background, the hint list in a random order as a detector gives it. The model is the real
``Qwen2_5_VLForConditionalGeneration`` (random weights, every part trainable) with a small word-level
vocabulary (one token per integer), so only the mechanism is measured. Variants:

- ``--cue box``   nothing in the image but the figures: the hint's coordinates must lead to the
                  image patches they cover;
- ``--cue mark``  each figure carries its hint number, drawn in a white tag on the torso
                  (set-of-mark prompting: "Person k" can be matched to the glyph k);
- ``--cue tag``   as ``mark``, and the tag's fill colour also names the hint number (one of 9
                  colours no shirt uses), so matching "Person k" to its figure is a colour match;
- ``--ask one``   "Person k:" -> colour, one question per image;
- ``--ask all``   the target restates every hint in order with its colour,
                  ``Person 1 [x0, y0, x1, y1] red, Person 2 [...] blue, ...`` (the copy probe's
                  ``enumerate`` layout; every figure is a colour signal, every box a copy signal);
- ``--colour-first`` states the colour straight after the name, ``Person 1 red [x0, ...]``, so
                  the token that names the hint is the one that must look at the image;
- ``--scene synthref`` draws the scenes with SynthRef's own renderer at ``--level`` with ``--set``
                  overrides (figures, tags, hats, flags, trees as the data tools draw them), resized
                  to the model frame of ``--size``'s pixel count; ``--cue`` and ``--persons`` then
                  come from the level.

Held-out colour accuracy (teacher-forced argmax over the 6 colour words, every figure of 64 scenes)
is printed every ``--eval-every`` steps; the final line is appended to ``--results``:

    python benchmarks/region_probe.py --cue mark --ask all --seconds 300
    python benchmarks/region_probe.py --cue box --ask all --seconds 300
    python benchmarks/region_probe.py --scene synthref --size 280x168 --layers 4 --width 256 \
        --vision-depth 4 --lr 1e-3 --set "mark_size=0.65 torso_width=0.4 p_tree=0.3"

Measured runs are in dev/LOG.md.
"""

from __future__ import annotations

import argparse
import random

import torch
from PIL import Image, ImageDraw, ImageFont
from probe_loop import train_for

COLOURS = {"red": (220, 30, 30), "blue": (30, 75, 225), "green": (30, 165, 55),
           "yellow": (245, 205, 15), "purple": (145, 50, 185), "orange": (255, 135, 15)}  # fmt: skip
TAGS = [(255, 255, 255), (20, 20, 20), (128, 128, 128), (0, 200, 210), (230, 60, 200),
        (120, 70, 30), (255, 170, 200), (20, 30, 110), (130, 140, 30)]  # fmt: skip
SPECIAL = ["<pad>", "<s>", "</s>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
WORDS = ["[", "]", ",", "[[", "]]", "Person", ":", "\n"] + [f"#{i}" for i in range(1, 10)] + list(COLOURS)


class Vocab:
    def __init__(self, coord_max: int):
        self.words = SPECIAL + WORDS + [f"n{i}" for i in range(coord_max + 1)]
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def __call__(self, *words: str) -> list[int]:
        return [self.index[w] for w in words]

    def box(self, box: list[int]) -> list[int]:
        out = self("[")
        for j, v in enumerate(box):
            out += self(f"n{v}") + (self(",") if j < 3 else [])
        return out + self("]")


def draw_scene(rng: random.Random, n: int, size: tuple[int, int], cue: str, font):
    """N figures left to right in equal slots; returns the image, boxes and colours in hint order."""
    w, h = size
    image = Image.new("RGB", (w, h), tuple(rng.randint(228, 248) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    slot = w / n
    order = list(range(n))
    rng.shuffle(order)  # order[k] = slot of Person k+1
    boxes, colours = [None] * n, [None] * n
    for k, s in enumerate(order):
        colour = rng.choice(list(COLOURS))
        cx = (s + 0.5) * slot + rng.uniform(-0.08, 0.08) * slot
        torso_w = slot * rng.uniform(0.5, 0.7)
        top = h * rng.uniform(0.05, 0.3)
        feet = h * rng.uniform(0.9, 0.98)
        head = min(torso_w * 0.8, (feet - top) * 0.2)
        torso_top, torso_bottom = top + head, top + head + 0.5 * (feet - top - head)
        draw.ellipse([cx - head / 2, top, cx + head / 2, top + head], fill=(226, 172, 132), outline=(35, 35, 40))
        draw.rectangle([cx - torso_w / 2, torso_top, cx + torso_w / 2, torso_bottom], fill=COLOURS[colour], outline=(35, 35, 40))
        draw.rectangle([cx - torso_w / 2, torso_bottom, cx + torso_w / 2, feet], fill=(70, 70, 95))
        if cue != "box":
            tag = 18
            tx, ty = cx - tag / 2, (torso_top + torso_bottom) / 2 - tag / 2
            fill = TAGS[k] if cue == "tag" else TAGS[0]
            ink = (255, 255, 255) if cue == "tag" and sum(fill) < 384 else (0, 0, 0)
            draw.rectangle([tx, ty, tx + tag, ty + tag], fill=fill)
            draw.text((tx + 4, ty), str(k + 1), fill=ink, font=font)
        boxes[k] = [int(cx - torso_w / 2), int(top), int(cx + torso_w / 2) + 1, int(feet) + 1]
        colours[k] = colour
    return image, boxes, colours


def synthref_scene(rng: random.Random, args):
    """A scene of SynthRef's own renderer (``--scene synthref``): its level, tags and figure sizes,
    resized to the model frame of ``--size``'s pixel count; boxes in that frame."""
    from rexthinker.coords import model_frame_size, to_model_frame
    from rexthinker.data.synthref.scene import label_boxes, make_scene, render

    scene = make_scene(rng, args._synthref, set())
    image, labels = render(scene, rng, args._synthref)
    pixels = args.size[0] * args.size[1]
    frame = model_frame_size(*image.size, min_pixels=pixels // 2, max_pixels=pixels)
    boxes = [to_model_frame(b, image.size, frame) for b in label_boxes(labels, scene.n)]
    return image.resize(frame, Image.BICUBIC), boxes, [fig.color for fig in scene.figures]


def make_sample(rng, vocab: Vocab, processor, args, font):
    if args._synthref is not None:
        image, boxes, colours = synthref_scene(rng, args)
        n = len(boxes)
    else:
        n = rng.randint(*args.persons)
        image, boxes, colours = draw_scene(rng, n, args.size, args.cue, font)
    enc = processor(images=[image], return_tensors="pt")
    n_image = int(enc["image_grid_thw"].prod()) // 4
    ids = vocab("<s>", "<|vision_start|>") + vocab("<|image_pad|>") * n_image + vocab("<|vision_end|>", "[[")
    for i, b in enumerate(boxes):
        ids += vocab.box(b) + (vocab(",") if i < n - 1 else vocab("]]"))
    ids += vocab("\n")
    loss, colour_at = [0] * len(ids), []

    def emit(tokens: list[int], train: bool) -> None:
        ids.extend(tokens)
        loss.extend([int(train)] * len(tokens))

    if args.ask == "all":
        for k in range(n):
            emit(vocab("Person", f"#{k + 1}"), True)
            if not args.colour_first:
                emit(vocab.box(boxes[k]), True)
            colour_at.append(len(ids))
            emit(vocab(colours[k]), True)
            if args.colour_first:
                emit(vocab.box(boxes[k]), True)
            emit(vocab("," if k < n - 1 else "\n"), True)
    else:
        k = rng.randrange(n)
        emit(vocab("Person", f"#{k + 1}", ":"), False)
        colour_at.append(len(ids))
        emit(vocab(colours[k], "\n"), True)
    emit(vocab("</s>"), True)
    return ids, loss, colour_at, enc


def collate(rows, vocab: Vocab):
    width = max(len(r[0]) for r in rows)
    ids = torch.full((len(rows), width), vocab("<pad>")[0])
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    mm = torch.zeros(len(rows), width, dtype=torch.long)
    image_id = vocab("<|image_pad|>")[0]
    for i, (tokens, loss, _, _) in enumerate(rows):
        t = torch.tensor(tokens)
        ids[i, : len(t)] = t
        mask[i, : len(t)] = 1
        mm[i, : len(t)] = (t == image_id).long()
        labels[i, : len(t)] = torch.where(torch.tensor(loss, dtype=torch.bool), t, -100)
    return dict(input_ids=ids, attention_mask=mask, mm_token_type_ids=mm, labels=labels,
                pixel_values=torch.cat([r[3]["pixel_values"] for r in rows]),
                image_grid_thw=torch.cat([r[3]["image_grid_thw"] for r in rows]))  # fmt: skip


@torch.no_grad()
def evaluate(model, rows, vocab: Vocab) -> dict[str, float]:
    model.eval()
    batch = collate(rows, vocab)
    batch.pop("labels")
    logits = model(**batch).logits
    model.train()
    colour_ids = torch.tensor(vocab(*COLOURS))
    right = total = 0
    for i, (tokens, _, colour_at, _) in enumerate(rows):
        for pos in colour_at:
            total += 1
            right += int(colour_ids[logits[i, pos - 1, colour_ids].argmax()].item() == tokens[pos])
    return {"colour_acc": round(right / total, 3)}


def build_model(vocab: Vocab, args):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=args.width, intermediate_size=3 * args.width,
                         num_hidden_layers=args.layers, num_attention_heads=args.width // 64, num_key_value_heads=args.width // 64,
                         max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]},
                         pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False),
        vision_config=dict(depth=args.vision_depth, hidden_size=128, intermediate_size=384, num_heads=2,
                           out_hidden_size=args.width, fullatt_block_indexes=list(range(1, args.vision_depth, 2)), window_size=112),
        image_token_id=vocab("<|image_pad|>")[0], video_token_id=vocab("<|image_pad|>")[0],
        vision_start_token_id=vocab("<|vision_start|>")[0], vision_end_token_id=vocab("<|vision_end|>")[0],
        tie_word_embeddings=False,
    )  # fmt: skip
    return Qwen2_5_VLForConditionalGeneration(config)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cue", choices=("box", "mark", "tag"), default="mark")
    p.add_argument("--colour-first", action="store_true", help="'Person k colour [box]' instead of 'Person k [box] colour'")
    p.add_argument("--ask", choices=("one", "all"), default="all")
    p.add_argument("--scene", choices=("probe", "synthref"), default="probe",
                   help="synthref: SynthRef's renderer at --level with --set overrides (--cue and --persons unused)")
    p.add_argument("--level", default="demo")
    p.add_argument("--set", default="mark_colours=true", help="SynthRef settings over the level, space-separated key=value")
    p.add_argument("--persons", default="2-4", help="lo-hi figures per image")
    p.add_argument("--size", default="224x112", help="image WxH (multiples of 28 keep the frame exact)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--vision-depth", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", default="outputs/probes/region_probe.jsonl")
    p.add_argument("--note", default="")
    args = p.parse_args(argv)
    args.persons = tuple(int(v) for v in args.persons.split("-"))
    args.size = tuple(int(v) for v in args.size.split("x"))
    args._synthref = None
    if args.scene == "synthref":
        from rexthinker.data import synthref

        args._synthref = synthref.level_config(args.level, args.set.split())

    from transformers import Qwen2VLImageProcessor

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    pixels = args.size[0] * args.size[1]
    low = pixels // 2 if args._synthref is not None else pixels  # synthref: images come in the model frame already
    processor = Qwen2VLImageProcessor(size={"shortest_edge": low, "longest_edge": pixels})
    font = ImageFont.load_default(size=16)
    vocab = Vocab(max(args.size) * 2)
    model = build_model(vocab, args)
    rng, held_rng = random.Random(args.seed), random.Random(10_000 + args.seed)
    held = [make_sample(held_rng, vocab, processor, args, font) for _ in range(64)]

    def next_batch(step: int):
        return collate([make_sample(rng, vocab, processor, args, font) for _ in range(args.batch)], vocab), {}

    return train_for(model, args, next_batch, lambda: evaluate(model, held, vocab))


if __name__ == "__main__":
    main()
