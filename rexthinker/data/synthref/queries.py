"""SynthRef's questions: for a scene and a sub-domain, a referring expression, its targets and the
rule-written plan / action / summarize steps that find them (:func:`build_query`)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from rexthinker.contracts.trace import Line, Step, candidate_name, ordering
from rexthinker.data.synthref.config import CATEGORY, NUMBERS, ORDINALS, SynthRefConfig
from rexthinker.data.synthref.scene import Figure, Scene


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

    def want(self) -> str:
        """What a step looking for this term restates on each line: "want red shirt", "rule out no hat"."""
        return ("rule out " if self.negate else "want ") + _observation(self.kind, self.value)

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


def _observation(kind: str, value) -> str:
    if kind == "color":
        return f"{value} shirt"
    if kind == "hat":
        return "wears a hat" if value else "no hat"
    if kind == "flag":
        return "holds a flag" if value else "no flag"
    return "tall" if value else "short"


def observe(fig: Figure, kind: str) -> str:
    """The short observation a trace writes about one figure."""
    return _observation(kind, getattr(fig, kind))


def _with_want(cfg: SynthRefConfig, text: str, want: str) -> str:
    """A line's observation, followed by what its step looks for when ``cfg.trace_wants``."""
    return f"{text} ({want})" if cfg.trace_wants else text


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
    scene: Scene, terms: Sequence[Term], pool: list[int], notes: dict[int, list[str]], cfg: SynthRefConfig
) -> tuple[list[Step], list[int]]:
    """One step per term over the candidates still in the pool (every one of ``pool`` with
    ``cfg.trace_all_candidates``); appends each observation to notes. Returns the steps and those who
    meet every term."""
    steps = []
    ordered = sorted(terms, key=lambda t: (t.negate, _TERM_ORDER[t.kind]))
    looked_at = pool
    for term in ordered:
        step = Step(term.title())
        kept = []
        for i in looked_at:
            hit = term.holds(scene.figures[i])
            text = _with_want(cfg, observe(scene.figures[i], term.kind), term.want())
            notes[i].append(text)
            step.lines.append(Line(i, text, hit))
            if hit and i in pool:
                kept.append(i)
        steps.append(step)
        pool = kept
        if not cfg.trace_all_candidates:
            looked_at = pool
    return steps, pool


def _summary(scene: Scene, targets: Sequence[int], notes: dict[int, list[str]]) -> list[Line]:
    return [Line(i, ", ".join(notes[i]), i in targets) for i in range(scene.n)]


def _attribute_query(scene: Scene, terms: Sequence[Term], cfg: SynthRefConfig) -> Query:
    notes: dict[int, list[str]] = {i: [] for i in range(scene.n)}
    steps, targets = _filter_steps(scene, terms, list(range(scene.n)), notes, cfg)
    return Query(describe(terms), targets, steps, _summary(scene, targets, notes))


def _terms_of(fig: Figure, kinds: Sequence[str]) -> list[Term]:
    return [Term(kind, getattr(fig, kind)) for kind in kinds]


def _sort_step(scene: Scene, indices: list[int] | None = None, what: str = "people") -> Step:
    indices = scene.left_to_right() if indices is None else indices
    if what == "people":
        note = f"I see {len(indices)} people; from left to right they are {ordering(CATEGORY, indices)}."
    else:
        note = f"From left to right: {ordering(CATEGORY, indices)}."
    return Step(f"Sort the {what} from left to right", note=note)


def _asked(kinds: Sequence, cfg: SynthRefConfig) -> list:
    """The entries of ``kinds`` (attribute names, or tuples of them) that only name attributes the
    questions may ask about (``cfg.attributes``); order and repeats kept."""
    return [k for k in kinds if set((k,) if isinstance(k, str) else k) <= set(cfg.attributes)]


def _choose_asked(rng: random.Random, options, cfg: SynthRefConfig):
    """A weighted draw among ``options``, ``(kinds, weight)`` pairs, of kinds the questions may ask about."""
    allowed = [(kinds, weight) for kinds, weight in options if _asked([kinds], cfg)]
    return rng.choices([k for k, _ in allowed], weights=[w for _, w in allowed])[0]


_ATTRIBUTE_KINDS = (
    ("color",), ("hat",), ("tall",), ("color", "hat"), ("color", "tall"), ("tall", "hat"), ("color", "tall", "hat")
)
_ATTRIBUTE_WEIGHTS = (0.25, 0.125, 0.125, 0.13, 0.13, 0.12, 0.12)


