"""A pretrained stand-in for Qwen2.5-VL-Instruct at demo scale ("small-base").

The released pipeline fine-tunes a model that already reads box coordinates, finds the region a
box names, and copies numbers from its prompt. The ``small`` checkpoint of
:mod:`rexthinker.models.tiny` has random weights and can do none of that; measured on SynthRef,
8 CPU-minutes of SFT from random weights teach the trace's shape but not the boxes (dev/LOG.md).
So the demo starts, like the real recipe, from a model that has those generic skills: this module
pre-trains ``small`` on two instruction tasks that are not the referring task and contain no
reasoning trace:

- *describe* — "Describe every person." with the box hints in the prompt; the answer lists every
  hint in order with its box, shirt colour, height, hat, flag and hand-holding partner,
  ``Person 2 [x0, y0, x1, y1]: red shirt, tall, ...`` (dense region captioning). Stating the box
  makes "Person k" an in-order copy of the hint list, which a small model learns in minutes
  (``benchmarks/copy_probe.py``), where answering "Person k" straight from the unlabelled list
  (counting) is not learned in CPU-hours; ``--no-boxes`` gives the version 1 description;
- *locate* — "Where is Person 3?" / "Where are Person 2 and Person 5?"; the answer is the boxes
  in the referring answer's JSON form (grounded copy of the k-th hint).

Scenes come from SynthRef's generator with their own split name (``pretrain``), so no scene is
shared with the SFT / GRPO / evaluation splits. The result is cached like the random checkpoints:

    python -m rexthinker.models.base              # prints the cached folder, building it if needed
    python -m rexthinker.models.base --steps 400  # a different budget is a different cache entry
    python -m rexthinker.models.base --batch-size 64 --workers 14 --minutes 6   # on a GPU machine
    python -m rexthinker.models.base --measure models/demo-base --chats 512     # probes of a base

On a GPU the model trains in bf16 (``--precision auto``; the shipped base used fp32) and
``--workers`` DataLoader processes draw the scenes; ``--minutes`` times 50 steps and chooses
``--steps`` to fit (:func:`fit_steps`). Every 25 steps the held-out skill probes are logged
(teacher-forced, 32 chats of the ``pretrain-val`` split, :func:`skill_probes`): ``box_exact`` (a
description line's box right in every token), ``colour_acc`` (its shirt colour right), and whole
descriptions and locate answers exactly right.

A third generic skill is optional: *check* — a colour question ("Who wears a red shirt? Check every
person.") answered line by line, each line comparing the colour read with the one asked,
``- Person 2 [box]: blue shirt (want red shirt) → ❌`` (``--copy-task check`` for a text-only warm-up
of it, ``--chat varied-check`` in the image chats, ``--check-weight`` for its marks' loss weight).

What the referring stages then have to learn is the task itself: the plan / action / summary
trace, which persons satisfy the question, and the answer that follows from the summary.

Status (dev/LOG.md): version 1 (descriptions without boxes) taught the answer forms but not the
skills. Version 2 states the boxes, and the box copy came first; the colour of Person k stayed near
chance until SynthRef's demo level drew wider figures with smaller tags (session 5). The shipped
``models/demo-base`` (build 7 of its lineage, 6 minutes on one H200) reads box 1.000 and colour 0.999
on 512 held-out chats, and ``make demo`` starts from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rexthinker.cache import cache_root, cached_build
from rexthinker.contracts.answer import answer_json
from rexthinker.contracts.hint import HINT_LINE, hint_json
from rexthinker.contracts.trace import CROSS, WARN, candidate_name, ordering
from rexthinker.data import synthref
from rexthinker.data.sample import RefSample
from rexthinker.data.synthref.config import ORDINALS, PALETTE
from rexthinker.data.synthref.queries import Term, describe, hands_text, observe
from rexthinker.data.synthref.scene import Scene, label_boxes, make_scene, render
from rexthinker.prompts import THINK_PROMPT, build_messages, pixel_limits
from rexthinker.train.features import IGNORE, Features, collate
from rexthinker.train.learner import Learner, LearnerConfig, OptimConfig
from rexthinker.train.metrics import plot_history

BASE_VERSION = 3  # bump when the tasks or the training procedure change
MARKER = "rexthinker_base.json"
SNAPSHOT = "rexthinker_base_snapshot.json"  # a snapshot written during a build, for BaseRecipe.init


CHATS = ("fixed", "varied", "varied-ask", "varied-check", "varied-checks")  # BaseRecipe.chat
COPY_TASKS = ("list", "check", "select")  # BaseRecipe.copy_task


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
    boxes: bool = True  # each description line states its hint box: "Person 2 [x0, y0, x1, y1]: ..."
    level: str = "full"  # SynthRef level of the scenes (synthref.LEVELS): "full", or "demo" (what make demo trains)
    scene: str = ""  # SynthRef settings over the level, space-separated key=value: "persons=[3,5] marks=true"
    precision: str = "auto"  # bf16 on a GPU, fp32 on CPU
    # A text-only warm-up before the image chats: ``copy_steps`` steps of ``copy_batch_size`` chats
    # that list every hint with its box and answer "Where is Person k?" (no image, so ~8x cheaper
    # a chat): the in-order copy forms there first (benchmarks/copy_probe.py), then ``steps`` steps
    # of image chats add the region reading. 0 = no warm-up.
    copy_steps: int = 0
    copy_batch_size: int = 32
    # What the text-only chats ask. "list": list the hints with their boxes, then locate. "check": the
    # user gives every person's shirt colour in hint order and asks who wears one colour; the answer
    # checks each person against it (:func:`ask_turn` with ``check``): the comparison of a colour read
    # with the one asked, learned where it costs least (no image). "select": as "check", but the answer
    # ends with the JSON of the matching people's boxes instead of naming them: the boxes of the lines
    # marked ⚠, copied in order, as a trace's answer copies its ✅ lines (which the demo SFT's answers
    # did in only 0.12-0.36; dev/LOG.md, session 14).
    copy_task: str = "list"
    # Continue an earlier build: start from the weights in ``init`` (a base or one of its snapshots)
    # and draw scenes from index ``start`` on, so no scene is seen twice. The optimizer starts afresh.
    init: str = ""
    start: int = 0
    # Execution only (not part of the cache key): DataLoader processes that draw the scenes, and how
    # often a snapshot of the weights is written (to <cache>/models/<name>.partial/step-N) for ``init``.
    workers: int = 0
    save_every: int = 500
    # Where the gradient goes: the loss weight of each description line's shirt-colour token against
    # 1 for every other answer token (the loss is the weighted mean). 1 = plain next-token loss.
    colour_weight: float = 1.0
    # The same for the check mark of each checked shirt line ("(want red shirt) → ⚠|❌"): a few
    # tokens of a long answer, so at weight 1 the comparison gets a few percent of the gradient.
    check_weight: float = 1.0
    # The same for what a line says of a person besides the shirt: height, hat, flag, holding hands
    # ("tall", "no hat", "holds a flag", "hands free"). At weight 1 the hats and flags were read in
    # 0.5-0.75 of the SFT traces' lines, the colours (weighted 20) in 0.98; weighted 20-40 for 1,000
    # steps the flags rose (0.87 -> 0.92 in the base) and the hats did not (0.61-0.66); dev/LOG.md, session 13.
    attribute_weight: float = 1.0
    # The chats' form. "fixed": one system prompt, "Describe every person." first, then the locate
    # questions (builds 1-7). "varied": the system prompt, the wording, the order of the turns, a
    # preamble before the description lines and which persons a turn asks about are drawn per chat
    # (:func:`varied_turns`), so the description lines (and their colour reading) land at any
    # distance from the image, as the lines of a reasoning trace do (dev/LOG.md, session 7).
    # "varied-ask": as "varied", and half of the descriptions answer a colour question ("Is anyone
    # wearing a red shirt?") whose colour is named before the lines are written, as a trace's plan
    # names the colours it looks for (:func:`ask_turn`). "varied-check": as "varied-ask", and each
    # shirt line of a colour question is checked against the colour asked, "- Person 2 [box]: blue
    # shirt (want red shirt) → ❌" (⚠ when it matches) before the verdict. "varied-checks": as "varied-check", but
    # three chats in four ask a question, two thirds of them about another attribute (hat, flag,
    # height, holding hands) or an order ("Who is the second person from the left?": the people sorted
    # by x, then each line's place checked against the one asked) instead of a colour (:func:`check_turn`).
    chat: str = "fixed"

    def __post_init__(self) -> None:
        if self.chat not in CHATS:
            raise ValueError(f"unknown base chat form {self.chat!r}; choose one of {', '.join(CHATS)}")
        if self.copy_task not in COPY_TASKS:
            raise ValueError(f"unknown base copy task {self.copy_task!r}; choose one of {', '.join(COPY_TASKS)}")

    def key(self, spec_key: str) -> str:
        payload = dict(dataclasses.asdict(self), spec_key=spec_key, version=BASE_VERSION)
        for name in ("workers", "save_every"):
            payload.pop(name)
        # builds made before a setting existed keep their key
        for name, old in (("colour_weight", 1.0), ("check_weight", 1.0), ("attribute_weight", 1.0), ("chat", "fixed"), ("copy_task", "list")):
            if payload[name] == old:
                payload.pop(name)
        if self.init:  # the weights it starts from, not where they happen to lie
            payload["init"] = init_digest(Path(self.init))
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    def scene_config(self) -> synthref.SynthRefConfig:
        return synthref.level_config(self.level, self.scene.split())


def init_digest(folder: Path) -> str:
    """A content digest of the weights in ``folder``."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {folder} (BaseRecipe.init)")
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


