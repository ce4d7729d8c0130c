"""SynthRef generator: determinism, domain mix, target counts, faithful traces, exact boxes and masks."""

from __future__ import annotations

import io
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from rexthinker.contracts.trace import ARROW, CHECK, CROSS, SUMMARY_HEADER, WARN, summary_marks
from rexthinker.data.synthref import DOMAINS, SynthRefConfig, generate, iter_chunks, level_config, sample_rng
from rexthinker.data.synthref.config import INK, PALETTE, SUB_DOMAINS
from rexthinker.data.synthref.scene import make_scene, render
from rexthinker.rle import decode as rle_to_mask
from rexthinker.rle import encode as mask_to_rle


def test_same_seed_gives_identical_samples():
    first, second = generate(10, seed=5), generate(10, seed=5)
    assert first == second
    assert [s.image_bytes for s in first] == [s.image_bytes for s in second]


def test_other_seed_or_split_gives_other_samples():
    base = generate(6, seed=5)
    other_seed = generate(6, seed=6)
    other_split = generate(6, seed=5, split="val")
    assert all(a.image_bytes != b.image_bytes for a, b in zip(base, other_seed))
    assert all(a.image_bytes != b.image_bytes for a, b in zip(base, other_split))
    assert other_split[0].id == "synthref-val-000000" and other_split[0].image_name == "val/000000.png"


def test_output_does_not_depend_on_workers_or_chunks():
    serial = generate(9, seed=3)
    parallel = [s for chunk in iter_chunks(9, seed=3, workers=2, chunk_size=2) for s in chunk]
    assert parallel == serial
    tail = [s for chunk in iter_chunks(4, seed=3, start=5, chunk_size=3) for s in chunk]
    assert tail == serial[5:]


def test_domain_mix_and_rejection_share(many_samples):
    cfg = SynthRefConfig()
    total = sum(cfg.domain_weights.values())
    counts = Counter(s.domain for s in many_samples)
    for domain in DOMAINS:
        share = counts[domain] / len(many_samples)
        assert abs(share - cfg.domain_weights[domain] / total) < 0.07, (domain, share)
    assert 0.10 <= counts["rejection"] / len(many_samples) <= 0.20
    assert {s.sub_domain for s in many_samples} == set(SUB_DOMAINS)
    for s in many_samples:
        assert SUB_DOMAINS[s.sub_domain] == s.domain
        assert s.is_rejection == (s.domain == "rejection")


def test_multi_instance_answers_are_common(many_samples):
    counts = [len(s.answer_boxes) for s in many_samples if s.domain != "rejection"]
    assert 1.7 <= np.mean(counts) <= 2.6
    assert sum(c > 1 for c in counts) / len(counts) > 0.35


_ACTION_LINE = re.compile(rf"^- Person (\d+): \S.* {ARROW} ({WARN}|{CROSS})$")


def test_traces_are_faithful_and_well_formed(many_samples):
    for s in many_samples:
        think = s.think
        n = len(s.candidate_boxes)
        assert "<think>" not in think and "</think>" not in think
        assert think.startswith(
            f"OK, the user needs us to detect {s.referring}. To accomplish this task, I need to break it down "
            "into the following steps:\n- Step 1: "
        )
        plan, *blocks = think.split("\n\n")
        steps = re.findall(r"^- Step (\d+): ", plan, re.M)
        assert steps == [str(k) for k in range(1, len(steps) + 1)]
        titles = re.findall(r"^- Step \d+: (.*)\.$", plan, re.M)
        assert [b.splitlines()[0] for b in blocks[:-1]] == [f"# Step {k}: {t}" for k, t in enumerate(titles, 1)]
        for block in blocks[:-1]:
            for line in block.splitlines()[1:]:
                if line.startswith("- "):
                    assert _ACTION_LINE.match(line), line
        summary = blocks[-1].splitlines()
        assert summary[0] == SUMMARY_HEADER
        word = "people" if len(s.answer_boxes) > 1 else "person"
        recheck = f"Let's now recheck our answer and put {CHECK} for the target {word} and {CROSS} for others"
        assert summary[1] == recheck
        assert [int(re.match(r"- Person (\d+): ", line).group(1)) for line in summary[2:]] == list(range(1, n + 1))
        marks = summary_marks(think)
        assert marks == {i: i in s.answer_indices for i in range(n)}
        assert sorted(s.answer_indices) == s.answer_indices and len(s.answer_indices) == len(s.answer_boxes)


