"""SynthRef: a procedural referring task shaped like HumanRef, small enough to learn on a CPU.

Each scene is a light, plain image with 3-9 stick-like people standing left to right without
overlap. What tells them apart is drawn big and in high contrast, so a small vision tower can see it:

- shirt colour (a few very distinct colours; a scene uses only some of them, so colours repeat);
- a dark hat or none; tall or short (clearly different heights);
- a flag on a pole held beside the figure, or none;
- two neighbours holding hands (a thick line between them), and sometimes a tree standing between
  two people (a landmark for "outer" positions).

The candidate boxes are the exact boxes of the figures' silhouettes (flag included), listed in a
random order as a detector would, so "Person k" is not the k-th from the left. Each sample carries a
referring expression in one of HumanRef's domains (attribute, position, interaction, reasoning,
rejection, with HumanRef-like sub-domains), the matching boxes (none for a rejection), per-target
COCO RLE masks in ``extra["answer_segmentations"]`` and a rule-written chain-of-thought trace whose
✅ set is asserted to equal the answer.

Everything is a pure function of ``(seed, split, index)``: the same arguments give byte-identical
samples whatever the number of worker processes.
"""

from __future__ import annotations

import dataclasses
import io
import json
import multiprocessing
import multiprocessing.pool
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from rexthinker import rle
from rexthinker.contracts.trace import Line, Step, candidate_name, ordering, render_trace, summary_marks
from rexthinker.coords import TRAIN_MAX_PIXELS, TRAIN_MIN_PIXELS, model_frame_size, to_model_frame
from rexthinker.data.sample import RefSample

PALETTE = {
    "red": (220, 30, 30),
    "blue": (30, 75, 225),
    "green": (30, 165, 55),
    "yellow": (245, 205, 15),
    "purple": (145, 50, 185),
    "orange": (255, 135, 15),
}
SKIN = (226, 172, 132)
INK = (35, 35, 40)  # outlines, hats, flag poles
LEGS = (70, 70, 95)
TRUNK = (115, 75, 40)
CANOPY = (20, 90, 65)

# sub-domain -> domain (names follow HumanRef's sub-domains, without its size prefixes)
SUB_DOMAINS = {
    "attribute": "attribute",
    "inner_position": "position",
    "outer_position": "position",
    "inner_interaction": "interaction",
    "outer_interaction": "interaction",
    "inner_position_two_stage": "reasoning",
    "outer_position_two_stage": "reasoning",
    "positive_then_negative": "reasoning",
    "rejection": "rejection",
}
DOMAINS = ("attribute", "position", "interaction", "reasoning", "rejection")
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
NUMBERS = ("zero", "one", "two", "three", "four", "five")
CATEGORY = "person"


@dataclass
class SynthRefConfig:
    """Knobs of the generator. Sizes are in pixels; ``(lo, hi)`` ranges are inclusive."""

    width: tuple[int, int] = (320, 480)
    height: tuple[int, int] = (200, 300)
    persons: tuple[int, int] = (3, 9)
    min_slot_px: int = 44  # horizontal room per figure; caps the person count on narrow images
    colors: tuple[str, ...] = tuple(PALETTE)
    colors_per_image: tuple[int, int] = (2, 4)
    p_hat: float = 0.4
    p_tall: float = 0.5
    p_flag: float = 0.3
    p_tree: float = 0.3  # a tree in scenes whose question does not need one
    p_hold_hands: float = 0.15  # per pair of neighbours
    noise: float = 0.0  # amplitude of uniform background noise, 0-255 (PNG size grows with it)
    png_compress_level: int = 1
    # The trace states each candidate's box after its name ("- Person 3 [x0, y0, x1, y1]: ..."), in
    # the model frame of ``frame`` = (min_pixels, max_pixels), the frame the prompt's hints are in.
    # Off by default: the HumanRef-CoT layout has no boxes in its traces.
    trace_boxes: bool = False
    frame: tuple[int, int] = (TRAIN_MIN_PIXELS, TRAIN_MAX_PIXELS)
    # Each person's hint number drawn in a white tag on the torso (set-of-mark prompting), so
    # "Person k" can be found by its mark instead of by its coordinates. A demo-level lever for
    # a small model (benchmarks/region_probe.py --cue mark); off by default.
    marks: bool = False
    domain_weights: dict[str, float] = field(
        default_factory=lambda: {
            "attribute": 0.24,
            "position": 0.22,
            "interaction": 0.17,
            "reasoning": 0.22,
            "rejection": 0.15,
        }
    )
    sub_domain_weights: dict[str, float] = field(  # relative weight inside the sub-domain's domain
        default_factory=lambda: {
            "attribute": 1.0,
            "inner_position": 0.6,
            "outer_position": 0.4,
            "inner_interaction": 0.4,
            "outer_interaction": 0.6,
            "inner_position_two_stage": 0.4,
            "outer_position_two_stage": 0.25,
            "positive_then_negative": 0.35,
            "rejection": 1.0,
        }
    )

    def __post_init__(self) -> None:
        for name in ("width", "height", "persons", "colors_per_image", "frame"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"SynthRefConfig.{name} must be 0 < lo <= hi, got {(lo, hi)}")
            setattr(self, name, (int(lo), int(hi)))
        self.colors = tuple(self.colors)
        unknown = [c for c in self.colors if c not in PALETTE]
        if unknown:
            raise ValueError(f"unknown colours {unknown}; choose from {sorted(PALETTE)}")
        if len(self.colors) < 2:
            raise ValueError("SynthRef needs at least two colours")
        if self.persons[0] < 2:
            raise ValueError("SynthRef needs at least two persons per image")
        if self.width[0] // self.min_slot_px < self.persons[0] + 1:
            raise ValueError(
                f"width {self.width[0]} leaves no room for {self.persons[0]} persons and a tree at "
                f"{self.min_slot_px} px each"
            )
        for key in self.domain_weights:
            if key not in DOMAINS:
                raise ValueError(f"unknown domain {key!r} in domain_weights; choose from {DOMAINS}")
        for key in self.sub_domain_weights:
            if key not in SUB_DOMAINS:
                raise ValueError(f"unknown sub-domain {key!r} in sub_domain_weights; choose from {sorted(SUB_DOMAINS)}")
        if sum(self.domain_weights.values()) <= 0:
            raise ValueError("domain_weights must have a positive total")
        for domain, weight in self.domain_weights.items():
            subs = [s for s, d in SUB_DOMAINS.items() if d == domain]
            if weight > 0 and not any(self.sub_domain_weights.get(s, 0) > 0 for s in subs):
                raise ValueError(f"domain {domain!r} has weight {weight} but none of its sub-domains has a weight")


