"""The demo's pre-trained base: its chats, its label mask, and a short real pre-training run."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch

from rexthinker.contracts.answer import parse_answer
from rexthinker.data.synthref.config import PALETTE
from rexthinker.models import base, tiny
from rexthinker.prompts import pixel_limits
from rexthinker.train.features import IGNORE


@pytest.fixture(scope="module")
def processor():
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny.get("tiny"))


def test_chat_names_every_hint_and_copies_its_boxes(processor):
    lo, hi = pixel_limits(processor)
    image, turns = base.make_example(3, base.BaseRecipe(spec="tiny"), lo, hi)
    hint = json.loads(turns[0][0].split("image: ", 1)[1].split("\n", 1)[0])["person"]
    lines = turns[0][1].split("\n")
    assert [line.split(":")[0] for line in lines] == [f"Person {k + 1} {json.dumps(box)}" for k, box in enumerate(hint)]
    plain = base.make_example(3, base.BaseRecipe(spec="tiny", boxes=False), lo, hi)[1][0][1].split("\n")
    assert [line.split(":")[0] for line in plain] == [f"Person {k + 1}" for k in range(len(hint))]
    for question, answer in turns[1:]:
        asked = [int(k) for k in re.findall(r"Person (\d+)", question)]
        boxes = [item["bbox_2d"] for item in json.loads(answer.removeprefix("```json\n").removesuffix("\n```"))]
        assert boxes == [hint[k - 1] for k in asked]
    again = base.make_example(3, base.BaseRecipe(spec="tiny"), lo, hi)
    assert again[1] == turns and list(again[0].getdata()) == list(image.getdata())


def test_pretrain_scenes_are_not_the_referring_splits(processor):
    from rexthinker.data import synthref

    lo, hi = pixel_limits(processor)
    image, _ = base.make_example(0, base.BaseRecipe(spec="tiny"), lo, hi)
    for split in ("train", "val", "test"):
        assert synthref.sample_rng(0, split, 0).random() != synthref.sample_rng(0, "pretrain", 0).random()
    assert image.size != (0, 0)


def test_labels_cover_exactly_the_assistant_turns(processor):
    lo, hi = pixel_limits(processor)
    image, turns = base.make_example(5, base.BaseRecipe(spec="tiny"), lo, hi)
    f = base.build_features(processor, image, turns)
    assert f.input_ids.shape == f.labels.shape == f.mm_token_type_ids.shape
    idx = (f.labels != IGNORE).nonzero().flatten()
    spans = torch.tensor_split(idx, (torch.diff(idx) > 1).nonzero().flatten() + 1)
    decoded = [processor.tokenizer.decode(f.input_ids[s]) for s in spans]
    assert decoded == [answer + "<|im_end|>" for _, answer in turns]
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int(f.mm_token_type_ids.sum()) == int((f.input_ids == image_pad).sum()) == int(f.image_grid_thw.prod()) // 4


def test_pretraining_changes_every_weight_and_is_cached(tmp_path, monkeypatch):
    from transformers import Qwen2_5_VLForConditionalGeneration

    source = tiny.get("tiny")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / source.name).symlink_to(source)  # reuse the random checkpoint, cache the base here
    monkeypatch.setenv("REXTHINKER_CACHE", str(tmp_path))
    recipe = base.BaseRecipe(spec="tiny", steps=2, batch_size=2, warmup_steps=1)
    logs: list[str] = []
    path = base.get(recipe, log=logs.append)
    assert (path / base.MARKER).exists() and any("step 2/2" in line for line in logs)
    history = [json.loads(line) for line in (path / "pretrain_history.jsonl").read_text().splitlines()]
    assert [row["step"] for row in history] == [1, 2]
    assert {"heldout_box_exact", "heldout_colour_acc", "heldout_describe_exact", "heldout_locate_exact"} <= set(history[-1])
    before = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny.get("tiny")).state_dict()
    after = Qwen2_5_VLForConditionalGeneration.from_pretrained(path).state_dict()
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert unchanged == []
    assert base.get(recipe, log=logs.append) == path and sum("pre-training" in line for line in logs) == 1


def test_a_build_writes_snapshots_and_continues_from_one(tmp_path, monkeypatch):
    from transformers import Qwen2_5_VLForConditionalGeneration

    source = tiny.get("tiny")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / source.name).symlink_to(source)
    monkeypatch.setenv("REXTHINKER_CACHE", str(tmp_path))
    first = base.BaseRecipe(spec="tiny", steps=3, batch_size=2, warmup_steps=1, save_every=2)
    logs: list[str] = []
    path = base.get(first, log=logs.append)
    snap = path.with_name(path.name + ".partial") / "step-2"
    assert (snap / "model.safetensors").exists() and any("--start 4" in line for line in logs)
    assert [json.loads(r)["step"] for r in (snap / "pretrain_history.jsonl").read_text().splitlines()] == [1, 2]
    more = base.BaseRecipe(spec="tiny", steps=1, batch_size=2, warmup_steps=1, init=str(snap), start=4)
    assert more.key("k") != dataclasses.replace(more, init=str(path)).key("k")  # keyed by the weights
    moved = base.get(more, log=logs.append)
    assert any(f"from {snap}" in line for line in logs)
    before = Qwen2_5_VLForConditionalGeneration.from_pretrained(snap).state_dict()
    after = Qwen2_5_VLForConditionalGeneration.from_pretrained(moved).state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)

    chain = base.lineage(moved)  # the snapshot's build (stopped at step 2), then the continuation
    assert [(b["recipe"]["steps"], b["steps_run"]) for b in chain] == [(3, 2), (1, 1)]
    shipped = base.ship(moved, tmp_path / "shipped")
    card = (shipped / "README.md").read_text()
    assert "| 1 | `python -m rexthinker.models.base --spec tiny --steps 3 --batch-size 2 --warmup-steps 1 --save-every 2`" in card
    assert "`tiny` Qwen2.5-VL" in card and "(stopped at a snapshot) | 0 | 2 x 2 | 4 |" in card
    assert f"--init {snap} --start 4" in card and "(stopped at a snapshot)" in card
    from safetensors.torch import load_file

    assert {v.dtype for v in load_file(shipped / "model.safetensors").values()} == {torch.bfloat16}
    loaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(shipped)  # upcast to the config's fp32
    assert base.lineage(shipped) == chain
    assert all(torch.equal(after[k].to(torch.bfloat16).float(), v) for k, v in loaded.state_dict().items())


def test_minutes_fit_the_steps_to_this_machine(tmp_path, monkeypatch):
    source = tiny.get("tiny")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / source.name).symlink_to(source)
    monkeypatch.setenv("REXTHINKER_CACHE", str(tmp_path))
    recipe = base.BaseRecipe(spec="tiny", batch_size=2)
    logs: list[str] = []
    fitted = base.fit_steps(recipe, 3.0, log=logs.append, timed_steps=12)
    per_step, spent = (float(x) for x in re.search(r"([\d.]+) s a step after 12 timed steps \((\d+) s", logs[0]).groups())
    assert 12 < fitted.steps and fitted.steps * per_step <= 3 * 60 - spent
    assert f"--steps {fitted.steps} for 3 minutes" in logs[0]
    assert dataclasses.replace(fitted, steps=recipe.steps) == recipe  # only the steps change
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [source.name]  # the timed steps are not cached
    # 0.06 s cannot hold even the timing run (loading alone takes longer), on any machine
    with pytest.raises(ValueError, match="--minutes 0.001: 12 timed steps took"):
        base.fit_steps(recipe, 0.001, log=logs.append, timed_steps=12)
    with pytest.raises(ValueError, match="--copy-steps"):
        base.fit_steps(dataclasses.replace(recipe, copy_steps=2), 3.0)


def test_probes_score_the_box_and_colour_of_each_description_line(processor):
    lo, hi = pixel_limits(processor)
    image, turns = base.make_example(4, base.BaseRecipe(spec="tiny"), lo, hi)
    f = base.build_features(processor, image, turns)
    targets = base.chat_targets(processor.tokenizer, turns)
    lines = turns[0][1].split("\n")
    assert [t[0] for t in targets] == [0] * len(lines)  # the description is the first turn of a fixed chat
    start = int((f.labels != IGNORE).nonzero()[0])
    for line, (_, box, colour, mark, _, _) in zip(lines, targets):
        assert mark == []  # a description line checks nothing
        assert processor.tokenizer.decode(f.input_ids[start + torch.tensor(box)]).strip() == line[line.index("["): line.index("]") + 1]
        assert processor.tokenizer.decode(f.input_ids[start + torch.tensor(colour)]).strip() == line.split(": ")[1].split(" ")[0]
    # perfect logits: every probe 1; one wrong colour token: colour_acc drops by one line
    labels = f.labels[None]
    logits = torch.full((1, labels.shape[1], len(processor.tokenizer)), -10.0)
    gold = labels[0, 1:].clamp(min=0)
    logits[0, torch.arange(labels.shape[1] - 1), gold] = 10.0
    assert base.skill_probes(logits, labels, [targets]) == {"box_exact": 1.0, "colour_acc": 1.0, "describe_exact": 1.0, "locate_exact": 1.0,
                                                            "attribute_acc": 1.0}  # fmt: skip
    wrong = start + targets[0][2][0] - 1  # the position that predicts the first line's colour token
    logits[0, wrong] = logits[0, wrong].roll(1)
    probes = base.skill_probes(logits, labels, [targets])
    assert probes["colour_acc"] == 1 - 1 / len(lines) and probes["box_exact"] == 1.0 and probes["describe_exact"] == 0.0


def test_colour_weight_weights_exactly_the_colour_tokens(processor):
    lo, hi = pixel_limits(processor)
    image, turns = base.make_example(4, base.BaseRecipe(spec="tiny"), lo, hi)
    f = base.build_features(processor, image, turns)
    targets = [base.chat_targets(processor.tokenizer, turns)]
    labels = f.labels[None]
    logits = torch.randn(1, labels.shape[1], len(processor.tokenizer), generator=torch.Generator().manual_seed(0))
    plain = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=IGNORE)
    assert torch.allclose(base.weighted_loss(logits, labels, targets, 1.0), plain)
    per_token = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:].clamp(min=0), reduction="none")
    start = int((f.labels != IGNORE).nonzero()[0]) - 1  # shifted: position p predicts token p + 1
    colour = torch.tensor([start + j for _, _, c, *_ in targets[0] for j in c])
    answer = labels[0, 1:] != IGNORE
    expected = (per_token[answer].sum() + 4 * per_token[colour].sum()) / (answer.sum() + 4 * len(colour))
    assert torch.allclose(base.weighted_loss(logits, labels, targets, 5.0), expected)
    assert base.BaseRecipe(spec="tiny").key("k") == base.BaseRecipe(spec="tiny", colour_weight=1.0).key("k")
    assert base.BaseRecipe(spec="tiny").key("k") != base.BaseRecipe(spec="tiny", colour_weight=5.0).key("k")


def test_scene_settings_reach_the_generator(processor):
    lo, hi = pixel_limits(processor)
    counts, sizes = set(), set()
    for i in range(8):
        image, turns = base.make_example(i, base.BaseRecipe(spec="tiny", scene="persons=[3,4] marks=true"), lo, hi)
        counts.add(len(turns[0][1].split("\n")))
        plain, _ = base.make_example(i, base.BaseRecipe(spec="tiny", scene="persons=[3,4]"), lo, hi)
        assert list(plain.getdata()) != list(image.getdata())  # the marks are drawn
        demo, turns = base.make_example(i, base.BaseRecipe(spec="tiny", level="demo"), lo, hi)
        sizes.add(demo.size)
        assert 2 <= len(turns[0][1].split("\n")) <= 4
    assert counts <= {3, 4}
    assert all(224 <= w <= 280 and 140 <= h <= 168 for w, h in sizes)
    assert base.BaseRecipe(scene="persons=[3,4]").key("k") != base.BaseRecipe().key("k")
    assert base.BaseRecipe(level="demo").key("k") != base.BaseRecipe().key("k")
    assert base.BaseRecipe(workers=8, save_every=3).key("k") == base.BaseRecipe().key("k")  # execution only
    with pytest.raises(ValueError, match="unknown SynthRef setting 'people'"):
        base.BaseRecipe(scene="people=3").scene_config()


def test_copy_warm_up_chats_are_text_only_lists_of_the_hints(processor):
    lo, hi = pixel_limits(processor)
    recipe = base.BaseRecipe(spec="tiny", level="demo")
    _, turns = base.make_example(5, recipe, lo, hi, "pretrain-copy", copy=True)
    hint = json.loads(turns[0][0].split("image: ", 1)[1].split("\n", 1)[0])["person"]
    assert turns[0][0].endswith(base.LIST)
    assert turns[0][1].split("\n") == [f"Person {k + 1} {json.dumps(box)}" for k, box in enumerate(hint)]
    batch, targets = next(iter(base._loader(base.Chats(processor, recipe, "pretrain-copy", 0, 3, copy=True), 3, 0, 0)))
    assert "pixel_values" not in batch and not (batch["mm_token_type_ids"] == 1).any()
    assert image_pad_free(processor, batch["input_ids"]) and all(t and all(line[1] for line in t) for t in targets)


def image_pad_free(processor, ids) -> bool:
    return not (ids == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")).any()


def test_a_build_with_a_copy_warm_up_runs_both_phases(tmp_path, monkeypatch):
    source = tiny.get("tiny")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / source.name).symlink_to(source)
    monkeypatch.setenv("REXTHINKER_CACHE", str(tmp_path))
    recipe = base.BaseRecipe(spec="tiny", level="demo", copy_steps=2, copy_batch_size=3, steps=1, batch_size=2, warmup_steps=1)
    logs: list[str] = []
    path = base.get(recipe, log=logs.append)
    assert any("2 text-only steps x 3 and 1 steps x 2 images" in line for line in logs) and any("step 3/3" in line for line in logs)
    assert [json.loads(r)["step"] for r in (path / "pretrain_history.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert "1 x 2 (after 2 x 3 text-only) | 2 + 6 |" in base.model_card(base.lineage(path), "bfloat16", 1)


def test_varied_chats_move_the_description_and_probe_it_wherever_it_lands(processor):
    """The "varied" chats: system prompt, wording, turn order and a preamble drawn per chat; the
    probes and the colour weights follow the description lines into whichever turn holds them."""
    lo, hi = pixel_limits(processor)
    recipe = base.BaseRecipe(spec="tiny", level="demo", chat="varied")
    where, systems, preambles = set(), set(), set()
    for i in range(24):
        image, turns = base.make_example(i, recipe, lo, hi)
        hint = json.loads(turns[0][0].split("image: ", 1)[1].split("\n", 1)[0])["person"]
        every = [t for t, (_, answer) in enumerate(turns) if len(base.describe_targets(processor.tokenizer, answer)) == len(hint)
                 and answer.split("\n")[-1].startswith(f"Person {len(hint)} ")]  # fmt: skip
        assert every, turns
        where.add(every[0])
        lines = turns[every[0]][1].split("\n")
        preambles.add(len(lines) > len(hint))
        assert [line.split(":")[0] for line in lines[-len(hint):]] == [f"Person {k + 1} {json.dumps(box)}" for k, box in enumerate(hint)]
        systems.add(base.system_prompt(i, recipe))
        assert base.make_example(i, recipe, lo, hi)[1] == turns
    assert len(where) >= 3 and preambles == {True, False} and systems == set(base.SYSTEMS)
    # the scenes are the fixed chats' scenes; only the chats differ
    fixed_image, _ = base.make_example(7, dataclasses.replace(recipe, chat="fixed"), lo, hi)
    assert list(fixed_image.getdata()) == list(base.make_example(7, recipe, lo, hi)[0].getdata())
    assert recipe.key("k") != dataclasses.replace(recipe, chat="fixed").key("k")
    assert base.BaseRecipe().key("k") == base.BaseRecipe(chat="fixed", copy_task="list").key("k")  # older builds keep their key
    # a batch: every description line's box and colour is found in its own turn
    (batch, targets) = next(iter(base._loader(base.Chats(processor, recipe, "pretrain", 0, 6), 6, 0, processor.tokenizer.pad_token_id)))
    for row, chat in enumerate(targets):
        spans = base._answer_spans(batch["labels"][row, 1:])
        for turn, box, colour, *_ in chat:
            text = processor.tokenizer.decode(batch["labels"][row, 1:][spans[turn][torch.tensor(colour)]])
            assert text.strip() in PALETTE, text
            assert processor.tokenizer.decode(batch["labels"][row, 1:][spans[turn][torch.tensor(box)]]).strip().startswith("[")
    labels = batch["labels"]
    logits = torch.full((*labels.shape, len(processor.tokenizer)), -10.0)
    logits.scatter_(2, labels.clamp(min=0).roll(-1, 1).unsqueeze(-1), 10.0)  # position p predicts token p + 1
    assert base.skill_probes(logits, labels, targets) == {"box_exact": 1.0, "colour_acc": 1.0, "describe_exact": 1.0, "locate_exact": 1.0,
                                                          "attribute_acc": 1.0}  # fmt: skip


def test_ask_chats_name_a_colour_first_and_answer_from_the_lines(processor):
    """"varied-ask": a colour question whose colour is named before the shirt lines; the verdict
    follows from the lines, and the probes score those lines (their "- " prefix included)."""
    lo, hi = pixel_limits(processor)
    recipe = base.BaseRecipe(spec="tiny", level="demo", chat="varied-ask")
    asked = 0
    for i in range(24):
        _, turns = base.make_example(i, recipe, lo, hi)
        for question, answer in turns:
            found = re.search(r"(?:wearing|wears) an? (\w+) shirt", question)
            if not found:
                continue
            asked += 1
            colour = found.group(1)
            lines = [line for line in answer.split("\n") if re.match(r"(- )?Person \d+ \[", line)]
            assert f"{colour} shirt" in answer.split("\n")[0]  # named before any line is written
            wearing = [line.removeprefix("- ").split(" [")[0] for line in lines if line.endswith(f": {colour} shirt")]
            last = answer.split("\n")[-1]
            assert (last.startswith("Yes:") and all(name in last for name in wearing)) or (not wearing and last.startswith("No,"))
            assert len(base.describe_targets(processor.tokenizer, answer)) == len(lines)
    assert asked >= 5
    with pytest.raises(ValueError, match="unknown base chat form 'chatty'"):
        base.BaseRecipe(chat="chatty")


def test_check_chats_compare_each_line_with_the_colour_asked(processor):
    """"varied-check" and the "check" text-only task: each shirt line of a colour question ends with
    "(want <asked> shirt) → ⚠" when its colour is the one asked and "→ ❌" otherwise; the probes score
    those marks apart (check_same / check_other), and a wrong mark lowers exactly its own column."""
    lo, hi = pixel_limits(processor)
    recipe = base.BaseRecipe(spec="tiny", level="demo", chat="varied-check", copy_task="check")
    checked = {True: 0, False: 0}
    for i in range(16):
        for copy in (False, True):
            image, turns = base.make_example(i, recipe, lo, hi, copy=copy)
            for question, answer in turns:
                found = re.search(r"(?:wearing|wears) an? (\w+) shirt", question)
                if not found:
                    continue
                for line in (line for line in answer.split("\n") if re.match(r"(- )?Person \d+ \[", line)):
                    worn = line.split(": ")[1].split(" ")[0]
                    assert line.endswith(f"{worn} shirt (want {found.group(1)} shirt) → " + ("⚠" if worn == found.group(1) else "❌"))
                    checked[worn == found.group(1)] += 1
            if copy:  # text only: the shirts are given in hint order, as the lines then state them
                shirts = re.search(r"Their shirts, in the order of the hints: (.*)\.\n", turns[0][0]).group(1).split(", ")
                assert shirts == [line.split(": ")[1].split(" ")[0] for line in turns[0][1].split("\n") if "→" in line]
    assert min(checked.values()) >= 5
    _, turns = base.make_example(0, recipe, lo, hi, copy=True)
    f = base.build_features(processor, None, turns)
    targets = base.chat_targets(processor.tokenizer, turns)
    start = int((f.labels != IGNORE).nonzero()[0])
    for _, _, _, mark, same, _ in targets:
        assert processor.tokenizer.decode(f.input_ids[start + torch.tensor(mark)]).strip() == ("⚠" if same else "❌")
    labels = f.labels[None]
    logits = torch.full((1, labels.shape[1], len(processor.tokenizer)), -10.0)
    logits[0, torch.arange(labels.shape[1] - 1), labels[0, 1:].clamp(min=0)] = 10.0
    probes = base.skill_probes(logits, labels, [targets])
    assert probes["check_same"] == probes["check_other"] == 1.0
    first_other = next(t for t in targets if not t[4])
    wrong = start + first_other[3][0] - 1  # the position that predicts that mark
    logits[0, wrong] = logits[0, wrong].roll(1)
    probes = base.skill_probes(logits, labels, [targets])
    others = sum(not t[4] for t in targets)
    assert probes["check_same"] == 1.0 and probes["check_other"] == 1 - 1 / others
    # check_weight weights exactly the marks (position p predicts token p + 1)
    logits = torch.randn(1, labels.shape[1], len(processor.tokenizer), generator=torch.Generator().manual_seed(0))
    per_token = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:].clamp(min=0), reduction="none")
    weights = (labels[0, 1:] != IGNORE).float()
    weights[torch.tensor([start - 1 + j for t in targets for j in t[3]])] = 7.0
    expected = (per_token * weights).sum() / weights.sum()
    assert torch.allclose(base.weighted_loss(logits, labels, [targets], 1.0, 7.0), expected)
    with pytest.raises(ValueError, match="unknown base copy task 'echo'"):
        base.BaseRecipe(copy_task="echo")


def test_checks_chats_check_other_attributes_and_the_order(processor):
    """"varied-checks": besides shirt colours, a question checks every person for a hat, a flag, the
    height or holding hands ("no hat (want wears a hat) → ❌"), or for a place in the order: the people
    sorted by the x of their hint boxes, then "second from the left (want second from the left) → ⚠"
    line by line in that order. Each line's mark is a probe target, scored apart from the colours."""
    lo, hi = pixel_limits(processor)
    recipe = base.BaseRecipe(spec="tiny", level="demo", chat="varied-checks")
    seen = {"order": 0, "hands": 0, "attribute": 0, "colour": 0}
    for i in range(60):
        _, turns = base.make_example(i, recipe, lo, hi)
        hint = json.loads(turns[0][0].split("image: ", 1)[1].split("\n", 1)[0])["person"]
        for _, answer in turns:
            lines = [line for line in answer.split("\n") if "(want " in line]
            if not lines:
                continue
            targets = base.describe_targets(processor.tokenizer, answer)
            assert [bool(t[2]) for t in targets] == [True] * len(lines) and [t[3] for t in targets] == [line.endswith("⚠") for line in lines]
            if "shirt (want" in lines[0]:
                seen["colour"] += 1
            elif "from the" in lines[0]:
                seen["order"] += 1
                side = re.search(r"from the (left|right) \(", lines[0]).group(1)
                people = [int(k) - 1 for k in re.findall(r"Person (\d+)", answer.split("\n")[1])]
                by_x = sorted(range(len(hint)), key=lambda k: hint[k][0] + hint[k][2], reverse=side == "right")
                assert people == by_x == [int(re.match(r"- Person (\d+)", line).group(1)) - 1 for line in lines]
                want = re.search(r"\(want (\w+) from", lines[0]).group(1)
                assert [line.endswith("⚠") for line in lines] == [line.split(": ")[1].startswith(want + " ") for line in lines]
                assert sum(line.endswith("⚠") for line in lines) == 1
            else:
                seen["hands" if "hands" in lines[0] else "attribute"] += 1
                for line in lines:
                    said, want = re.match(r"- Person \d+ \[[\d, ]+\]: (.+) \(want (.+)\) → ", line).groups()
                    match = said.startswith("holds hands") if want == "holding hands" else said == want
                    assert line.endswith("⚠" if match else "❌")
    assert min(seen.values()) >= 2, seen


