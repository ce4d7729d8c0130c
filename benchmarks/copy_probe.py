"""Copy probe: how fast does a small Qwen2 LM, trained from scratch on CPU, learn to answer
"Person k" with the k-th box of a hint list? Text only; the mechanism the referring task needs
before any image is involved (issue 14, step 1).

Each sample is a hint list of N boxes followed by a target the loss covers. Layouts:

- ``query``      unlabelled hints ``[[x0, y0, x1, y1], ...]``, then ``Person k`` -> its box (counting);
- ``labelled``   each hint preceded by ``Person i`` in the prompt, then ``Person k`` -> its box
                 (an induction task: find the label, copy what follows);
- ``enumerate``  unlabelled hints; the target first restates every hint in order with its label,
                 ``Person 1 [...], Person 2 [...], ...``, then answers ``Person k`` -> its box. The
                 restatement is an in-order copy (each box follows the previous one in the prompt)
                 and the answer copies from the restatement's labelled boxes;
- ``summary``    the restatement, then a summary line per hint with a mark that is given (teacher
                 forced, not scored) after a filler of 1-4 tokens, ``Person i : ... -> ✅ [box]`` or
                 ``Person i : ... -> ❌``, then ``Answer`` with the ✅ boxes in order (``None`` when
                 there is none): the selection the referring answer makes;
- ``summary-all`` the same, but every summary line states its box before the mark,
                 ``Person i [box] : ... -> ✅|❌`` (the box is an in-order copy; the answer has to
                 pick the boxes whose line ends in ✅);
- ``compare``    no copy: ``Find <colour>``, then a line per hint ``Person i [box] : <its colour> ->
                 yes|no`` with only the mark trained: yes when the line's colour is the asked one
                 (``same``), no otherwise (``other``); 30 % ask a colour nobody has. The verdict a
                 referring trace writes after each shirt it reads (benchmarks/trace_probe.py's
                 ``same colour`` / ``other colour`` columns), without the image.
- ``compare-local`` the same, with the asked colour restated (trained) beside the line's own,
                 ``Person i [box] : <its colour> vs <asked> -> yes|no``: the match is local, as in
                 SynthRef's ``trace_wants`` traces.

``--queries Q`` asks Q labels per sample (dense supervision; every box copy is a training signal).
Numbers are one token per integer (``integers``) or one token per digit (``digits``, as the Qwen
tokenizer splits them). ``--curriculum "1-1:300,1-3:300"`` trains N in 1..1 for 300 steps, then 1..3
for 300, then ``--hints``. Held-out exact-match (teacher-forced, every answer token right) is printed
every ``--eval-every`` steps as a JSON line, and the final line is appended to ``--results``:

    python benchmarks/copy_probe.py --layout enumerate --tokens integers --seconds 300
    python benchmarks/copy_probe.py --layout query --tokens digits --layers 4 --seconds 600

``--model CKPT`` trains that checkpoint's language model (a Qwen2.5-VL folder such as models/demo-base)
with its own tokenizer instead of a fresh Qwen2 LM: each probe word is written as trace text
("Person" as "- Person", a colour as " red shirt", "vs" as " (want", yes / no as " ⚠" / " ❌") and
tokenized. ``--reinit`` keeps that architecture and tokenizer with random weights: the control that
tells whether a checkpoint's pre-training helps or blocks a skill.

Measured runs and their outcomes are in dev/LOG.md.
"""

from __future__ import annotations

import argparse
import random

import torch
from probe_loop import train_for

COORD_MAX = 480  # x in [0, 480], y in [0, 300]: the demo's model frame
COLOURS = 6  # shirt colours of the compare layout (SynthRef's palette)


class Vocab:
    def __init__(self, tokens: str, colours: int = 0):
        self.tokens = tokens
        words = ["<pad>", "<s>", "</s>", "[", "]", ",", "[[", "]]", "Person", "Answer", "\n", ":", "->", "yes", "no", "None"]
        words += [f"w{i}" for i in range(8)]  # filler words of a summary line's reason
        words += [f"#{i}" for i in range(1, 10)]  # person labels
        if tokens == "digits":
            words += [f"d{i}" for i in range(10)]
        else:
            words += [f"n{i}" for i in range(COORD_MAX + 1)]
        words += ["Find", "vs", *(f"c{i}" for i in range(colours))] if colours else []  # last: other layouts keep their ids
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}

    def __len__(self) -> int:
        return len(self.words)

    def __call__(self, *words: str) -> list[int]:
        return [self.index[w] for w in words]

    def number(self, value: int) -> list[int]:
        if self.tokens == "digits":
            return self(*(f"d{c}" for c in str(value)))
        return self(f"n{value}")

    def box(self, box: list[int]) -> list[int]:
        out = self("[")
        for j, v in enumerate(box):
            out += self.number(v) + (self(",") if j < 3 else [])
        return out + self("]")

    def label(self, k: int) -> list[int]:
        return self("Person", f"#{k}")


