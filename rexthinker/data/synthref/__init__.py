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

import io
import multiprocessing
import multiprocessing.pool
import random
from collections.abc import Iterator

from rexthinker import rle
from rexthinker.contracts.trace import render_trace, summary_marks
from rexthinker.coords import model_frame_size, to_model_frame
from rexthinker.data.sample import RefSample
from rexthinker.data.synthref.config import CATEGORY, DOMAINS, LEVELS, SUB_DOMAINS, SynthRefConfig, level_config
from rexthinker.data.synthref.queries import NEEDS, build_query
from rexthinker.data.synthref.scene import label_boxes, make_scene, render

__all__ = ["CATEGORY", "DOMAINS", "LEVELS", "SynthRefConfig", "generate", "generate_one", "iter_chunks", "level_config", "sample_rng"]


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
        scene = make_scene(rng, cfg, NEEDS.get(sub_domain, set()))
        query = build_query(scene, sub_domain, rng, cfg)
        if query is not None and (sub_domain == "rejection") == (not query.targets):
            break
    else:
        raise RuntimeError(f"no {sub_domain} question found for sample {index} of {split!r} (seed {seed})")

    image, labels = render(scene, rng, cfg)
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