# --- the tasks -------------------------------------------------------------------------------------
DESCRIBE = "Describe every person."
LIST = "List every person with its box."


def describe_line(scene: Scene, k: int, box: list[int] | None = None, shirt_only: bool = False) -> str:
    """``Person 3 [x0, y0, x1, y1]: red shirt, ...`` (without the box when ``box`` is None; only the
    shirt with ``shirt_only``)."""
    fig = scene.figures[k]
    parts = [observe(fig, kind) for kind in (("color",) if shirt_only else ("color", "tall", "hat", "flag"))]
    if scene.hands.get(k) and not shirt_only:
        parts.append(hands_text(scene, k))
    return f"{candidate_name(synthref.CATEGORY, k, box)}: " + ", ".join(parts)


SYSTEMS = ("You are a helpful assistant.", THINK_PROMPT, "You look at images carefully and answer in short lines.")
DESCRIBE_ALL = (DESCRIBE, "Describe each person in the image, in the order of the hints.", "Who is in this image? One line per person.",
                "Please describe all the people in this image.")  # fmt: skip
SHIRTS_ALL = ("What shirt does each person wear?", "Name the shirt colour of every person.")
PREAMBLES = ("", "", "Sure.\n", "Here is every person, in the order of the hints:\n",
             "OK, the user wants a description. I will go through the people one by one and write one line for each, "
             "with the box from the hint and what I see inside it.\n\n# People\n",
             "<think>Let me look at each person in turn.\n",
             "There {are} {n} {people} in the hint list. I will check the region of each box in the image, starting with "
             "Person 1 and ending with Person {n}, and state the shirt colour I see there first.\n\n")  # fmt: skip