def test_attribute_targets_cover_height_hat_flag_and_hands(processor):
    """Every part of a description or check line after the shirt (height, hat, flag, holding hands) is
    an attribute target: its tokens decode to that part; ``attribute_acc`` scores them and
    ``attribute_weight`` weights exactly them."""
    lo, hi = pixel_limits(processor)
    recipe = base.BaseRecipe(spec="tiny", level="demo", chat="varied-checks")
    found = set()
    for i in range(12):
        _, turns = base.make_example(i, recipe, lo, hi)
        for _, answer in turns:
            enc = processor.tokenizer(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
            for *_, attributes in base.describe_targets(processor.tokenizer, answer):
                for where in attributes:
                    part = processor.tokenizer.decode([enc[j] for j in where]).strip()
                    assert re.fullmatch(r"tall|short|wears a hat|no hat|holds a flag|no flag|hands free|holds hands with Person \d( and Person \d)*", part)
                    found.add(part.split(" with ")[0])
    assert {"tall", "short", "no hat", "wears a hat", "no flag", "holds a flag"} <= found
    _, turns = base.make_example(1, base.BaseRecipe(spec="tiny", level="demo"), lo, hi)
    f = base.build_features(processor, None, turns)
    targets = base.chat_targets(processor.tokenizer, turns)
    start = int((f.labels != IGNORE).nonzero()[0])
    labels = f.labels[None]
    logits = torch.randn(1, labels.shape[1], len(processor.tokenizer), generator=torch.Generator().manual_seed(0))
    per_token = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:].clamp(min=0), reduction="none")
    weights = (labels[0, 1:] != IGNORE).float()
    weights[torch.tensor([start - 1 + j for t in targets if t[0] == 0 for a in t[5] for j in a])] = 5.0
    assert torch.allclose(base.weighted_loss(logits, labels, [targets], 1.0, 1.0, 5.0), (per_token * weights).sum() / weights.sum())
    perfect = torch.full_like(logits, -10.0)
    perfect[0, torch.arange(labels.shape[1] - 1), labels[0, 1:].clamp(min=0)] = 10.0
    assert base.skill_probes(perfect, labels, [targets])["attribute_acc"] == 1.0