def _q_attribute(scene: Scene, rng: random.Random, cfg: SynthRefConfig) -> Query | None:
    fig = rng.choice(scene.figures)  # describe someone who is there, so the answer is never empty
    return _attribute_query(scene, _terms_of(fig, _choose_asked(rng, zip(_ATTRIBUTE_KINDS, _ATTRIBUTE_WEIGHTS), cfg)), cfg)


def _q_inner_position(scene: Scene, rng: random.Random, cfg: SynthRefConfig) -> Query | None:
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
        steps, members = _filter_steps(scene, [term], list(range(n)), notes, cfg)
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
            text = _with_want(cfg, f"{ORDINALS[pos]} from the {side}", f"want {ORDINALS[k]} from the {side}")
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
        want = f"want {ORDINALS[k]} from the {side}"
    else:
        if n < 3:  # "the two leftmost" of two people is everyone
            return None
        count = rng.randint(2, min(3, n - 1))
        referring = f"the {NUMBERS[count]} {side}most people"
        title = f"Take the {NUMBERS[count]} {side}most people"
        chosen = seq[:count]
        want = f"want the {NUMBERS[count]} {side}most"
    last = Step(title)
    for pos, i in enumerate(seq):
        text = _with_want(cfg, f"{ORDINALS[pos]} from the {side}", want)
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
    scene: Scene, relation: str, pool: list[int], notes: dict[int, list[str]], cfg: SynthRefConfig
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
        text = _with_want(cfg, text, f"want {_TREE_PHRASE[relation].removeprefix('to the ')}")
        notes[i].append(text)
        step.lines.append(Line(i, text, hit))
        if hit:
            hits.append(i)
    return step, hits


_TREE_PHRASE = {"left": "to the left of the tree", "right": "to the right of the tree", "next": "next to the tree"}


def _q_outer_position(scene: Scene, rng: random.Random, cfg: SynthRefConfig) -> Query | None:
    relations = ["next"]
    relations += ["left"] if scene.tree_after > 0 else []
    relations += ["right"] if scene.tree_after < scene.n else []
    relation = rng.choice(relations)
    noun = "person" if relation == "next" else rng.choice(("person", "people"))
    notes: dict[int, list[str]] = {i: [] for i in range(scene.n)}
    step, targets = _tree_relation_step(scene, relation, list(range(scene.n)), notes, cfg)
    referring = f"the {noun} {_TREE_PHRASE[relation]}"
    return Query(referring, targets, [_tree_step(scene), step], _summary(scene, targets, notes))


def hands_text(scene: Scene, i: int) -> str:
    partners = sorted(scene.hands[i])
    if not partners:
        return "hands free"
    return "holds hands with " + " and ".join(candidate_name(CATEGORY, p) for p in partners)


def _q_inner_interaction(scene: Scene, rng: random.Random, cfg: SynthRefConfig) -> Query | None:
    holders = [i for i in range(scene.n) if scene.hands[i]]
    if not holders:
        return None
    notes: dict[int, list[str]] = {i: [] for i in range(scene.n)}
    pool = list(range(scene.n))
    steps: list[Step] = []
    if rng.random() < 0.35:
        color = scene.figures[rng.choice(holders)].color
        steps, pool = _filter_steps(scene, [Term("color", color)], pool, notes, cfg)
        referring = f"the person {_shirt(color)} holding hands with someone"
    else:
        referring = rng.choice(("the people holding hands", "the person holding hands with someone"))
    step = Step("Check who is holding hands")
    for i in range(scene.n) if cfg.trace_all_candidates else pool:
        text = _with_want(cfg, hands_text(scene, i), "want holding hands")
        notes[i].append(text)
        step.lines.append(Line(i, text, bool(scene.hands[i])))
    steps.append(step)
    targets = [i for i in pool if scene.hands[i]]
    return Query(referring, targets, steps, _summary(scene, targets, notes))


def _q_outer_interaction(scene: Scene, rng: random.Random, cfg: SynthRefConfig) -> Query | None:
    holders = [f for f in scene.figures if f.flag]
    if not holders:
        return None
    fig = rng.choice(holders)
    extra = _choose_asked(rng, (((), 0.5), (("color",), 0.3), (("tall",), 0.2)), cfg)
    return _attribute_query(scene, [*_terms_of(fig, extra), Term("flag", True)], cfg)


