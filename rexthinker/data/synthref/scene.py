"""SynthRef's scenes: who stands where wearing what (:func:`make_scene`), drawn into an image and
a label map (:func:`render`) whose silhouettes give the candidate boxes (:func:`label_boxes`)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from rexthinker.data.synthref.config import CANOPY, INK, LEGS, MARK_FILLS, PALETTE, SKIN, TRUNK, SynthRefConfig


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


def make_scene(rng: random.Random, cfg: SynthRefConfig, needs: set[str]) -> Scene:
    width = rng.randint(*cfg.width)
    height = rng.randint(*cfg.height)
    tree = "tree" in needs or rng.random() < cfg.p_tree
    most = min(cfg.persons[1], width // cfg.min_slot_px - int(tree))
    n = rng.randint(cfg.persons[0], max(cfg.persons[0], most))
    palette = rng.sample(cfg.colors, min(len(cfg.colors), n, rng.randint(*cfg.colors_per_image)))
    by_rank = [
        Figure(
            color=rng.choice(palette),
            hat=rng.random() < cfg.p_hat and "hat" in cfg.attributes,
            tall=rng.random() < cfg.p_tall and "tall" in cfg.attributes,
            flag=rng.random() < cfg.p_flag and "flag" in cfg.attributes,
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


def render(scene: Scene, rng: random.Random, cfg: SynthRefConfig) -> tuple[Image.Image, np.ndarray]:
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
    torso_w = max(8, round(sw * cfg.torso_width))
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
        _draw_marks(draw, torsos, cfg.mark_colours, cfg.mark_size)
    if cfg.noise > 0:
        noise_rng = np.random.default_rng(rng.getrandbits(64))
        pixels = np.asarray(image, dtype=np.int16)
        pixels = pixels + noise_rng.integers(-int(cfg.noise), int(cfg.noise) + 1, size=pixels.shape, dtype=np.int16)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image, np.asarray(labels)


def _draw_marks(draw: ImageDraw.ImageDraw, torsos: list[tuple[float, float, float, float]], colours: bool = False, size: float = 0.65) -> None:
    """Each person's hint number in a tag on the torso (set-of-mark prompting): white, or with
    ``colours`` filled with the number's own colour (:data:`MARK_FILLS`). Draws no random numbers,
    so the rest of the sample is the same with and without marks."""
    from PIL import ImageFont

    for k, (cx, half, top, bottom) in enumerate(torsos):
        side = max(8.0, min(2 * half * size, (bottom - top) * size))
        font = ImageFont.load_default(size=max(6, round(side * 0.85)))
        x0, y0 = cx - side / 2, (top + bottom) / 2 - side / 2
        fill = MARK_FILLS[k % len(MARK_FILLS)] if colours else (255, 255, 255)
        ink = (255, 255, 255) if sum(fill) < 384 else INK
        draw.rectangle([x0, y0, x0 + side, y0 + side], fill=fill)
        draw.text((cx, y0 + side / 2), str(k + 1), fill=ink, font=font, anchor="mm")


def label_boxes(labels: np.ndarray, n: int) -> list[list[int]]:
    """The tight ``[x0, y0, x1, y1)`` box of each silhouette ``1..n`` in a label map of :func:`render`."""
    boxes = []
    for k in range(n):
        ys, xs = np.nonzero(labels == k + 1)
        boxes.append([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
    return boxes