# Named levels: settings applied on top of the defaults. "full" is the task the data tools write by
# default; "demo" is what a small model trained from scratch can learn on CPU (make demo): smaller
# images (48-60 image tokens at the small model's limits instead of ~120), 2-4 people, each with its
# hint number drawn on the torso, and traces that restate every candidate's box.
LEVELS: dict[str, dict] = {
    "full": {},
    "demo": {"width": (224, 280), "height": (140, 168), "persons": (2, 4), "marks": True, "trace_boxes": True},
}


def level_config(level: str = "full", overrides: Sequence[str] = (), **settings) -> SynthRefConfig:
    """The config of a named level, then keyword ``settings``, then ``key=value`` /
    ``dict_field.key=value`` ``overrides`` (values parsed as JSON). Raises ValueError naming the
    unknown level, setting or bad value."""
    if level not in LEVELS:
        raise ValueError(f"unknown SynthRef level {level!r}; choose from {', '.join(LEVELS)}")
    values = {**dataclasses.asdict(SynthRefConfig()), **LEVELS[level], **settings}
    fields = {f.name for f in dataclasses.fields(SynthRefConfig)}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        name, _, sub_key = key.partition(".")
        if name not in fields:
            raise ValueError(f"unknown SynthRef setting {name!r}; settings: {', '.join(sorted(fields))}")
        if sub_key:
            if not isinstance(values[name], dict):
                raise ValueError(f"{name} is not a mapping; cannot set {key}")
            values[name] = {**values[name], sub_key: value}
        else:
            values[name] = tuple(value) if isinstance(value, list) else value
    try:
        return SynthRefConfig(**values)
    except TypeError as exc:
        raise ValueError(f"bad SynthRef settings: {exc}") from None


# --------------------------------------------------------------------------------------------------
# Scenes


@dataclass
class Figure:
    color: str
    hat: bool
    tall: bool
    flag: bool
    rank: int  # 0-based position from the left


@dataclass
class Scene:
    width: int
    height: int
    figures: list[Figure]  # in hint order ("Person k" is figures[k-1])
    tree_after: int | None  # how many persons stand left of the tree; None = no tree
    hands: dict[int, list[int]]  # hint index -> hint indices it holds hands with

    @property
    def n(self) -> int:
        return len(self.figures)

    def left_to_right(self) -> list[int]:
        return sorted(range(self.n), key=lambda i: self.figures[i].rank)