class TextVocab(Vocab):
    """The probe's words written as trace text and tokenized by a checkpoint's tokenizer."""

    FILLERS = (" wears", " stands", " near", " left", " right", " holding", " tall", " short")

    def __init__(self, tokens: str, tokenizer, colours: int = 0):
        super().__init__(tokens, colours)
        from rexthinker.data.synthref.config import PALETTE

        text = {"<s>": "<|im_start|>assistant\n", "</s>": "<|im_end|>", "[": " [", "]": "]", ",": ",", "[[": "[[",
                "]]": "]]", "Person": "- Person", "Answer": "Answer:", "\n": "\n", ":": ":", "->": " →", "yes": " ⚠",
                "no": " ❌", "None": " None", "Find": "Find the people in a", "vs": " (want"}  # fmt: skip
        text |= {f"w{i}": w for i, w in enumerate(self.FILLERS)} | {f"#{k}": f" {k}" for k in range(1, 10)}
        text |= {f"d{i}": str(i) for i in range(10)} | {f"n{v}": f" {v}" for v in range(COORD_MAX + 1)}
        text |= {f"c{i}": f" {name} shirt" for i, name in enumerate(list(PALETTE)[:colours])}
        self.ids = {w: tokenizer.encode(text[w], add_special_tokens=False) for w in self.words if w != "<pad>"}
        self.ids["<pad>"] = [tokenizer.pad_token_id]

    def __call__(self, *words: str) -> list[int]:
        return [i for w in words for i in self.ids[w]]


def draw_boxes(rng: random.Random, n: int) -> list[list[int]]:
    boxes = []
    for _ in range(n):
        x0, y0 = rng.randint(0, COORD_MAX - 40), rng.randint(0, 240)
        boxes.append([x0, y0, x0 + rng.randint(12, 40), y0 + rng.randint(30, 60)])
    return boxes


def make_sample(rng: random.Random, vocab: Vocab, layout: str, n: int, queries: int):
    """Token ids, a loss mask and the (start, end) spans of the answers that exact-match scores."""
    boxes = draw_boxes(rng, n)
    ids = vocab("<s>", "[[")
    for i, b in enumerate(boxes):
        if layout == "labelled":
            ids += vocab.label(i + 1)
        ids += vocab.box(b) + (vocab(",") if i < n - 1 else vocab("]]"))
    ids += vocab("\n")
    loss = [0] * len(ids)
    spans: dict[str, list[tuple[int, int]]] = {"answer": [], "restate": [], "summary": [], "same": [], "other": []}

    def emit(tokens: list[int], train: bool, kind: str | None = None) -> None:
        if kind:
            spans[kind].append((len(ids), len(ids) + len(tokens)))
        ids.extend(tokens)
        loss.extend([int(train)] * len(tokens))

    if layout in ("compare", "compare-local"):
        palette = rng.sample(range(COLOURS), rng.randint(2, 4))
        colours = [rng.choice(palette) for _ in boxes]
        absent = [c for c in range(COLOURS) if c not in colours]
        asked = rng.choice(absent) if rng.random() < 0.3 else rng.choice(colours)
        emit(vocab("Find", f"c{asked}", "\n"), train=True)
        for i, (b, c) in enumerate(zip(boxes, colours)):
            emit(vocab.label(i + 1) + vocab.box(b) + vocab(":", f"c{c}"), train=False)
            if layout == "compare-local":  # the asked colour restated beside the one read: a local match
                emit(vocab("vs", f"c{asked}"), train=True)
            emit(vocab("->"), train=False)
            emit(vocab("yes" if c == asked else "no"), train=True, kind="same" if c == asked else "other")
            emit(vocab("\n"), train=True)
        queries = 0
    if layout in ("enumerate", "summary", "summary-all"):
        for i, b in enumerate(boxes):
            emit(vocab.label(i + 1), train=True)
            emit(vocab.box(b), train=True, kind="restate")
            emit(vocab(",") if i < n - 1 else vocab("\n"), train=True)
    if layout in ("summary", "summary-all"):
        targets = [i for i in range(n) if rng.random() < 0.4]
        for i, b in enumerate(boxes):
            emit(vocab.label(i + 1), train=True)
            if layout == "summary-all":
                emit(vocab.box(b), train=True, kind="summary")
            emit(vocab(":"), train=True)
            emit(vocab(*(f"w{rng.randrange(8)}" for _ in range(rng.randint(1, 4))), "->"), train=False)
            emit(vocab("yes" if i in targets else "no"), train=False)
            if i in targets and layout == "summary":
                emit(vocab.box(b), train=True, kind="summary")
            emit(vocab("\n"), train=True)
        answer = vocab("Answer", "[")
        for j, i in enumerate(targets):
            answer += vocab.box(boxes[i]) + (vocab(",") if j < len(targets) - 1 else [])
        answer += vocab("]") if targets else vocab("None")
        emit(answer[:1], train=True)
        emit(answer[1:], train=True, kind="answer")
        queries = 0
    for k in rng.sample(range(n), min(queries, n)):
        emit(vocab.label(k + 1) + vocab(":"), train=False)
        emit(vocab.box(boxes[k]) + vocab("\n"), train=True, kind="answer")
    emit(vocab("</s>"), train=True)
    return ids, loss, spans