def test_boxes_are_exact_separated_and_shuffled(many_samples):
    shuffled = 0
    for s in many_samples[:120]:
        w, h = s.image_size
        with Image.open(io.BytesIO(s.image_bytes)) as image:
            assert image.size == (w, h) and image.mode == "RGB" and image.format == "PNG"
        cfg = SynthRefConfig()
        assert cfg.width[0] <= w <= cfg.width[1] and cfg.height[0] <= h <= cfg.height[1]
        assert cfg.persons[0] <= len(s.candidate_boxes) <= cfg.persons[1]
        spans = sorted((b[0], b[2]) for b in s.candidate_boxes)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "figures overlap"
        for x0, y0, x1, y1 in s.candidate_boxes:
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        shuffled += [b[0] for b in s.candidate_boxes] != sorted(b[0] for b in s.candidate_boxes)
        masks = s.extra["answer_segmentations"]
        assert len(masks) == len(s.answer_boxes)
        for rle, box in zip(masks, s.answer_boxes):
            assert rle["size"] == [h, w] and all(isinstance(c, int) for c in rle["counts"])
            ys, xs = np.nonzero(rle_to_mask(rle))
            assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == box
    assert shuffled > 60  # hint order is not left-to-right


def test_rle_round_trip_and_coco_order():
    mask = np.zeros((3, 4), dtype=bool)
    mask[0, 0] = mask[1, 0] = mask[2, 3] = True
    rle = mask_to_rle(mask)
    assert rle == {"size": [3, 4], "counts": [0, 2, 9, 1]}  # column-major, starts with a run of zeros
    assert (rle_to_mask(rle) == mask).all()
    assert mask_to_rle(np.zeros((2, 2), bool))["counts"] == [4]


def test_drawn_attributes_are_visible():
    cfg = SynthRefConfig()
    for index in range(20):
        rng = sample_rng(99, "train", index)
        scene = make_scene(rng, cfg, set())
        image, labels = render(scene, rng, cfg)
        pixels = np.asarray(image)
        heights: dict[bool, list[int]] = {True: [], False: []}
        for k, fig in enumerate(scene.figures):
            inside = pixels[labels == k + 1]
            assert (inside == PALETTE[fig.color]).all(axis=1).sum() > 20, "shirt colour not drawn"
            if fig.flag:  # the pole rises above the head; hats and heights are checked on the others
                continue
            ys, xs = np.nonzero(labels == k + 1)
            row = ys.min() + 3
            centre = round(xs[ys == row].mean())
            assert (pixels[row, centre] == INK).all() == fig.hat
            heights[fig.tall].append(ys.max() - ys.min())
        if heights[True] and heights[False]:
            assert max(heights[False]) < 0.8 * min(heights[True]), "tall and short figures look alike"


def test_config_is_validated_and_applied():
    with pytest.raises(ValueError, match="unknown domain"):
        SynthRefConfig(domain_weights={"celebrity": 1.0})
    with pytest.raises(ValueError, match="unknown colours"):
        SynthRefConfig(colors=("red", "teal"))
    only = SynthRefConfig(persons=(3, 4), domain_weights={"rejection": 1.0})
    out = generate(8, seed=1, config=only)
    assert all(s.domain == "rejection" and 3 <= len(s.candidate_boxes) <= 4 for s in out)


def test_trace_boxes_state_the_prompt_hint_of_every_candidate_line():
    from rexthinker.prompts import prompt_boxes

    frame = (16 * 28 * 28, 128 * 28 * 28)
    plain = generate(12, seed=2)
    boxed = generate(12, seed=2, config=SynthRefConfig(trace_boxes=True, frame=frame))
    line = re.compile(r"^- Person (\d+) \[(\d+), (\d+), (\d+), (\d+)\]: .* " + ARROW, re.M)
    for a, b in zip(plain, boxed):
        assert a.image_bytes == b.image_bytes and a.answer_boxes == b.answer_boxes  # only the trace differs
        assert not line.search(a.think)
        hints = prompt_boxes(b, *frame).hint_boxes
        stated = line.findall(b.think)
        assert len(stated) == a.think.count(ARROW)  # every candidate line carries a box
        for k, *box in stated:
            assert [int(v) for v in box] == hints[int(k) - 1]
        assert summary_marks(b.think) == summary_marks(a.think)
        assert re.sub(r" \[\d+, \d+, \d+, \d+\]:", ":", b.think) == a.think