def _make_scene(rng: random.Random, cfg: SynthRefConfig, needs: set[str]) -> Scene:
    width = rng.randint(*cfg.width)
    height = rng.randint(*cfg.height)
    tree = "tree" in needs or rng.random() < cfg.p_tree
    most = min(cfg.persons[1], width // cfg.min_slot_px - int(tree))
    n = rng.randint(cfg.persons[0], max(cfg.persons[0], most))
    palette = rng.sample(cfg.colors, min(len(cfg.colors), n, rng.randint(*cfg.colors_per_image)))
    by_rank = [
        Figure(
            color=rng.choice(palette),
            hat=rng.random() < cfg.p_hat,
            tall=rng.random() < cfg.p_tall,
            flag=rng.random() < cfg.p_flag,
            rank=r,
        )
        for r in range(n)
    ]
    if "flag" in needs and not any(f.flag for f in by_rank):
        rng.choice(by_rank).flag = True
    tree_after = rng.randint(0, n) if tree else None
    pairs = [r for r in range(n - 1) if tree_after != r + 1]  # no hand-holding across the tree
    linked = [r for r in pairs if rng.random() < cfg.p_hold_hands]
    if "hands" in needs and not linked and pairs:
        linked = [rng.choice(pairs)]
    hint_order = list(range(n))
    rng.shuffle(hint_order)  # hint_order[k] = rank of Person k+1
    figures = [by_rank[r] for r in hint_order]
    hint_of_rank = {r: k for k, r in enumerate(hint_order)}
    hands: dict[int, list[int]] = {k: [] for k in range(n)}
    for r in linked:
        a, b = hint_of_rank[r], hint_of_rank[r + 1]
        hands[a].append(b)
        hands[b].append(a)
    return Scene(width, height, figures, tree_after, hands)


def _render(scene: Scene, rng: random.Random, cfg: SynthRefConfig) -> tuple[Image.Image, np.ndarray]:
    """Draw the scene; also return a label map (0 = background, k = silhouette of Person k)."""
    w, h = scene.width, scene.height
    base = rng.randint(228, 248)
    background = tuple(min(255, base + rng.randint(-6, 6)) for _ in range(3))
    image = Image.new("RGB", (w, h), background)
    labels = Image.new("L", (w, h), 0)
    draw, mark = ImageDraw.Draw(image), ImageDraw.Draw(labels)
    slots = scene.n + (scene.tree_after is not None)
    sw = w / slots
    ground = h * 0.94
    torso_w = max(8, round(sw * 0.40))
    head_d = max(6, min(round(torso_w * 0.8), round(h * 0.13)))
    outline = max(1, round(sw / 40))
    torso_mid: dict[int, tuple[float, float, float]] = {}  # rank -> (left x, right x, y)
    torsos: list[tuple[float, float, float, float]] = []  # hint order: (centre x, half width, top, bottom)

    def both(shape: str, xy, fill, ink=None, width: int = 0, label: int = 0) -> None:
        getattr(draw, shape)(xy, fill=fill, outline=ink, width=width if ink else 0)
        getattr(mark, shape)(xy, fill=label)

    for k, fig in enumerate(scene.figures):
        label = k + 1
        slot = fig.rank + (scene.tree_after is not None and fig.rank >= scene.tree_after)
        cx = (slot + 0.5) * sw + rng.uniform(-0.05, 0.05) * sw - (0.14 * sw if fig.flag else 0.0)
        feet = ground - rng.uniform(0.0, 0.05) * h
        tall_h = h * rng.uniform(0.58, 0.62)
        fig_h = tall_h if fig.tall else tall_h * 0.64
        top = feet - fig_h
        torso_top = top + head_d + max(1, head_d // 6)
        torso_bottom = torso_top + 0.45 * (feet - torso_top)
        half = torso_w / 2
        leg_w = torso_w * 0.33
        both("rectangle", [cx - half * 0.85, torso_bottom, cx - half * 0.85 + leg_w, feet], LEGS, label=label)
        both("rectangle", [cx + half * 0.85 - leg_w, torso_bottom, cx + half * 0.85, feet], LEGS, label=label)
        both("rectangle", [cx - half, torso_top, cx + half, torso_bottom], PALETTE[fig.color], INK, outline, label)
        both("ellipse", [cx - head_d / 2, top, cx + head_d / 2, top + head_d], SKIN, INK, outline, label)
        if fig.hat:
            crown = [cx - head_d * 0.42, top - head_d * 0.45, cx + head_d * 0.42, top + head_d * 0.25]
            brim = [cx - head_d * 0.66, top + head_d * 0.12, cx + head_d * 0.66, top + head_d * 0.3]
            both("rectangle", crown, INK, label=label)
            both("rectangle", brim, INK, label=label)
        if fig.flag:
            pole_x = cx + half + 0.10 * sw
            pole_w = max(2.0, 0.045 * sw)
            pole_top = top - 0.10 * h
            arm_y = torso_top + (torso_bottom - torso_top) * 0.35
            both("rectangle", [cx + half, arm_y, pole_x, arm_y + pole_w], SKIN, label=label)
            both("rectangle", [pole_x, pole_top, pole_x + pole_w, torso_bottom], INK, label=label)
            flag_box = [pole_x + pole_w, pole_top, pole_x + pole_w + 0.20 * sw, pole_top + 0.09 * h]
            both("rectangle", flag_box, (255, 255, 255), INK, outline + 1, label)
            band = (flag_box[3] - flag_box[1]) / 3
            both("rectangle", [flag_box[0], flag_box[1] + band, flag_box[2], flag_box[1] + 2 * band], INK, label=label)
        torso_mid[fig.rank] = (cx - half, cx + half, (torso_top + torso_bottom) / 2)
        torsos.append((cx, half, torso_top, torso_bottom))

    arm = max(4, round(sw * 0.09))  # holding hands: a thick dark bar between two torsos
    for k, partners in scene.hands.items():
        r = scene.figures[k].rank
        for p in partners:
            if scene.figures[p].rank == r + 1:
                (_, x0, y0), (x1, _, y1) = torso_mid[r], torso_mid[r + 1]
                draw.line([(x0, y0), (x1, y1)], fill=INK, width=arm)

    if scene.tree_after is not None:
        cx = (scene.tree_after + 0.5) * sw
        trunk_w = max(4, 0.16 * sw)
        trunk_top = ground - h * 0.45
        canopy = min(0.85 * sw, 0.35 * h)
        draw.rectangle([cx - trunk_w / 2, trunk_top, cx + trunk_w / 2, ground], fill=TRUNK)
        crown = [cx - canopy / 2, trunk_top - canopy * 0.7, cx + canopy / 2, trunk_top + canopy * 0.3]
        draw.ellipse(crown, fill=CANOPY)

    if cfg.marks:
        _draw_marks(draw, torsos)
    if cfg.noise > 0:
        noise_rng = np.random.default_rng(rng.getrandbits(64))
        pixels = np.asarray(image, dtype=np.int16)
        pixels = pixels + noise_rng.integers(-int(cfg.noise), int(cfg.noise) + 1, size=pixels.shape, dtype=np.int16)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image, np.asarray(labels)


def _draw_marks(draw: ImageDraw.ImageDraw, torsos: list[tuple[float, float, float, float]]) -> None:
    """Each person's hint number in a white tag on the torso (set-of-mark prompting). Draws no
    random numbers, so the rest of the sample is the same with and without marks."""
    from PIL import ImageFont

    for k, (cx, half, top, bottom) in enumerate(torsos):
        side = max(8.0, min(2 * half * 0.65, (bottom - top) * 0.65))
        font = ImageFont.load_default(size=max(6, round(side * 0.85)))
        x0, y0 = cx - side / 2, (top + bottom) / 2 - side / 2
        draw.rectangle([x0, y0, x0 + side, y0 + side], fill=(255, 255, 255))
        draw.text((cx, y0 + side / 2), str(k + 1), fill=INK, font=font, anchor="mm")


def label_boxes(labels: np.ndarray, n: int) -> list[list[int]]:
    """The tight ``[x0, y0, x1, y1)`` box of each silhouette ``1..n`` in a label map of :func:`_render`."""
    boxes = []
    for k in range(n):
        ys, xs = np.nonzero(labels == k + 1)
        boxes.append([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
    return boxes


# --------------------------------------------------------------------------------------------------
# Questions and traces


@dataclass
class Query:
    referring: str
    targets: list[int]  # hint indices
    steps: list[Step]
    summary: list[Line]


def _shirt(color: str) -> str:
    return f"in {'an' if color[0] in 'aeiou' else 'a'} {color} shirt"


@dataclass(frozen=True)
class Term:
    """One visual condition on a figure: ``kind`` is color, hat, tall or flag."""

    kind: str
    value: object
    negate: bool = False

    def holds(self, fig: Figure) -> bool:
        return (getattr(fig, self.kind) == self.value) != self.negate

    def phrase(self) -> str:
        """The words the referring expression uses (``tall``/``short`` go before the noun)."""
        if self.kind == "color":
            words = _shirt(str(self.value))
        elif self.kind == "hat":
            words = "wearing a hat" if self.value else "without a hat"
        elif self.kind == "flag":
            words = "holding a flag" if self.value else "without a flag"
        else:
            words = "tall" if self.value else "short"
        return "not " + words if self.negate else words

    def title(self) -> str:
        if self.negate:
            return f"Rule out the people {Term(self.kind, self.value).phrase()}"
        if self.kind == "color":
            return f"Find the people {self.phrase()}"
        return {
            ("hat", True): "Check who wears a hat",
            ("hat", False): "Check who has no hat",
            ("flag", True): "Check who holds a flag",
            ("flag", False): "Check who has no flag",
            ("tall", True): "Check who is tall",
            ("tall", False): "Check who is short",
        }[(self.kind, bool(self.value))]


def observe(fig: Figure, kind: str) -> str:
    """The short observation a trace writes about one figure."""
    if kind == "color":
        return f"{fig.color} shirt"
    if kind == "hat":
        return "wears a hat" if fig.hat else "no hat"
    if kind == "flag":
        return "holds a flag" if fig.flag else "no flag"
    return "tall" if fig.tall else "short"


_TERM_ORDER = {"color": 0, "tall": 1, "hat": 2, "flag": 3}


def describe(terms: Sequence[Term], noun: str = "person") -> str:
    """"the tall person in a red shirt wearing a hat" (negated terms come last, after "but")."""
    positive = sorted((t for t in terms if not t.negate), key=lambda t: _TERM_ORDER[t.kind])
    negative = [t for t in terms if t.negate]
    adjectives = [t.phrase() for t in positive if t.kind == "tall"]
    after = [t.phrase() for t in positive if t.kind != "tall"]
    words = ["the", *adjectives, noun, *after]
    if negative:
        words += ["but", " and ".join(t.phrase() for t in negative)]
    return " ".join(words)


def _filter_steps(
    scene: Scene, terms: Sequence[Term], pool: list[int], notes: dict[int, list[str]]
) -> tuple[list[Step], list[int]]:
    """One step per term over the candidates still in the pool; appends each observation to notes."""
    steps = []
    ordered = sorted(terms, key=lambda t: (t.negate, _TERM_ORDER[t.kind]))
    for term in ordered:
        step = Step(term.title())
        kept = []
        for i in pool:
            hit = term.holds(scene.figures[i])
            text = observe(scene.figures[i], term.kind)
            notes[i].append(text)
            step.lines.append(Line(i, text, hit))
            if hit:
                kept.append(i)
        steps.append(step)
        pool = kept
    return steps, pool


def _summary(scene: Scene, targets: Sequence[int], notes: dict[int, list[str]]) -> list[Line]:
    return [Line(i, ", ".join(notes[i]), i in targets) for i in range(scene.n)]


def _attribute_query(scene: Scene, terms: Sequence[Term], referring: str | None = None) -> Query:
    notes: dict[int, list[str]] = {i: [] for i in range(scene.n)}
    steps, targets = _filter_steps(scene, terms, list(range(scene.n)), notes)
    return Query(referring or describe(terms), targets, steps, _summary(scene, targets, notes))


def _terms_of(fig: Figure, kinds: Sequence[str]) -> list[Term]:
    return [Term(kind, getattr(fig, kind)) for kind in kinds]


def _sort_step(scene: Scene, indices: list[int] | None = None, what: str = "people") -> Step:
    indices = scene.left_to_right() if indices is None else indices
    if what == "people":
        note = f"I see {len(indices)} people; from left to right they are {ordering(CATEGORY, indices)}."
    else:
        note = f"From left to right: {ordering(CATEGORY, indices)}."
    return Step(f"Sort the {what} from left to right", note=note)


_ATTRIBUTE_KINDS = (
    ("color",), ("hat",), ("tall",), ("color", "hat"), ("color", "tall"), ("tall", "hat"), ("color", "tall", "hat")
)
_ATTRIBUTE_WEIGHTS = (0.25, 0.125, 0.125, 0.13, 0.13, 0.12, 0.12)


def _q_attribute(scene: Scene, rng: random.Random) -> Query | None:
    fig = rng.choice(scene.figures)  # describe someone who is there, so the answer is never empty
    kinds = rng.choices(_ATTRIBUTE_KINDS, weights=_ATTRIBUTE_WEIGHTS)[0]
    return _attribute_query(scene, _terms_of(fig, kinds))


def _q_inner_position(scene: Scene, rng: random.Random) -> Query | None:
    order = scene.left_to_right()
    n = scene.n
    kind = rng.choices(("ordinal", "group", "filtered"), weights=(0.35, 0.4, 0.25))[0]
    side = rng.choice(("left", "right"))
    notes: dict[int, list[str]] = {i: [] for i in range(n)}
    if kind == "filtered":
        counts = {c: [i for i in order if scene.figures[i].color == c] for c in {f.color for f in scene.figures}}
        colors = sorted(c for c, members in counts.items() if len(members) >= 2)
        if not colors:
            return None
        color = rng.choice(colors)
        term = Term("color", color)
        steps, members = _filter_steps(scene, [term], list(range(n)), notes)
        members = [i for i in order if i in members]
        seq = members if side == "left" else members[::-1]
        k = rng.randrange(min(len(seq), 3))
        if k == 0:
            referring = f"the {side}most person {_shirt(color)}"
            title = f"Find the {side}most of them"
        else:
            referring = f"the {ORDINALS[k]} person {_shirt(color)} from the {side}"
            title = f"Find the {ORDINALS[k]} of them from the {side}"
        steps.append(_sort_step(scene, members, f"people {_shirt(color)}"))
        last = Step(title)
        for pos, i in enumerate(seq):
            text = f"{ORDINALS[pos]} from the {side}"
            notes[i].append(text)
            last.lines.append(Line(i, text, pos == k))
        steps.append(last)
        targets = [seq[k]]
        return Query(referring, targets, steps, _summary(scene, targets, notes))
    seq = order if side == "left" else order[::-1]
    if kind == "ordinal":
        k = rng.randrange(min(n, 5))
        count = 1
        referring = f"the {side}most person" if k == 0 else f"the {ORDINALS[k]} person from the {side}"
        title = f"Find the {side}most person" if k == 0 else f"Find the {ORDINALS[k]} person from the {side}"
        chosen = [seq[k]]
    else:
        if n < 3:  # "the two leftmost" of two people is everyone
            return None
        count = rng.randint(2, min(3, n - 1))
        referring = f"the {NUMBERS[count]} {side}most people"
        title = f"Take the {NUMBERS[count]} {side}most people"
        chosen = seq[:count]
    last = Step(title)
    for pos, i in enumerate(seq):
        text = f"{ORDINALS[pos]} from the {side}"
        notes[i].append(text)
        last.lines.append(Line(i, text, i in chosen))
    targets = sorted(chosen)
    return Query(referring, targets, [_sort_step(scene), last], _summary(scene, targets, notes))


def _tree_side(scene: Scene, i: int) -> str:
    return "left" if scene.figures[i].rank < scene.tree_after else "right"


def _next_to_tree(scene: Scene, i: int) -> bool:
    return scene.figures[i].rank in (scene.tree_after - 1, scene.tree_after)


def _tree_step(scene: Scene) -> Step:
    order, t = scene.left_to_right(), scene.tree_after
    if t == 0:
        note = f"The tree stands at the far left, before {candidate_name(CATEGORY, order[0])}."
    elif t == scene.n:
        note = f"The tree stands at the far right, after {candidate_name(CATEGORY, order[-1])}."
    else:
        a, b = candidate_name(CATEGORY, order[t - 1]), candidate_name(CATEGORY, order[t])
        note = f"The tree stands between {a} and {b}."
    return Step("Locate the tree", note=note)


def _tree_relation_step(
    scene: Scene, relation: str, pool: list[int], notes: dict[int, list[str]]
) -> tuple[Step, list[int]]:
    if relation == "next":
        step = Step("Check who stands next to the tree")
    else:
        step = Step("Check which side of the tree each person is on")
    hits = []
    for i in pool:
        if relation == "next":
            hit = _next_to_tree(scene, i)
            text = "next to the tree" if hit else "away from the tree"
        else:
            side = _tree_side(scene, i)
            hit = side == relation
            text = f"{side} of the tree"
        notes[i].append(text)
        step.lines.append(Line(i, text, hit))
        if hit:
            hits.append(i)
    return step, hits


_TREE_PHRASE = {"left": "to the left of the tree", "right": "to the right of the tree", "next": "next to the tree"}


def _q_outer_position(scene: Scene, rng: random.Random) -> Query | None:
    relations = ["next"]
    relations += ["left"] if scene.tree_after > 0 else []
    relations += ["right"] if scene.tree_after < scene.n else []
    relation = rng.choice(relations)
    noun = "person" if relation == "next" else rng.choice(("person", "people"))
    notes: dict[int, list[str]] = {i: [] for i in range(scene.n)}
    step, targets = _tree_relation_step(scene, relation, list(range(scene.n)), notes)
    referring = f"the {noun} {_TREE_PHRASE[relation]}"
    return Query(referring, targets, [_tree_step(scene), step], _summary(scene, targets, notes))


def _hands_text(scene: Scene, i: int) -> str:
    partners = sorted(scene.hands[i])
    if not partners:
        return "hands free"
    return "holds hands with " + " and ".join(candidate_name(CATEGORY, p) for p in partners)


def _q_inner_interaction(scene: Scene, rng: random.Random) -> Query | None:
    holders = [i for i in range(scene.n) if scene.hands[i]]
    if not holders:
        return None
    notes: dict[int, list[str]] = {i: [] for i in range(scene.n)}
    pool = list(range(scene.n))
    steps: list[Step] = []
    if rng.random() < 0.35:
        color = scene.figures[rng.choice(holders)].color
        steps, pool = _filter_steps(scene, [Term("color", color)], pool, notes)
        referring = f"the person {_shirt(color)} holding hands with someone"
    else:
        referring = rng.choice(("the people holding hands", "the person holding hands with someone"))
    step = Step("Check who is holding hands")
    for i in pool:
        text = _hands_text(scene, i)
        notes[i].append(text)
        step.lines.append(Line(i, text, bool(scene.hands[i])))
    steps.append(step)
    targets = [i for i in pool if scene.hands[i]]
    return Query(referring, targets, steps, _summary(scene, targets, notes))


def _q_outer_interaction(scene: Scene, rng: random.Random) -> Query | None:
    holders = [f for f in scene.figures if f.flag]
    if not holders:
        return None
    fig = rng.choice(holders)
    extra = rng.choices(((), ("color",), ("tall",)), weights=(0.5, 0.3, 0.2))[0]
    return _attribute_query(scene, [*_terms_of(fig, extra), Term("flag", True)])


def _unique_reference(scene: Scene, rng: random.Random) -> tuple[int, list[Term]] | None:
    """A person that one or two visible attributes single out, and those attributes."""
    options = []
    for i, fig in enumerate(scene.figures):
        for kinds in (("color",), ("color", "hat")):
            terms = _terms_of(fig, kinds)
            if sum(all(t.holds(f) for t in terms) for f in scene.figures) == 1:
                options.append((i, terms))
                break
    return rng.choice(options) if options else None


def _q_inner_position_two_stage(scene: Scene, rng: random.Random) -> Query | None:
    found = _unique_reference(scene, rng)
    if found is None:
        return None
    ref, terms = found
    order = scene.left_to_right()
    r = scene.figures[ref].rank
    relation = rng.choice(("left", "right", "next"))
    if relation == "left":
        chosen = order[:r]
    elif relation == "right":
        chosen = order[r + 1 :]
    else:
        chosen = [order[j] for j in (r - 1, r + 1) if 0 <= j < scene.n]
    if not chosen:
        return None
    ref_desc = describe(terms)
    ref_name = candidate_name(CATEGORY, ref)
    noun = "person" if relation == "next" else rng.choice(("person", "people"))
    phrase = {"left": "to the left of", "right": "to the right of", "next": "next to"}[relation]
    referring = f"the {noun} {phrase} {ref_desc}"
    first = Step(f"Find {ref_desc}")
    for i, fig in enumerate(scene.figures):
        first.lines.append(Line(i, ", ".join(observe(fig, t.kind) for t in terms), i == ref))
    last = Step(f"Find the people {phrase} {ref_name}")
    notes: dict[int, list[str]] = {i: [] for i in range(scene.n)}
    for i in order:
        if i == ref:
            continue
        rank = scene.figures[i].rank
        if relation == "next":
            text = f"next to {ref_name}" if abs(rank - r) == 1 else f"not next to {ref_name}"
        else:
            text = f"{'left' if rank < r else 'right'} of {ref_name}"
        notes[i].append(text)
        last.lines.append(Line(i, text, i in chosen))
    notes[ref] = [first.lines[ref].text, "the reference itself"]
    targets = sorted(chosen)
    return Query(referring, targets, [first, _sort_step(scene), last], _summary(scene, targets, notes))


def _q_outer_position_two_stage(scene: Scene, rng: random.Random) -> Query | None:
    order = scene.left_to_right()
    fig_index = rng.choice(order)
    fig = scene.figures[fig_index]
    relations = [_tree_side(scene, fig_index)] + (["next"] if _next_to_tree(scene, fig_index) else [])
    relation = rng.choice(relations)
    terms = _terms_of(fig, [rng.choice(("color", "color", "hat", "tall"))])
    notes: dict[int, list[str]] = {i: [] for i in range(scene.n)}
    steps, pool = _filter_steps(scene, terms, list(range(scene.n)), notes)
    step, targets = _tree_relation_step(scene, relation, pool, notes)
    referring = f"{describe(terms)} {_TREE_PHRASE[relation]}"
    return Query(referring, targets, [*steps, _tree_step(scene), step], _summary(scene, targets, notes))


def _q_positive_then_negative(scene: Scene, rng: random.Random) -> Query | None:
    fig = rng.choice(scene.figures)
    kind = rng.choice(("color", "hat", "tall"))
    positive = Term(kind, getattr(fig, kind))
    survivors = [f for f in scene.figures if positive.holds(f)]
    negatives = []
    if positive.kind != "hat" and not fig.hat:
        negatives.append(Term("hat", True, negate=True))
    if not fig.flag:
        negatives.append(Term("flag", True, negate=True))
    if positive.kind != "color":
        negatives += [Term("color", c, negate=True) for c in sorted({f.color for f in survivors}) if c != fig.color]
    useful = [t for t in negatives if any(not t.holds(f) for f in survivors)]  # removes someone
    if not useful:
        return None
    terms = [positive, rng.choice(useful)]
    return _attribute_query(scene, terms)


def _q_rejection(scene: Scene, rng: random.Random, cfg: SynthRefConfig) -> Query | None:
    present = sorted({f.color for f in scene.figures})
    options: dict[str, list[list[Term]]] = {
        "color": [[Term("color", c)] for c in cfg.colors if c not in present],
        "hat": [[Term("color", c), Term("hat", v)] for c in present for v in (True, False)],
        "flag": [[Term("color", c), Term("flag", True)] for c in present],
        "tall": [[Term("color", c), Term("tall", v)] for c in present for v in (True, False)],
    }
    absent = {
        kind: [terms for terms in combos if not any(all(t.holds(f) for t in terms) for f in scene.figures)]
        for kind, combos in options.items()
    }
    kinds = [kind for kind, combos in absent.items() if combos]
    if not kinds:
        return None
    terms = rng.choice(absent[rng.choice(kinds)])
    return _attribute_query(scene, terms)


_BUILDERS = {
    "attribute": _q_attribute,
    "inner_position": _q_inner_position,
    "outer_position": _q_outer_position,
    "inner_interaction": _q_inner_interaction,
    "outer_interaction": _q_outer_interaction,
    "inner_position_two_stage": _q_inner_position_two_stage,
    "outer_position_two_stage": _q_outer_position_two_stage,
    "positive_then_negative": _q_positive_then_negative,
}
_NEEDS = {
    "outer_position": {"tree"},
    "outer_position_two_stage": {"tree"},
    "inner_interaction": {"hands"},
    "outer_interaction": {"flag"},
}


# --------------------------------------------------------------------------------------------------
# Samples


def sample_rng(seed: int, split: str, index: int) -> random.Random:
    """The random stream of one sample: a function of (seed, split, index) only."""
    return random.Random(f"synthref|{seed}|{split}|{index}")


def _pick_sub_domain(rng: random.Random, cfg: SynthRefConfig) -> str:
    domains = [d for d in DOMAINS if cfg.domain_weights.get(d, 0) > 0]
    domain = rng.choices(domains, weights=[cfg.domain_weights[d] for d in domains])[0]
    subs = [s for s, d in SUB_DOMAINS.items() if d == domain and cfg.sub_domain_weights.get(s, 0) > 0]
    return rng.choices(subs, weights=[cfg.sub_domain_weights[s] for s in subs])[0]


def generate_one(index: int, seed: int, split: str = "train", config: SynthRefConfig | None = None) -> RefSample:
    """Sample ``index`` of ``split`` for ``seed``."""
    cfg = config or SynthRefConfig()
    rng = sample_rng(seed, split, index)
    sub_domain = _pick_sub_domain(rng, cfg)
    for _ in range(200):
        scene = _make_scene(rng, cfg, _NEEDS.get(sub_domain, set()))
        if sub_domain == "rejection":
            query = _q_rejection(scene, rng, cfg)
        else:
            query = _BUILDERS[sub_domain](scene, rng)
        if query is not None and (sub_domain == "rejection") == (not query.targets):
            break
    else:
        raise RuntimeError(f"no {sub_domain} question found for sample {index} of {split!r} (seed {seed})")

    image, labels = _render(scene, rng, cfg)
    boxes = label_boxes(labels, scene.n)
    targets = sorted(query.targets)
    frame_boxes = None
    if cfg.trace_boxes:
        model = model_frame_size(scene.width, scene.height, *cfg.frame)
        frame_boxes = [to_model_frame(box, (scene.width, scene.height), model) for box in boxes]
    think = render_trace(query.referring, CATEGORY, query.steps, query.summary, frame_boxes)
    marks = summary_marks(think)
    checked = {i for i, ok in marks.items() if ok}
    assert set(marks) == set(range(scene.n)) and checked == set(targets), f"unfaithful trace for sample {index}"

    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=cfg.png_compress_level)
    name = f"{index:06d}"
    return RefSample(
        id=f"synthref-{split}-{name}",
        image_name=f"{split}/{name}.png",
        referring=query.referring,
        candidate_boxes=boxes,
        answer_boxes=[boxes[i] for i in targets],
        category=CATEGORY,
        domain=SUB_DOMAINS[sub_domain],
        sub_domain=sub_domain,
        think=think,
        image_bytes=buf.getvalue(),
        image_size=(scene.width, scene.height),
        extra={"answer_segmentations": [rle.encode(labels == i + 1) for i in targets]},
    )


def _generate_range(args: tuple[int, int, int, str, SynthRefConfig]) -> list[RefSample]:
    start, stop, seed, split, cfg = args
    return [generate_one(i, seed, split, cfg) for i in range(start, stop)]


def iter_chunks(
    num: int,
    seed: int,
    config: SynthRefConfig | None = None,
    split: str = "train",
    workers: int = 1,
    chunk_size: int = 250,
    start: int = 0,
    pool: multiprocessing.pool.Pool | None = None,
) -> Iterator[list[RefSample]]:
    """Samples ``start .. start+num-1`` in order, in lists of up to ``chunk_size``.

    ``workers > 1`` spreads the chunks over that many processes (or over ``pool`` when given); the
    samples do not depend on it."""
    cfg = config or SynthRefConfig()
    jobs = [(a, min(a + chunk_size, start + num), seed, split, cfg) for a in range(start, start + num, chunk_size)]
    if pool is not None:
        yield from pool.imap(_generate_range, jobs)
    elif workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield _generate_range(job)
    else:
        with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as own_pool:
            yield from own_pool.imap(_generate_range, jobs)


def generate(
    num: int, seed: int, config: SynthRefConfig | None = None, split: str = "train", workers: int = 1
) -> list[RefSample]:
    """``num`` SynthRef samples of ``split`` (ids ``synthref-<split>-<index>``), deterministic in ``seed``."""
    return [s for chunk in iter_chunks(num, seed, config, split, workers) for s in chunk]