def parse_curriculum(text: str, final: tuple[int, int]) -> list[tuple[int, tuple[int, int]]]:
    stages = []
    for part in filter(None, text.split(",")):
        rng_text, steps = part.split(":")
        lo, hi = rng_text.split("-")
        stages.append((int(steps), (int(lo), int(hi))))
    return stages + [(10**12, final)]


def hints_at(step: int, stages) -> tuple[int, int]:
    for steps, hints in stages:
        if step < steps:
            return hints
        step -= steps
    return stages[-1][1]


def collate(rows, pad: int):
    width = max(len(r[0]) for r in rows)
    ids = torch.full((len(rows), width), pad)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, (tokens, loss, _) in enumerate(rows):
        t = torch.tensor(tokens)
        ids[i, : len(t)] = t
        mask[i, : len(t)] = 1
        labels[i, : len(t)] = torch.where(torch.tensor(loss, dtype=torch.bool), t, -100)
    return ids, mask, labels


@torch.no_grad()
def evaluate(model, rows, pad: int) -> dict[str, float]:
    model.eval()
    ids, mask, _ = collate(rows, pad)
    pred = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
    model.train()
    kinds = ("answer", "restate", "summary", "same", "other")
    right, first, total = dict.fromkeys(kinds, 0), dict.fromkeys(kinds, 0), dict.fromkeys(kinds, 0)
    for i, (tokens, _, spans) in enumerate(rows):
        for kind, items in spans.items():
            for a, b in items:  # a is the box's "[", a + 1 its first number: the token that selects the box
                total[kind] += 1
                right[kind] += int(pred[i, a - 1 : b - 1].tolist() == tokens[a:b])
                first[kind] += int(pred[i, a].item() == tokens[a + 1])
    out = {}
    for k in total:
        if total[k]:
            out[f"exact_{k}"] = round(right[k] / total[k], 3)
            if k not in ("same", "other"):  # one-token marks have no first number
                out[f"first_{k}"] = round(first[k] / total[k], 3)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layout", choices=("query", "labelled", "enumerate", "summary", "summary-all", "compare", "compare-local"), default="enumerate")
    p.add_argument("--tokens", choices=("integers", "digits"), default="integers")
    p.add_argument("--hints", default="3-9", help="final range of the hint count, lo-hi")
    p.add_argument("--curriculum", default="", help='earlier stages, e.g. "1-1:300,1-3:300" (range:steps)')
    p.add_argument("--queries", type=int, default=1, help="labels asked per sample")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--tied", action="store_true")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", default="outputs/probes/copy_probe.jsonl")
    p.add_argument("--note", default="")
    p.add_argument("--model", default="", help="a checkpoint folder whose language model and tokenizer to train")
    p.add_argument("--reinit", action="store_true", help="with --model: its architecture, random weights")
    args = p.parse_args(argv)

    from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    colours = COLOURS if args.layout.startswith("compare") else 0
    final = tuple(int(v) for v in args.hints.split("-"))
    stages = parse_curriculum(args.curriculum, final)
    if args.model:  # the width, depth and tying flags describe the fresh LM only
        vocab = TextVocab(args.tokens, AutoTokenizer.from_pretrained(args.model), colours)
        if args.reinit:
            model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(args.model), dtype=torch.float32)
        else:
            model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=torch.float32)
    else:
        vocab = Vocab(args.tokens, colours)
        config = Qwen2Config(vocab_size=len(vocab), hidden_size=args.width, intermediate_size=3 * args.width,
                             num_hidden_layers=args.layers, num_attention_heads=args.heads,
                             num_key_value_heads=args.heads, max_position_embeddings=2048,
                             tie_word_embeddings=args.tied)  # fmt: skip
        model = Qwen2ForCausalLM(config)
    rng, held_rng = random.Random(args.seed), random.Random(10_000 + args.seed)
    held = [make_sample(held_rng, vocab, args.layout, held_rng.randint(*final), args.queries) for _ in range(128)]
    pad = vocab("<pad>")[0]

    def next_batch(step: int):
        lo, hi = hints_at(step, stages)
        ids, mask, labels = collate([make_sample(rng, vocab, args.layout, rng.randint(lo, hi), args.queries)
                                     for _ in range(args.batch)], pad)  # fmt: skip
        return dict(input_ids=ids, attention_mask=mask, labels=labels), {"stage_hints": f"{lo}-{hi}"}

    return train_for(model, args, next_batch, lambda: evaluate(model, held, pad))


if __name__ == "__main__":
    main()