def _names(picked: list[int]) -> str:
    names = [f"Person {k + 1}" for k in picked]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def varied_turns(rng: random.Random, scene: Scene, boxes: list[list[int]], hint: str, ask: bool = False,
                 check: bool = False, others: bool = False) -> list[tuple[str, str]]:  # fmt: skip
    """The "varied" chat of a scene: 1-6 turns in a random order, one of them a description of every
    person (all attributes, or the shirt only) after a random preamble, or with ``ask`` half the time
    a colour question (:func:`ask_turn`, its lines checked with ``check``; with ``others`` instead
    three times in four a question, two thirds of them about another attribute or an order,
    :func:`check_turn`); the others locate questions or descriptions of some persons. Only the first
    user turn carries the hints."""
    n = scene.n
    preamble = rng.choice(PREAMBLES).format(n=n, are="is" if n == 1 else "are", people="person" if n == 1 else "people")
    shirts = rng.random() < 0.4
    lines = [describe_line(scene, k, boxes[k], shirt_only=shirts) for k in range(n)]
    every = (rng.choice(SHIRTS_ALL if shirts else DESCRIBE_ALL), preamble + "\n".join(lines))
    if others:
        if rng.random() < 0.75:
            every = check_turn(rng, scene, boxes) if rng.random() < 2 / 3 else ask_turn(rng, scene, boxes, check)
    elif ask and rng.random() < 0.5:
        every = ask_turn(rng, scene, boxes, check)
    turns = [locate_turn(rng, n, boxes) for _ in range(rng.randint(0, 3))]
    for _ in range(rng.randint(0, 2)):
        picked = sorted(rng.sample(range(n), rng.randint(1, n)))
        turns.append((f"Describe {_names(picked)}.", "\n".join(describe_line(scene, k, boxes[k]) for k in picked)))
    rng.shuffle(turns)
    turns.insert(rng.randint(0, len(turns)), every)
    first, answer = turns[0]
    return [(hint + first, answer), *turns[1:]]


def ask_turn(rng: random.Random, scene: Scene, boxes: list[list[int]], check: bool = False, select: bool = False) -> tuple[str, str]:
    """"Is anyone wearing a red shirt?": the answer names the colour asked for, goes through every
    person's shirt ("- Person 2 [box]: blue shirt"), then answers yes (who) or no. The colour is one of
    the scene's half the time; the lines must still be read from the image, not copied from the question.
    With ``check`` each line ends by comparing: "blue shirt (want red shirt) → ❌", ⚠ for a match;
    with ``select`` too, the answer ends with the JSON of the matches' boxes (``[]`` for none)
    instead of naming them. The random draws are the same either way."""
    worn = sorted({fig.color for fig in scene.figures})
    colour = rng.choice(worn) if rng.random() < 0.5 else rng.choice(sorted(PALETTE))
    a = "an" if colour[0] in "aeiou" else "a"
    dash = rng.choice(("", "- "))
    lines = [dash + describe_line(scene, k, boxes[k], shirt_only=True) for k in range(scene.n)]
    if check:
        lines = [f"{line} (want {colour} shirt) → {WARN if fig.color == colour else CROSS}" for line, fig in zip(lines, scene.figures)]
    who = [k for k, fig in enumerate(scene.figures) if fig.color == colour]
    verdict = f"Yes: {_names(who)}." if who else f"No, nobody wears {a} {colour} shirt."
    if select:
        verdict = answer_json([boxes[k] for k in who], f"the people in {a} {colour} shirt")
    question = rng.choice((f"Is anyone wearing {a} {colour} shirt?", f"Who wears {a} {colour} shirt? Check every person."))
    opening = rng.choice((f"I need to find the people in {a} {colour} shirt.\n", f"Looking for {a} {colour} shirt, person by person:\n\n",
                          f"OK, the user asks about {a} {colour} shirt. Let me check each person.\n\n# Find the people in {a} {colour} shirt\n"))  # fmt: skip
    return question, opening + "\n".join(lines) + "\n" + verdict


def check_turn(rng: random.Random, scene: Scene, boxes: list[list[int]]) -> tuple[str, str]:
    """A question that checks every person against one property other than the shirt colour: a hat,
    a flag, the height, holding hands ("Who wears a hat? Check every person." → "- Person 2 [box]: no
    hat (want wears a hat) → ❌"), or a place in the left-to-right order ("Who is the second person
    from the left?": the people sorted by x, then "- Person 3 [box]: first from the left (want second
    from the left) → ❌" in that order). ⚠ marks a match; a verdict names who matched."""
    n, kind = scene.n, rng.choice(("hat", "flag", "tall", "hands", "order", "order"))
    if kind == "order":
        side = rng.choice(("left", "right"))
        other = "right" if side == "left" else "left"
        seq = scene.left_to_right() if side == "left" else scene.left_to_right()[::-1]
        k = rng.randrange(n)
        want = f"{ORDINALS[k]} from the {side}"
        question = rng.choice((f"Who is the {ORDINALS[k]} person from the {side}?", f"Which person is {want}? Check every person."))
        lines = [f"- {candidate_name(synthref.CATEGORY, i, boxes[i])}: {ORDINALS[pos]} from the {side} (want {want}) → {WARN if pos == k else CROSS}"
                 for pos, i in enumerate(seq)]  # fmt: skip
        return question, (f"# Sort the people from {side} to {other}\nFrom {side} to {other}: {ordering(synthref.CATEGORY, seq)}.\n\n"
                          f"# Find the {want}\n" + "\n".join(lines) + f"\nThat is {candidate_name(synthref.CATEGORY, seq[k])}.")  # fmt: skip
    if kind == "hands":
        holds, want, title = [bool(scene.hands.get(i)) for i in range(n)], "holding hands", "Check who is holding hands"
        texts, question = [hands_text(scene, i) for i in range(n)], "Who is holding hands with someone? Check every person."
    else:
        term = Term(kind, rng.random() < 0.5)
        holds, want, title = [term.holds(fig) for fig in scene.figures], term.want().removeprefix("want "), term.title()
        texts, question = [observe(fig, kind) for fig in scene.figures], f"Who is {describe([term])}? Check every person."
    lines = [f"- {candidate_name(synthref.CATEGORY, i, boxes[i])}: {texts[i]} (want {want}) → {WARN if holds[i] else CROSS}" for i in range(n)]
    who = [i for i in range(n) if holds[i]]
    return question, f"# {title}\n" + "\n".join(lines) + "\n" + (f"Yes: {_names(who)}." if who else "Nobody.")