def test_marks_draw_the_hint_numbers_inside_the_boxes_and_change_nothing_else():
    plain = generate(6, seed=4)
    marked = generate(6, seed=4, config=SynthRefConfig(marks=True))
    for a, b in zip(plain, marked):
        assert (a.referring, a.candidate_boxes, a.answer_boxes, a.think) == (b.referring, b.candidate_boxes, b.answer_boxes, b.think)
        pa = np.asarray(Image.open(io.BytesIO(a.image_bytes)).convert("RGB")).astype(int)
        pb = np.asarray(Image.open(io.BytesIO(b.image_bytes)).convert("RGB")).astype(int)
        changed = np.abs(pa - pb).sum(-1) > 0
        inside = np.zeros_like(changed)
        for x0, y0, x1, y1 in b.candidate_boxes:
            inside[y0:y1, x0:x1] = True
            assert changed[y0:y1, x0:x1].any()  # every person got a tag
        assert not (changed & ~inside).any()
        assert (pb[changed] == 255).all(-1).mean() > 0.3  # mostly the white tags (the rest is the digits)


def test_mark_colours_fill_each_tag_with_its_numbers_colour():
    from rexthinker.data.synthref.config import MARK_FILLS

    white = generate(6, seed=4, config=SynthRefConfig(marks=True))
    coloured = generate(6, seed=4, config=SynthRefConfig(marks=True, mark_colours=True))
    for a, b in zip(white, coloured):
        assert (a.referring, a.candidate_boxes, a.think) == (b.referring, b.candidate_boxes, b.think)
        pa = np.asarray(Image.open(io.BytesIO(a.image_bytes)).convert("RGB")).astype(int)
        pb = np.asarray(Image.open(io.BytesIO(b.image_bytes)).convert("RGB")).astype(int)
        for k, (x0, y0, x1, y1) in enumerate(b.candidate_boxes):
            if k == 0:  # tag 1 is white either way
                continue
            region = pb[y0:y1, x0:x1].reshape(-1, 3)
            assert (region == MARK_FILLS[k]).all(-1).sum() > 10, k  # the tag's fill is there
            assert not (pa[y0:y1, x0:x1].reshape(-1, 3) == MARK_FILLS[k]).all(-1).any(), k  # and only with mark_colours


def test_mark_size_and_torso_width_set_the_tag_and_figure_proportions():
    from rexthinker.data.synthref.config import MARK_FILLS

    def areas(**settings):
        """Per sample: pixels of each tag's fill (tags 2+) and of shirt colour inside each person's box."""
        out = []
        for s in generate(6, seed=4, config=SynthRefConfig(marks=True, mark_colours=True, **settings)):
            pixels = np.asarray(Image.open(io.BytesIO(s.image_bytes)).convert("RGB")).astype(int)
            row = []
            for k, (x0, y0, x1, y1) in enumerate(s.candidate_boxes):
                region = pixels[y0:y1, x0:x1].reshape(-1, 3)
                shirt = sum((region == c).all(-1).sum() for c in PALETTE.values())
                row.append(((region == MARK_FILLS[k]).all(-1).sum() if k else None, shirt, x1 - x0))
            out.append(row)
        return out

    default, small_tag, wide = areas(), areas(mark_size=0.35), areas(torso_width=0.6)
    for d, s, w in zip(default, small_tag, wide):
        for (tag_d, shirt_d, width_d), (tag_s, shirt_s, _), (_, shirt_w, width_w) in zip(d, s, w):
            assert shirt_s >= shirt_d  # a smaller tag hides no more of the shirt (both are 8 px at least)
            assert tag_d is None or tag_s <= tag_d
            assert width_w >= width_d  # wider figures
    total = lambda rows, i: sum(cell[i] or 0 for row in rows for cell in row)  # noqa: E731
    assert total(small_tag, 1) > 1.2 * total(default, 1) and total(small_tag, 0) < 0.6 * total(default, 0)
    assert total(wide, 1) > 1.2 * total(default, 1)  # and more shirt to see


def test_demo_level_shows_the_shirt_around_a_coloured_tag():
    cfg = level_config("demo")
    assert (cfg.marks, cfg.mark_colours, cfg.mark_size, cfg.torso_width, cfg.p_tree) == (True, True, 0.4, 0.6, 0.0)
    assert level_config("full").mark_size == 0.65 and level_config("full").torso_width == 0.40  # the full level is unchanged


