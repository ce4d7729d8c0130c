"""SynthRef's settings: the palette, HumanRef's domains and sub-domains, the generator's knobs
(:class:`SynthRefConfig`) and the named levels (:data:`LEVELS`, :func:`level_config`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from rexthinker.coords import TRAIN_MAX_PIXELS, TRAIN_MIN_PIXELS

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
# Tag fills for hint numbers 1-9 when marks name their number by colour too (none is a shirt colour).
MARK_FILLS = ((255, 255, 255), (0, 0, 0), (0, 215, 225), (235, 45, 205), (140, 140, 140),
              (255, 175, 205), (165, 245, 55), (150, 195, 255), (120, 0, 60))  # fmt: skip

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
ATTRIBUTES = ("color", "hat", "tall", "flag")
# sub-domain -> the attributes it cannot do without (one of them is enough)
SUB_DOMAIN_NEEDS = {"outer_interaction": {"flag"}, "positive_then_negative": {"hat", "tall", "flag"}}
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
    # The attributes figures vary in and questions ask about (shirt colour always). One left out is
    # not drawn (no hats, flags or tall figures) and no question names it; a demo-level lever.
    attributes: tuple[str, ...] = ATTRIBUTES
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
    # Every line of an action step restates, after its observation, what the step looks for:
    # "- Person 2: blue shirt (want red shirt) → ❌", "(rule out red shirt)" for a step that rules
    # people out, "(want second from the left)" for an order. The verdict then compares two phrases side
    # by side instead of the observation with a word far back in the plan: a text-only probe learns the
    # local match in 200 steps and the far one hardly (benchmarks/copy_probe.py --layout compare-local /
    # compare), but the demo's SFT did not learn it either way in 450 steps (dev/LOG.md, session 10).
    # The summary lines repeat the steps' texts, wants included. Off by default and at every level.
    trace_wants: bool = False
    # Every action step looks at every candidate, not only at those the steps before it kept: its ⚠
    # says the candidate meets this step's sub-goal, and the summary's ✅ those who met all of them.
    # Which people a step lists then never depends on the marks of the step before (a two-step
    # lookup the demo's SFT got right in 0.37 of its second steps, dev/LOG.md, session 14), and each
    # summary line holds every step's observation, so its mark compares them in place. Off by
    # default and at every level: HumanRef-CoT's later steps look only at the people still in question.
    trace_all_candidates: bool = False
    frame: tuple[int, int] = (TRAIN_MIN_PIXELS, TRAIN_MAX_PIXELS)
    # Each person's hint number drawn in a white tag on the torso (set-of-mark prompting), so
    # "Person k" can be found by its mark instead of by its coordinates. A demo-level lever for
    # a small model (benchmarks/region_probe.py --cue mark); off by default.
    marks: bool = False
    # With marks: each tag's fill colour also names its hint number (one of 9 colours that no shirt
    # has), so a small model matches "Person k" to its tag by colour, far sooner than by the glyph
    # (benchmarks/region_probe.py --cue tag: 0.66 colour accuracy after 1,000 steps, against 0.36
    # after 1,300 with white tags).
    mark_colours: bool = False
    # With marks: the tag's side as a fraction of the torso's smaller side. A smaller tag leaves
    # more of the shirt colour visible around it (benchmarks/region_probe.py --scene synthref).
    mark_size: float = 0.65
    torso_width: float = 0.40  # a torso's width as a fraction of the figure's slot
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
        self.attributes = tuple(self.attributes)
        if "color" not in self.attributes or not set(self.attributes) <= set(ATTRIBUTES):
            raise ValueError(f"SynthRefConfig.attributes must hold 'color' and only {ATTRIBUTES}, got {self.attributes}")
        for sub, needs in SUB_DOMAIN_NEEDS.items():
            if self.sub_domain_weights.get(sub, 0) > 0 and not needs & set(self.attributes):
                raise ValueError(f"sub-domain {sub!r} needs one of the attributes {sorted(needs)}, which "
                                 f"attributes={list(self.attributes)} leaves out: give it sub_domain_weights.{sub}=0")
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
# hint number drawn on the torso in a tag of the number's own colour, and traces that restate every
# candidate's box. Its figures are wider (torso 0.6 of a slot), their tags smaller (0.4 of the torso)
# and no tree stands in a scene whose question does not need one: with the full level's proportions
# the tag hides most of the shirt inside one 28-pixel image token, and the small model never learned
# to read a person's shirt colour (benchmarks/region_probe.py --scene synthref: chance after 380
# steps, against 0.73 after 400 steps with these settings; dev/LOG.md, session 5).
LEVELS: dict[str, dict] = {
    "full": {},
    "demo": {"width": (224, 280), "height": (140, 168), "persons": (2, 4), "marks": True, "mark_colours": True,
             "mark_size": 0.4, "torso_width": 0.6, "p_tree": 0.0, "trace_boxes": True},
}
# "demo-colour": the demo level with shirt colour as the only attribute (no hats, flags or tall
# figures; hand-holding, order and the tree stay), so every question's attribute is one the demo base
# reads. The flag questions of the interaction domain and the positive-then-negative ones of the
# reasoning domain need another attribute and are left out.
LEVELS["demo-colour"] = {**LEVELS["demo"], "attributes": ("color",),
                         "sub_domain_weights": {**SynthRefConfig().sub_domain_weights, "outer_interaction": 0.0,
                                                "positive_then_negative": 0.0}}


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