def system_prompt(index: int, recipe: BaseRecipe, split: str = "pretrain") -> str:
    """The system prompt of chat ``index``: always "You are a helpful assistant." in the fixed chats,
    one of :data:`SYSTEMS` in the varied ones (drawn apart from the scene, so the scenes do not change)."""
    if recipe.chat == "fixed":
        return SYSTEMS[0]
    return synthref.sample_rng(recipe.seed, split + "-system", index).choice(SYSTEMS)


def locate_turn(rng: random.Random, n: int, boxes: list[list[int]]) -> tuple[str, str]:
    count = rng.choice((1, 1, 2, 3)) if n >= 3 else 1
    picked = sorted(rng.sample(range(n), min(count, n)))
    names = [f"Person {k + 1}" for k in picked]
    question = f"Where is {names[0]}?" if len(names) == 1 else f"Where are {', '.join(names[:-1])} and {names[-1]}?"
    label = names[0] if len(names) == 1 else "the people asked for"
    return question, answer_json([boxes[k] for k in picked], label)


def make_example(index: int, recipe: BaseRecipe, min_pixels: int, max_pixels: int, split: str = "pretrain", copy: bool = False):
    """One image with its chat: [(user text, assistant text), ...]; the first user text carries the
    hints. ``copy``: the text-only warm-up chat (list the hints with their boxes, then locate), whose
    image is not shown to the model. The system prompt is :func:`system_prompt`'s."""
    rng = synthref.sample_rng(recipe.seed, split, index)
    cfg = recipe.scene_config()
    scene = make_scene(rng, cfg, set())
    image, labels = render(scene, rng, cfg)
    sample = RefSample(id=f"base-{split}-{index}", image_name="", referring="", answer_boxes=[],
                       candidate_boxes=label_boxes(labels, scene.n),
                       category=synthref.CATEGORY, image_size=(scene.width, scene.height))  # fmt: skip
    messages, info = build_messages(sample, min_pixels, max_pixels, image=image)
    hint = HINT_LINE.format(hint=hint_json(synthref.CATEGORY, info.hint_boxes))
    if recipe.chat != "fixed" and not copy:
        return image, varied_turns(rng, scene, info.hint_boxes, hint, ask=recipe.chat in ("varied-ask", "varied-check", "varied-checks"),
                                   check=recipe.chat in ("varied-check", "varied-checks"), others=recipe.chat == "varied-checks")  # fmt: skip
    if copy and recipe.copy_task in ("check", "select"):
        question, answer = ask_turn(rng, scene, info.hint_boxes, check=True, select=recipe.copy_task == "select")
        shirts = ", ".join(fig.color for fig in scene.figures)
        return image, [(f"{hint}Their shirts, in the order of the hints: {shirts}.\n{question}", answer)]
    if copy:
        turns = [(hint + LIST, "\n".join(candidate_name(synthref.CATEGORY, k, info.hint_boxes[k]) for k in range(scene.n)))]
    else:
        stated = info.hint_boxes if recipe.boxes else [None] * scene.n
        turns = [(hint + DESCRIBE, "\n".join(describe_line(scene, k, stated[k]) for k in range(scene.n)))]
    turns += [locate_turn(rng, scene.n, info.hint_boxes) for _ in range(recipe.locate_turns)]
    return image, turns


def build_features(processor, image, turns: list[tuple[str, str]], system: str = SYSTEMS[0]) -> Features:
    """Token features of a multi-turn chat; labels cover every assistant turn and its ``<|im_end|>``."""
    tok = processor.tokenizer
    vision = "" if image is None else "<|vision_start|><|image_pad|><|vision_end|>"
    first = (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n"
             f"{vision}{turns[0][0]}<|im_end|>\n<|im_start|>assistant\n")  # fmt: skip
    if image is None:  # text only: no pixels, every token a text token
        ids = tok(first, add_special_tokens=False, return_tensors="pt")["input_ids"]
        enc = {"input_ids": ids, "mm_token_type_ids": torch.zeros_like(ids), "pixel_values": None, "image_grid_thw": None}
    else:
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


# --- skill probes ----------------------------------------------------------------------------------
PROBES = {"box": "box_exact", "colour": "colour_acc", "describe": "describe_exact", "locate": "locate_exact",
          "same": "check_same", "other": "check_other", "attribute": "attribute_acc"}  # fmt: skip