def test_attributes_left_out_are_neither_drawn_nor_asked():
    with pytest.raises(ValueError, match="must hold 'color'"):
        SynthRefConfig(attributes=("hat",))
    with pytest.raises(ValueError, match="sub_domain_weights.outer_interaction=0"):
        SynthRefConfig(attributes=("color", "hat"))  # a flag question needs flags
    colour_only = level_config("demo", ['attributes=["color"]', "sub_domain_weights.outer_interaction=0",
                                        "sub_domain_weights.positive_then_negative=0"])
    samples = generate(120, seed=3, config=colour_only)
    assert {s.domain for s in samples} == set(DOMAINS)  # interaction keeps its hand-holding questions
    words = re.compile(r"\b(hat|tall|short|flag)\b")
    assert not [s.referring for s in samples if words.search(s.referring)]
    assert not [s.id for s in samples if words.search(s.think)]
    rng = sample_rng(3, "train", 0)
    scenes = [make_scene(rng, colour_only, set()) for _ in range(50)]
    assert not any(f.hat or f.tall or f.flag for scene in scenes for f in scene.figures)
    # the full set asks about every attribute, and leaving it at its default changes nothing
    full = generate(120, seed=3, config=level_config("demo", ['attributes=["color", "hat", "tall", "flag"]']))
    assert [s.think for s in full] == [s.think for s in generate(120, seed=3, config=level_config("demo"))]
    assert {m for s in full for m in words.findall(s.referring)} >= {"hat", "tall", "flag"}


def test_trace_wants_restate_what_each_step_looks_for_beside_every_observation():
    plain = generate(150, seed=5, config=level_config("demo"))
    wanted = generate(150, seed=5, config=level_config("demo", ["trace_wants=true"]))
    assert not level_config("demo").trace_wants and not level_config("full").trace_wants
    want = re.compile(r" \((?:want|rule out) [^()]*\)")
    line = re.compile(r"^- Person \d+ \[[\d, ]+\]: (.*) " + ARROW + r" (\S+)$", re.M)
    filter_step = re.compile(r"^# Step \d+: (?:Find the people|Check who (?!is holding)|Rule out)[^\n]*\n((?:- [^\n]*\n?)+)", re.M)
    compared = Counter()
    for a, b in zip(plain, wanted):
        assert a.image_bytes == b.image_bytes and a.answer_boxes == b.answer_boxes  # only the trace differs
        assert not want.search(a.think)
        assert summary_marks(b.think) == summary_marks(a.think)
        assert want.sub("", b.think) == a.think  # the restatements are all that was added
        assert all(want.search(text) for text, _ in line.findall(b.think))  # on every candidate line
        for step in filter_step.finditer(b.think):  # an attribute's verdict is the side-by-side match
            for text, mark in line.findall(step[1]):
                seen, kind, asked = re.fullmatch(r"(.*) \((want|rule out) (.*)\)", text).groups()
                assert (mark == WARN) == ((seen == asked) != (kind == "rule out")), text
                compared[mark] += 1
    assert compared[WARN] > 50 and compared[CROSS] > 50


def test_trace_all_candidates_looks_at_everyone_in_every_step_and_keeps_the_targets():
    settings = ["trace_wants=true"]
    narrow = generate(200, seed=7, config=level_config("demo", settings))
    wide = generate(200, seed=7, config=level_config("demo", [*settings, "trace_all_candidates=true"]))
    assert not level_config("demo").trace_all_candidates and not level_config("full").trace_all_candidates
    line = re.compile(r"^- Person (\d+) \[[\d, ]+\]: [^\n]* " + ARROW + r" (\S+)$", re.M)
    # every step but the sort, the tree, the relation to a reference and a rank among those kept ("of them")
    step = re.compile(r"^# Step \d+: (?!Sort|Locate|Find the people (?:to the|next to)|[^\n]* of them)[^\n]*\n((?:- [^\n]*\n?)+)", re.M)
    widened = 0
    for a, b in zip(narrow, wide):
        assert (a.image_bytes, a.referring, a.answer_boxes) == (b.image_bytes, b.referring, b.answer_boxes)
        assert summary_marks(b.think) == summary_marks(a.think)
        widened += a.think != b.think
        everyone = set(range(1, len(b.candidate_boxes) + 1))
        marks: dict[int, list[str]] = {k: [] for k in everyone}
        for block in step.finditer(b.think):
            listed = [(int(k), mark) for k, mark in line.findall(block[1])]
            assert {k for k, _ in listed} == everyone, (b.id, block[0])  # each filter step lists all
            for k, mark in listed:
                marks[k].append(mark)
        if b.sub_domain not in ("inner_position", "inner_position_two_stage"):  # no reference among the targets' steps
            checked = {k for k, hit in summary_marks(b.think).items() if hit}
            assert checked == {k - 1 for k, seen in marks.items() if seen and set(seen) == {WARN}}, b.id
    assert widened > 30