def test_select_task_ends_with_the_json_of_the_matching_lines_boxes(processor):
    """The "select" text-only task is the "check" one (same draws, same lines) whose answer ends with
    the JSON of the boxes of the lines marked ⚠, in their order (``[]`` when none matches), instead of
    naming them; its build key differs from the check task's."""
    lo, hi = pixel_limits(processor)
    check = base.BaseRecipe(spec="tiny", level="demo", copy_task="check")
    select = base.BaseRecipe(spec="tiny", level="demo", copy_task="select")
    assert check.key("k") != select.key("k")
    seen = {"some": 0, "none": 0}
    for i in range(24):
        [(q1, a1)], [(q2, a2)] = (base.make_example(i, recipe, lo, hi, copy=True)[1] for recipe in (check, select))
        assert q1 == q2
        lines = [line for line in a2.split("\n") if "→" in line]
        assert lines == [line for line in a1.split("\n") if "→" in line]  # the same checked lines
        parsed = parse_answer(a2[a2.index("```json") :])
        wanted = [[int(v) for v in re.search(r"\[([\d, ]+)\]", line).group(1).split(", ")] for line in lines if line.endswith("⚠")]
        assert parsed.ok and [list(map(int, b)) for b in parsed.boxes] == wanted
        assert a1.split("\n")[-1].startswith(("Yes: ", "No, nobody")) and not a2.rstrip().endswith(".")
        seen["some" if wanted else "none"] += 1
    assert min(seen.values()) >= 3