def describe_targets(tokenizer, answer: str) -> list[tuple[list[int], list[int], list[int], bool, list[list[int]]]]:
    """For each description line of an answer (``Person k ...: colour shirt, ...``) or checked line
    (:func:`check_turn`'s; other lines, such as a preamble, are skipped), the token indices (within ``answer + <|im_end|>`` tokenised on its
    own, as :func:`build_features` does) of its box, of its shirt-colour word and of its check mark
    (``→ ⚠|❌`` of a checked line; none otherwise), whether that mark is ⚠ (a match), and the tokens
    of each other attribute it states ("tall", "no hat", "holds a flag", "hands free", ...)."""
    enc = tokenizer(answer + "<|im_end|>", add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]

    def tokens(a: int, b: int) -> list[int]:
        return [j for j, (x, y) in enumerate(offsets) if x < b and y > a and y > x]

    out, pos = [], 0
    for line in answer.split("\n"):
        head, _, rest = line.partition(": ")
        if _PERSON_LINE.match(line) or _CHECKED_LINE.match(line):
            box = tokens(pos + head.index("["), pos + len(head)) if "[" in head else []
            colour_at = pos + len(head) + 2
            colour = tokens(colour_at, colour_at + len(rest.split(" ")[0])) if _SHIRT.match(rest) else []
            arrow = line.rfind(" → ")
            mark = tokens(pos + arrow + 3, pos + len(line)) if arrow >= 0 else []
            attributes, at = [], colour_at
            for part in rest.split(" (want ")[0].split(", "):
                if _ATTRIBUTE.fullmatch(part):
                    attributes.append(tokens(at, at + len(part)))
                at += len(part) + 2
            out.append((box, colour, mark, line.endswith(WARN), attributes))
        pos += len(line) + 1
    return out


_PERSON_LINE = re.compile(r"(- )?Person \d+( \[[\d, ]+\])?(: \w+ shirt|$)")  # a description line, or a bare one of the copy chats
_CHECKED_LINE = re.compile(r"- Person \d+ \[[\d, ]+\]: .+ \(want .+\) → ")  # a line of check_turn
_SHIRT = re.compile(r"\w+ shirt")
_ATTRIBUTE = re.compile(r"tall|short|wears a hat|no hat|holds a flag|no flag|hands free|holds hands with .+")  # what observe / hands_text write


def chat_targets(tokenizer, turns: list[tuple[str, str]]) -> list[tuple[int, list[int], list[int], list[int], bool, list[list[int]]]]:
    """The probe targets of a chat: ``(turn, box, colour, mark, same, attributes)`` for every
    description or checked line of every assistant turn (token indices within that turn's answer, as :func:`describe_targets`)."""
    return [(i, *line) for i, (_, answer) in enumerate(turns) for line in describe_targets(tokenizer, answer)]


def skill_probes(logits: torch.Tensor, labels: torch.Tensor, targets: list[list[tuple[int, list[int], list[int]]]]) -> dict[str, float]:
    """Teacher-forced skill probes of a batch of chats (argmax at every position):

    - ``box_exact``: description lines whose box ("Person k [x0, y0, x1, y1]") is right in every
      token: the k-th hint box copied;
    - ``colour_acc``: description lines whose shirt colour is right: the region that box names, read;
    - ``describe_exact`` / ``locate_exact``: whole answers right (those with description lines;
      the others, "Where is ...");
    - ``check_same`` / ``check_other``: the mark of a checked line ("(want red shirt) → ⚠|❌"),
      right, where what it states is / is not what was asked: the comparison, the observation given.
    - ``attribute_acc``: the other attributes a line states (height, hat, flag, holding hands), each
      right in every token.

    ``targets``: :func:`chat_targets` of each row.
    """
    counts, totals = probe_counts(logits, labels, targets)
    return {PROBES[k]: counts[k] / totals[k] for k in counts if totals[k]}


def probe_counts(logits: torch.Tensor, labels: torch.Tensor, targets) -> tuple[dict[str, int], dict[str, int]]:
    """What :func:`skill_probes` divides: right answers and totals per probe (to pool several batches)."""
    pred = logits[:, :-1].argmax(-1)
    gold = labels[:, 1:]
    counts = dict.fromkeys(PROBES, 0)
    totals = dict.fromkeys(counts, 0)
    for row in range(gold.shape[0]):
        spans = _answer_spans(gold[row])
        if not spans:
            continue
        described = {line[0] for line in targets[row]}
        for i, span in enumerate(spans):
            task = "describe" if i in described else "locate"
            totals[task] += 1
            counts[task] += bool((pred[row, span] == gold[row, span]).all())
        for turn, box, colour, mark, same, attributes in targets[row]:
            for name, where in (("box", box), ("colour", colour), ("same" if same else "other", mark), *(("attribute", a) for a in attributes)):
                if where:
                    totals[name] += 1
                    at = spans[turn][torch.tensor(where)]
                    counts[name] += bool((pred[row, at] == gold[row, at]).all())
    return counts, totals


def measure(folder: Path, chats: int = 256, start: int = 0, batch_size: int = 16, chat: str = "fixed") -> dict[str, float]:
    """The held-out skill probes of the base in ``folder`` (a build, snapshot or shipped copy) on chats
    ``start .. start+chats-1`` of the ``pretrain-val`` split at its last build's scene settings, in
    the ``chat`` form (the fixed describe chats by default, whatever the build trained on, so that
    every build is measured alike), fp32 compute, pooled over all the chats. The probes logged while
    training use the first 32 chats of the build's own form."""
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    recipe = BaseRecipe(**{**lineage(folder)[-1]["recipe"], "init": "", "chat": chat})
    processor = AutoProcessor.from_pretrained(folder)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    counts, totals = {}, {}
    for data, targets in _loader(Chats(processor, recipe, "pretrain-val", start, chats), batch_size, 0, processor.tokenizer.pad_token_id):
        with torch.no_grad():
            logits = model(**{k: v for k, v in data.items() if k not in ("labels", "skipped")}).logits.float()
        for total, part in zip((counts, totals), probe_counts(logits, data["labels"], targets)):
            for k, v in part.items():
                total[k] = total.get(k, 0) + v
    return {PROBES[k]: counts[k] / totals[k] for k in counts if totals[k]}


def _answer_spans(gold_row: torch.Tensor) -> list[torch.Tensor]:
    """The positions of each assistant turn in one row of shifted labels (the description first)."""
    idx = (gold_row != IGNORE).nonzero().flatten()
    return list(torch.tensor_split(idx, (torch.diff(idx) > 1).nonzero().flatten() + 1)) if len(idx) else []