def _unique_reference(scene: Scene, rng: random.Random, cfg: SynthRefConfig) -> tuple[int, list[Term]] | None:
    """A person that one or two visible attributes single out, and those attributes."""
    options = []
    for i, fig in enumerate(scene.figures):
        for kinds in _asked((("color",), ("color", "hat")), cfg):
            terms = _terms_of(fig, kinds)
            if sum(all(t.holds(f) for t in terms) for f in scene.figures) == 1:
                options.append((i, terms))
                break
    return rng.choice(options) if options else None


def _q_inner_position_two_stage(scene: Scene, rng: random.Random, cfg: SynthRefConfig) -> Query | None:
    found = _unique_reference(scene, rng, cfg)
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
    want = "want " + ", ".join(_observation(t.kind, t.value) for t in terms)
    for i, fig in enumerate(scene.figures):
        first.lines.append(Line(i, _with_want(cfg, ", ".join(observe(fig, t.kind) for t in terms), want), i == ref))
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
        text = _with_want(cfg, text, f"want {'next to' if relation == 'next' else relation + ' of'} {ref_name}")
        notes[i].append(text)
        last.lines.append(Line(i, text, i in chosen))
    notes[ref] = [first.lines[ref].text, "the reference itself"]
    targets = sorted(chosen)
    return Query(referring, targets, [first, _sort_step(scene), last], _summary(scene, targets, notes))


def _q_outer_position_two_stage(scene: Scene, rng: random.Random, cfg: SynthRefConfig) -> Query | None:
    order = scene.left_to_right()
    fig_index = rng.choice(order)
    fig = scene.figures[fig_index]
    relations = [_tree_side(scene, fig_index)] + (["next"] if _next_to_tree(scene, fig_index) else [])
    relation = rng.choice(relations)
    terms = _terms_of(fig, [rng.choice(_asked(("color", "color", "hat", "tall"), cfg))])
    notes: dict[int, list[str]] = {i: [] for i in range(scene.n)}
    steps, pool = _filter_steps(scene, terms, list(range(scene.n)), notes, cfg)
    step, targets = _tree_relation_step(scene, relation, list(range(scene.n)) if cfg.trace_all_candidates else pool, notes, cfg)
    targets = [i for i in targets if i in pool]
    referring = f"{describe(terms)} {_TREE_PHRASE[relation]}"
    return Query(referring, targets, [*steps, _tree_step(scene), step], _summary(scene, targets, notes))


def _q_positive_then_negative(scene: Scene, rng: random.Random, cfg: SynthRefConfig) -> Query | None:
    fig = rng.choice(scene.figures)
    kind = rng.choice(_asked(("color", "hat", "tall"), cfg))
    positive = Term(kind, getattr(fig, kind))
    survivors = [f for f in scene.figures if positive.holds(f)]
    negatives = []
    if positive.kind != "hat" and not fig.hat and "hat" in cfg.attributes:
        negatives.append(Term("hat", True, negate=True))
    if not fig.flag and "flag" in cfg.attributes:
        negatives.append(Term("flag", True, negate=True))
    if positive.kind != "color":
        negatives += [Term("color", c, negate=True) for c in sorted({f.color for f in survivors}) if c != fig.color]
    useful = [t for t in negatives if any(not t.holds(f) for f in survivors)]  # removes someone
    if not useful:
        return None
    terms = [positive, rng.choice(useful)]
    return _attribute_query(scene, terms, cfg)


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
    kinds = [kind for kind, combos in absent.items() if combos and kind in cfg.attributes]
    if not kinds:
        return None
    terms = rng.choice(absent[rng.choice(kinds)])
    return _attribute_query(scene, terms, cfg)


_BUILDERS = {  # sub-domain -> question builder
    "attribute": _q_attribute,
    "inner_position": _q_inner_position,
    "outer_position": _q_outer_position,
    "inner_interaction": _q_inner_interaction,
    "outer_interaction": _q_outer_interaction,
    "inner_position_two_stage": _q_inner_position_two_stage,
    "outer_position_two_stage": _q_outer_position_two_stage,
    "positive_then_negative": _q_positive_then_negative,
    "rejection": _q_rejection,
}
NEEDS = {  # what a sub-domain's scene must contain
    "outer_position": {"tree"},
    "outer_position_two_stage": {"tree"},
    "inner_interaction": {"hands"},
    "outer_interaction": {"flag"},
}



def build_query(scene: Scene, sub_domain: str, rng: random.Random, cfg: SynthRefConfig) -> Query | None:
    """A ``sub_domain`` question about ``scene``, or None when the scene has none."""
    return _BUILDERS[sub_domain](scene, rng, cfg)