def weighted_loss(logits: torch.Tensor, labels: torch.Tensor, targets, colour_weight: float, check_weight: float = 1.0,
                  attribute_weight: float = 1.0) -> torch.Tensor:  # fmt: skip
    """Next-token cross-entropy over the answer tokens, each description line's colour token weighted
    ``colour_weight``, each check mark ``check_weight``, the tokens of its other attributes
    ``attribute_weight`` and every other 1 (the weighted mean; plain mean at 1)."""
    gold = labels[:, 1:]
    losses = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), gold.flatten(), ignore_index=IGNORE,
                                               reduction="none").view_as(gold)  # fmt: skip
    weights = (gold != IGNORE).float()
    if colour_weight != 1.0 or check_weight != 1.0 or attribute_weight != 1.0:  # built on the CPU: one copy of the labels, not a device sync per row
        on_cpu = gold.cpu()
        weights = weights.cpu()
        for row in range(on_cpu.shape[0]):
            spans = _answer_spans(on_cpu[row])
            for turn, _, colour, mark, _, attributes in targets[row] if spans else ():
                for where, weight in ((colour, colour_weight), (mark, check_weight), *((a, attribute_weight) for a in attributes)):
                    if where:
                        weights[row, spans[turn][torch.tensor(where)]] = weight
        weights = weights.to(losses.device)
    return (losses * weights).sum() / weights.sum().clamp(min=1.0)


# --- training --------------------------------------------------------------------------------------
class Chats(torch.utils.data.Dataset):
    """Pre-training chats ``start .. start+size-1`` of ``split``, drawn on demand (in DataLoader
    workers when there are any): features plus the probe targets of the description."""

    def __init__(self, processor, recipe: BaseRecipe, split: str, start: int, size: int, copy: bool = False):
        self.processor, self.recipe, self.split, self.start, self.size = processor, recipe, split, start, size
        self.limits, self.copy = pixel_limits(processor), copy

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int):
        image, turns = make_example(self.start + i, self.recipe, *self.limits, self.split, copy=self.copy)
        features = build_features(self.processor, None if self.copy else image, turns, system_prompt(self.start + i, self.recipe, self.split))
        return features, chat_targets(self.processor.tokenizer, turns)


def _loader(chats: Chats, batch_size: int, workers: int, pad_id: int):
    def collate_chats(items):
        return collate([f for f, _ in items], pad_id), [t for _, t in items]

    return torch.utils.data.DataLoader(chats, batch_size=batch_size, num_workers=workers, collate_fn=collate_chats,
                                       prefetch_factor=4 if workers else None, worker_init_fn=_one_thread)  # fmt: skip


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)  # each worker draws scenes on one core; several threads each would oversubscribe


def pretrain(model_dir: Path, out_dir: Path, recipe: BaseRecipe, log=print, snapshots: Path | None = None,
             earlier: list[dict] = ()) -> dict:  # fmt: skip
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from rexthinker.train import dist

    torch.manual_seed(recipe.seed)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    pad_id = processor.tokenizer.pad_token_id
    total = recipe.copy_steps + recipe.steps
    optim = OptimConfig(lr=recipe.lr, weight_decay=recipe.weight_decay, betas=(0.9, 0.98), scheduler="cosine",
                        warmup_ratio=recipe.warmup_steps / total, max_grad_norm=1.0)  # fmt: skip
    learner = Learner(model, optim, LearnerConfig(strategy="single", precision=recipe.precision), total)
    device = dist.device()

    def on_device(batch: dict) -> dict:
        return {k: v.to(device) for k, v in batch.items() if k not in ("labels", "skipped")}

    held_out, held_targets = next(iter(_loader(Chats(processor, recipe, "pretrain-val", 0, 32), 32, 0, pad_id)))
    train = _loader(Chats(processor, recipe, "pretrain", recipe.start, recipe.steps * recipe.batch_size), recipe.batch_size,
                    recipe.workers, pad_id)  # fmt: skip
    copy = _loader(Chats(processor, recipe, "pretrain-copy", recipe.start, recipe.copy_steps * recipe.copy_batch_size, copy=True),
                   recipe.copy_batch_size, recipe.workers, pad_id)  # fmt: skip
    history, start_time = [], time.perf_counter()
    for step, (data, targets) in enumerate(itertools.chain(copy if recipe.copy_steps else [], train)):
        model.train()
        labels = data["labels"].to(device)
        logits = learner(**on_device(data)).logits
        loss = weighted_loss(logits, labels, targets, recipe.colour_weight, recipe.check_weight, recipe.attribute_weight)
        learner.backward(loss)
        stats = learner.step()
        row = {"step": step + 1, "loss": float(loss.detach()), "grad_norm": stats["grad_norm"], "elapsed_s": time.perf_counter() - start_time}
        if (step + 1) % 25 == 0 or step + 1 == total:
            model.eval()
            with torch.no_grad():
                probes = skill_probes(model(**on_device(held_out)).logits.float().cpu(), held_out["labels"], held_targets)
            row.update({f"heldout_{k}": v for k, v in probes.items()})
            log(f"[base] step {step + 1}/{total} loss {row['loss']:.4f} held-out: "
                + ", ".join(f"{k} {v:.3f}" for k, v in probes.items()) + f" ({row['elapsed_s']:.0f} s)")  # fmt: skip
        history.append(row)
        if snapshots is not None and recipe.save_every and (step + 1) % recipe.save_every == 0 and step + 1 < total:
            snap = snapshots / f"step-{step + 1}"
            learner.export_hf(snap, processor)
            (snap / "pretrain_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
            (snap / SNAPSHOT).write_text(json.dumps({"lineage": [*earlier, _record(recipe, row)]}) + "\n")
            log(f"[base] snapshot {snap} (continue with --init {snap} --start {recipe.start + max(0, step + 1 - recipe.copy_steps) * recipe.batch_size})")
    learner.export_hf(out_dir, processor)
    (out_dir / "pretrain_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    return history[-1]


def fit_steps(recipe: BaseRecipe, minutes: float, log=print, timed_steps: int = 50) -> BaseRecipe:
    """``recipe`` with ``steps`` chosen so that the whole command (this timing included) takes about
    ``minutes`` here: ``timed_steps`` steps of the same recipe run first (throwaway, not cached), and
    the time per step after the first 10 and the fixed costs (loading, DataLoader start, export)
    set the budget. The chosen ``steps`` is part of the recipe, so the card's command rebuilds it."""
    import tempfile

    from rexthinker.models import tiny

    if recipe.copy_steps:
        raise ValueError("--minutes fits the image steps only; give --steps when --copy-steps is set")
    began = time.perf_counter()
    source = Path(recipe.init) if recipe.init else tiny.get(recipe.spec)
    trial = dataclasses.replace(recipe, steps=timed_steps, warmup_steps=min(recipe.warmup_steps, timed_steps // 2))
    with tempfile.TemporaryDirectory() as tmp:
        pretrain(source, Path(tmp), trial, log=lambda _: None)
        history = [json.loads(line) for line in (Path(tmp) / "pretrain_history.jsonl").read_text().splitlines()]
    spent = time.perf_counter() - began
    per_step = (history[-1]["elapsed_s"] - history[9]["elapsed_s"]) / (timed_steps - 10)
    fixed = spent - history[-1]["elapsed_s"]  # one build's start and export
    steps = int(0.95 * (minutes * 60 - spent - fixed) / per_step)
    if steps < timed_steps:
        raise ValueError(f"--minutes {minutes}: {timed_steps} timed steps took {spent:.0f} s ({per_step:.3f} s a step), "
                         f"so the budget leaves only {max(steps, 0)} steps; give more minutes or --steps")  # fmt: skip
    log(f"[base] fit: {per_step:.3f} s a step after {timed_steps} timed steps ({spent:.0f} s, {fixed:.0f} s of it fixed) "
        f"-> --steps {steps} for {minutes:g} minutes")  # fmt: skip
    return dataclasses.replace(recipe, steps=steps)


def get(recipe: BaseRecipe | None = None, log=print) -> Path:
    """The cached pre-trained base for ``recipe``, built on first use (atomic, race-free)."""
    from rexthinker.models import tiny

    recipe = recipe or BaseRecipe()
    spec = tiny.SPECS[recipe.spec]
    source = Path(recipe.init) if recipe.init else tiny.get(recipe.spec)
    target = cache_root() / "models" / f"{recipe.spec}-base-{recipe.key(spec.key())}"

    def build(folder: Path) -> None:
        log(f"[base] pre-training {recipe.spec} from {source} for {recipe.copy_steps} text-only steps x {recipe.copy_batch_size} "
            f"and {recipe.steps} steps x {recipe.batch_size} images "
            f"(cached in {target})")  # fmt: skip
        earlier = lineage(source) if recipe.init else []
        last = pretrain(source, folder, recipe, log, snapshots=target.with_name(target.name + ".partial"), earlier=earlier)
        (folder / MARKER).write_text(json.dumps({"recipe": dataclasses.asdict(recipe), "source": str(source), "last": last,
                                                 "lineage": [*earlier, _record(recipe, last)]}) + "\n")  # fmt: skip

    return cached_build(target, MARKER, build)


# --- the shipped base ------------------------------------------------------------------------------
SHIPPED = Path(__file__).resolve().parents[2] / "models" / "demo-base"  # what `make demo` starts from
_COPIED = ("config.json", "generation_config.json", "chat_template.jinja", "processor_config.json",
           "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "pretrain_history.jsonl", "box_frame.json")  # fmt: skip


def shipped() -> Path:
    """The base committed to the repository (``models/demo-base``)."""
    if not (SHIPPED / MARKER).exists():
        raise FileNotFoundError(f"{SHIPPED} holds no {MARKER}; rebuild it with the command in its README.md")
    return SHIPPED


def lineage(folder: Path) -> list[dict]:
    """The builds that made the weights in ``folder`` (a base or a snapshot of one), oldest first:
    each its recipe, last logged row, steps run and wall time."""
    for name in (MARKER, SNAPSHOT):
        if (folder / name).exists():
            return json.loads((folder / name).read_text())["lineage"]
    raise FileNotFoundError(f"{folder} is neither a base build nor a snapshot of one (no {MARKER} or {SNAPSHOT})")


def _record(recipe: BaseRecipe, row: dict) -> dict:
    return {"recipe": dataclasses.asdict(recipe), "steps_run": row["step"], "last": row, "wall_s": round(row["elapsed_s"])}


def command(recipe: dict) -> str:
    """The ``python -m rexthinker.models.base`` command line of a recipe (non-default fields only)."""
    defaults = dataclasses.asdict(BaseRecipe())
    args = []
    for name, value in recipe.items():
        if name == "workers" or value == defaults.get(name):
            continue
        flag = "--" + name.replace("_", "-")
        args += [flag if value else "--no-" + flag[2:]] if isinstance(value, bool) else [flag, json.dumps(value) if isinstance(value, str) and " " in value else str(value)]
    return " ".join(["python -m rexthinker.models.base", *args])


def ship(folder: Path, dest: Path = SHIPPED, dtype: str = "bfloat16", note: str = "") -> Path:
    """Write the base in ``folder`` (a build, or a snapshot of one) to ``dest`` as ``dtype`` safetensors with a model card
    (README.md: the commands, data, steps, wall time and held-out probes of every build in its lineage)."""
    from safetensors.torch import load_file, save_file

    chain = lineage(folder)
    dest.mkdir(parents=True, exist_ok=True)
    weights = {k: v.to(getattr(torch, dtype)).contiguous() for k, v in load_file(folder / "model.safetensors").items()}
    save_file(weights, dest / "model.safetensors", metadata={"format": "pt"})
    for name in _COPIED:
        if (folder / name).exists():
            (dest / name).write_bytes((folder / name).read_bytes())
    if (folder / MARKER).exists():
        marker = json.loads((folder / MARKER).read_text())
    else:  # a snapshot of a build that went on (or was stopped): its own record is the lineage's last
        marker = {"recipe": chain[-1]["recipe"], "source": str(folder), "last": chain[-1]["last"], "lineage": chain}
    (dest / MARKER).write_text(json.dumps({**marker, "dtype": dtype}) + "\n")
    history = [json.loads(line) for line in (folder / "pretrain_history.jsonl").read_text().splitlines()]
    plot_history(history, ["loss", "heldout_box_exact", "heldout_colour_acc"], dest / "pretrain_curves.png",
                 f"{dest.name}: pre-training, held-out probes every 25 steps")  # fmt: skip
    (dest / "README.md").write_text(model_card(chain, dtype, sum(v.numel() for v in weights.values()), note))
    return dest


def model_card(chain: list[dict], dtype: str, n_params: int, note: str = "") -> str:
    probes = ("heldout_box_exact", "heldout_colour_acc", "heldout_describe_exact", "heldout_locate_exact")
    lines = [
        "# demo-base: the small Qwen2.5-VL that `make demo` starts from",
        "",
        f"The `{chain[-1]['recipe']['spec']}` Qwen2.5-VL architecture of `rexthinker.models.tiny` ({n_params / 1e6:.2f} M parameters, {dtype}),",
        "pre-trained by `rexthinker.models.base` on generic tasks that are not the referring task:",
        "describing every hinted person (`Person 2 [x0, y0, x1, y1]: red shirt, tall, ...`), locating",
        "`Person k` (its hint box as JSON) and, from `--chat varied-ask` on, chats of varied form (system",
        "prompt, wording, turn order, preambles, some persons only) and colour questions (\"Is anyone wearing",
        "a red shirt?\", answered line by line). Scenes are SynthRef's, from its own `pretrain` split, so none is",
        "shared with the SFT, GRPO or evaluation splits. It is a stand-in for a pre-trained VLM at demo",
        "scale; it is not a model of real photographs.",
        "",
        "## How it was built",
        "",
        "Each build below continues from the one before it (same scenes never drawn twice). Rebuild with",
        "the same commands; `REXTHINKER_CACHE` decides where the builds are cached, and",
        "`python -c \"from rexthinker.models import base; base.ship(PATH)\"` writes this folder from one.",
        "",
        "| # | command | seed | steps x batch | chats | wall | box exact | colour | describe exact | locate exact |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, build in enumerate(chain, 1):
        r, last, run = build["recipe"], build["last"], build["steps_run"]
        copy_steps = min(run, r.get("copy_steps", 0))
        steps = run - copy_steps
        stopped = run < copy_steps + r["steps"] or copy_steps < r.get("copy_steps", 0)
        shape = f"{steps} x {r['batch_size']}" + (f" (after {copy_steps} x {r['copy_batch_size']} text-only)" if copy_steps else "")
        chats = f"{steps * r['batch_size']:,}" + (f" + {copy_steps * r['copy_batch_size']:,}" if copy_steps else "")
        cells = [f"{last[p]:.3f}" if p in last else "–" for p in probes]
        lines.append(f"| {i} | `{command(r)}`{' (stopped at a snapshot)' if stopped else ''} | {r['seed']} | "
                     f"{shape} | {chats} | {build['wall_s'] / 60:.0f} min | {' | '.join(cells)} |")  # fmt: skip
    lines += [
        "",
        "The probes are teacher-forced on 32 held-out chats of the build's own form (`pretrain-val` split): `box exact` is a",
        "description line's box right in every token (the k-th hint copied), `colour` its shirt colour",
        "(the region that box names, read), and the other two whole answers right. The full curves are in",
        "`pretrain_history.jsonl` (plotted in `pretrain_curves.png`); `tests/models/test_shipped_base.py` re-checks the probes on a fixed",
        "handful of chats.",
        "",
    ]
    if note:
        lines += ["## Notes", "", note.strip(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = BaseRecipe()
    for f in dataclasses.fields(BaseRecipe):
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            parser.add_argument("--" + f.name.replace("_", "-"), action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument("--" + f.name.replace("_", "-"), type=type(default), default=default)
    parser.add_argument("--ship", type=Path, default=None, help="also write the build there with its model card")
    parser.add_argument("--note", default="", help="a paragraph for the model card (where it ran, what it can and cannot do)")
    parser.add_argument("--minutes", type=float, default=0.0,
                        help="choose --steps so the command takes about this long here (times 50 steps first; GPU mode)")  # fmt: skip
    parser.add_argument("--measure", type=Path, default=None,
                        help="print the held-out probes of the base in this folder on --chats chats of the --chat form, and build nothing")
    parser.add_argument("--chats", type=int, default=256, help="held-out chats for --measure")  # fmt: skip
    args = parser.parse_args(argv)
    if args.measure:
        probes = measure(args.measure, args.chats, chat=args.chat)
        print(json.dumps({"base": str(args.measure), "chats": args.chats, "chat": args.chat, **probes}))
        return 0
    recipe = BaseRecipe(**{f.name: getattr(args, f.name) for f in dataclasses.fields(BaseRecipe)})
    if args.minutes:
        recipe = fit_steps(recipe, args.minutes)
    path = get(recipe)
    print(path)
    if args.ship:
        print(ship(path, args.ship, note=args.note))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
