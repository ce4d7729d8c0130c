"""Pictures of samples: numbered hint boxes, highlighted answers, and captioned contact sheets.

Line widths and label sizes scale with the image, so a 300-pixel SynthRef scene and a 4000-pixel
photo are equally readable.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from rexthinker import rle
from rexthinker.coords import to_original_frame
from rexthinker.data.sample import RefSample

FONT_PATH = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
HINT_COLOR = (0, 190, 255)
ANSWER_COLOR = (255, 0, 190)
TEXT_COLOR = (255, 255, 255)


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVuSans at ``size`` pixels when installed, else Pillow's built-in scalable font."""
    if FONT_PATH.exists():
        return ImageFont.truetype(str(FONT_PATH), size)
    return ImageFont.load_default(size)


def _in_image_frame(sample: RefSample, boxes: Sequence[Sequence[float]], size: tuple[int, int]) -> list[list[float]]:
    if sample.box_frame is None:
        return [list(b) for b in boxes]
    return [to_original_frame(b, sample.box_frame, size) for b in boxes]


def draw_sample(sample: RefSample, image: Image.Image | None = None) -> Image.Image:
    """The sample's image with hint box k labelled "k" (Person k) and answer boxes drawn thicker in
    another colour. ``image`` replaces the sample's own decoded image (same size; drawn on a copy)."""
    image = sample.load_image() if image is None else image.convert("RGB")
    draw = ImageDraw.Draw(image)
    size = image.size
    short = min(size)
    width = max(1, round(short / 200))
    label_font = font(max(10, round(short / 18)))
    hints = _in_image_frame(sample, sample.candidate_boxes, size)
    answers = _in_image_frame(sample, sample.answer_boxes, size)
    for box in hints:
        draw.rectangle(box, outline=HINT_COLOR, width=width)
    for box in answers:
        draw.rectangle(box, outline=ANSWER_COLOR, width=3 * width)
    answer_set = {tuple(b) for b in answers}
    for k, box in enumerate(hints, 1):
        text = str(k)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=label_font)
        pad = max(1, width)
        tw, th = right - left + 2 * pad, bottom - top + 2 * pad
        x = min(max(0, box[0]), size[0] - tw)
        y = box[1] - th if box[1] - th >= 0 else min(max(0, box[1]), size[1] - th)
        fill = ANSWER_COLOR if tuple(box) in answer_set else HINT_COLOR
        draw.rectangle([x, y, x + tw, y + th], fill=fill)
        draw.text((x + pad - left, y + pad - top), text, font=label_font, fill=TEXT_COLOR)
    return image


def _caption(sample: RefSample) -> str:
    where = sample.domain + (f"/{sample.sub_domain}" if sample.sub_domain else "")
    if sample.is_rejection:
        answer = "answer: none (rejection)"
    else:
        answer = "answer: " + ", ".join(str(i + 1) for i in sample.answer_indices)
    return (f"[{where}] " if where else "") + f"{sample.referring}\n{answer}"


def render_grid(
    samples: Sequence[RefSample],
    path: str | os.PathLike,
    cols: int = 4,
    tile_size: tuple[int, int] = (320, 240),
    caption_height: int = 72,
    masks: bool = False,
) -> Image.Image:
    """Write a PNG contact sheet of ``draw_sample`` tiles, each captioned with its domain, referring
    expression and answer; the sheet is ``cols * tile_w`` by ``rows * (tile_h + caption_height)``
    (fewer columns when there are fewer samples). ``masks`` also paints the answer masks of samples
    that carry them. Returns the sheet."""
    if not samples:
        raise ValueError("render_grid needs at least one sample")
    cols = max(1, min(cols, len(samples)))
    rows = math.ceil(len(samples) / cols)
    tile_w, tile_h = tile_size
    cell_h = tile_h + caption_height
    sheet = Image.new("RGB", (cols * tile_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    caption_font = font(max(9, tile_w // 26))
    line_h = caption_font.getbbox("Ag")[3] + 2
    sample_text = "the person in a red shirt wearing a hat"
    chars = max(10, int((tile_w - 8) * len(sample_text) / max(1.0, caption_font.getlength(sample_text))))
    max_lines = max(1, (caption_height - 4) // line_h)
    for n, sample in enumerate(samples):
        x, y = (n % cols) * tile_w, (n // cols) * cell_h
        tile = draw_sample_with_masks(sample) if masks else draw_sample(sample)
        tile.thumbnail((tile_w, tile_h))
        sheet.paste(tile, (x + (tile_w - tile.width) // 2, y + (tile_h - tile.height) // 2))
        lines = ["".join(tokens) for tokens in wrap_marked_text(_caption(sample), caption_font, tile_w - 8)]
        if len(lines) > max_lines:
            lines = lines[:max_lines]
            lines[-1] = lines[-1][: max(0, chars - 1)] + "\u2026"
        caption = Image.new("RGB", (tile_w - 1, caption_height), (255, 255, 255))  # clips long words
        caption_draw = ImageDraw.Draw(caption)
        for k, line in enumerate(lines):
            caption_draw.text((4, 2 + k * line_h), line, font=caption_font, fill=(0, 0, 0))
        sheet.paste(caption, (x, y + tile_h))
        draw.rectangle([x, y, x + tile_w - 1, y + cell_h - 1], outline=(200, 200, 200))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG")
    return sheet


# --------------------------------------------------------------------------------------------------
# Masks

MASK_ALPHA = 0.45


def segmentation_mask(segmentation, size: tuple[int, int]) -> np.ndarray:
    """A boolean ``(h, w)`` mask from an RLE dict or a COCO polygon list, for a ``(w, h)`` image."""
    if isinstance(segmentation, dict):
        return rle.decode(segmentation)
    canvas = Image.new("L", size, 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in segmentation:
        if len(polygon) >= 6:
            draw.polygon(list(zip(polygon[0::2], polygon[1::2])), fill=1)
    return np.asarray(canvas, dtype=bool)


def overlay_masks(
    image: Image.Image, masks: Sequence[np.ndarray], color=ANSWER_COLOR, alpha: float = MASK_ALPHA
) -> Image.Image:
    """``image`` with each mask blended in ``color``; masks of another size than the image are skipped."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    tint = np.asarray(color, dtype=np.float32)
    for mask in masks:
        if mask.shape != pixels.shape[:2]:
            continue
        pixels[mask] = (1 - alpha) * pixels[mask] + alpha * tint
    return Image.fromarray(pixels.round().astype(np.uint8))


def draw_sample_with_masks(sample: RefSample) -> Image.Image:
    """:func:`draw_sample` on top of the sample's answer masks (``extra["answer_segmentations"]``)."""
    segmentations = sample.extra.get("answer_segmentations") or []
    if not segmentations:
        return draw_sample(sample)
    base = sample.load_image()
    masks = [segmentation_mask(seg, base.size) for seg in segmentations]
    return draw_sample(sample, overlay_masks(base, masks))


# --------------------------------------------------------------------------------------------------
# Trace text with ✅ / ❌ / ⚠ marks

MARK_COLORS = {"\u2705": (28, 160, 60), "\u274c": (215, 40, 40), "\u26a0": (235, 150, 0)}
_MARK_SPLIT = re.compile("([\u2705\u274c\u26a0]\ufe0f?|\\s+)")


@functools.cache
def font_has_glyph(char: str, path: str = str(FONT_PATH)) -> bool:
    """Whether the TrueType font at ``path`` maps ``char`` to a glyph (False without the font)."""
    if not Path(path).exists():
        return False
    from fontTools.ttLib import TTFont

    with TTFont(path, lazy=True) as face:
        return ord(char) in face.getBestCmap()


def draw_mark(draw: ImageDraw.ImageDraw, mark: str, x: float, y: float, size: float) -> None:
    """A mark as a coloured vector shape in the ``size`` square at ``(x, y)``: a green check, a red
    cross or an amber warning triangle."""
    color = MARK_COLORS[mark]
    stroke = max(2, round(size / 6))
    if mark == "\u2705":
        points = [
            (x + 0.12 * size, y + 0.55 * size),
            (x + 0.4 * size, y + 0.82 * size),
            (x + 0.88 * size, y + 0.2 * size),
        ]
        draw.line(points, fill=color, width=stroke, joint="curve")
    elif mark == "\u274c":
        a, b = 0.18 * size, 0.82 * size
        draw.line([(x + a, y + a), (x + b, y + b)], fill=color, width=stroke)
        draw.line([(x + a, y + b), (x + b, y + a)], fill=color, width=stroke)
    else:
        draw.polygon(
            [(x + size / 2, y + 0.08 * size), (x + 0.96 * size, y + 0.9 * size), (x + 0.04 * size, y + 0.9 * size)],
            fill=color,
        )
        bar = max(1, round(size / 10))
        draw.rectangle(
            [x + size / 2 - bar / 2, y + 0.35 * size, x + size / 2 + bar / 2, y + 0.64 * size], fill=(255, 255, 255)
        )
        draw.rectangle(
            [x + size / 2 - bar / 2, y + 0.72 * size, x + size / 2 + bar / 2, y + 0.8 * size], fill=(255, 255, 255)
        )


def _token_width(token: str, text_font) -> float:
    if token[:1] in MARK_COLORS:
        return text_font.size if hasattr(text_font, "size") else 12
    return text_font.getlength(token)


def wrap_marked_text(text: str, text_font, width: float) -> list[list[str]]:
    """``text`` broken into lines of tokens (words, spaces, marks) no wider than ``width`` where
    possible; a mark counts one em wide. Explicit newlines are kept."""
    lines: list[list[str]] = []
    for paragraph in text.split("\n"):
        line: list[str] = []
        used = 0.0
        for token in (t for t in _MARK_SPLIT.split(paragraph) if t):
            w = _token_width(token, text_font)
            if token.isspace():
                if line:
                    line.append(token)
                    used += w
                continue
            if line and used + w > width:
                while line and line[-1].isspace():
                    line.pop()
                lines.append(line)
                line, used = [], 0.0
            line.append(token)
            used += w
        lines.append(line)
    return lines


def draw_marked_text(
    draw: ImageDraw.ImageDraw, xy: tuple[float, float], lines: Sequence[Sequence[str]], text_font,
    fill=(0, 0, 0), line_height: float | None = None,
) -> float:  # fmt: skip
    """Draw wrapped lines at ``xy``; marks the font has are drawn as glyphs in their colour, the
    others as :func:`draw_mark` shapes. Returns the height used."""
    size = text_font.size if hasattr(text_font, "size") else 12
    step = line_height or round(size * 1.3)
    x0, y = xy
    for line in lines:
        x = x0
        for token in line:
            mark = token[:1]
            if mark in MARK_COLORS:
                if font_has_glyph(mark):
                    draw.text((x, y), mark, font=text_font, fill=MARK_COLORS[mark])
                else:
                    draw_mark(draw, mark, x, y + (step - size) / 2, size)
                x += size
            else:
                draw.text((x, y), token, font=text_font, fill=fill)
                x += text_font.getlength(token)
        y += step
    return y - xy[1]


def render_trace_panel(
    sample: RefSample, width: int = 1200, image_width: int = 440, font_size: int = 13
) -> Image.Image:
    """One HumanRef-CoT sample: the image with hint k labelled "k" (Person k of the trace) on the
    left, and the referring expression, the answer and the whole trace (marks in colour) on the right."""
    picture = draw_sample(sample)
    picture.thumbnail((image_width, 10_000))
    text_font = font(font_size)
    head_font = font(font_size + 2)
    margin = 10
    text_x = picture.width + 2 * margin
    text_w = width - text_x - margin
    answer = ", ".join(str(i + 1) for i in sample.answer_indices) or "none (rejection)"
    header = wrap_marked_text(f"{sample.referring}\nanswer: {answer}   [{sample.id}]", head_font, text_w)
    body = wrap_marked_text(sample.think or "(no trace)", text_font, text_w)
    step = round(font_size * 1.3)
    height = max(
        picture.height + 2 * margin, 2 * margin + len(header) * round((font_size + 2) * 1.3) + 6 + len(body) * step
    )
    panel = Image.new("RGB", (width, height), (255, 255, 255))
    panel.paste(picture, (margin, margin))
    draw = ImageDraw.Draw(panel)
    used = draw_marked_text(draw, (text_x, margin), header, head_font, fill=(20, 20, 120))
    draw_marked_text(draw, (text_x, margin + used + 6), body, text_font, line_height=step)
    draw.rectangle([0, 0, width - 1, height - 1], outline=(200, 200, 200))
    return panel


def render_panels(panels: Sequence[Image.Image], path: str | os.PathLike, cols: int = 1) -> Image.Image:
    """Stack panels in a grid (rows as tall as their tallest panel) and write it as PNG."""
    if not panels:
        raise ValueError("render_panels needs at least one panel")
    cols = max(1, min(cols, len(panels)))
    rows = [panels[k : k + cols] for k in range(0, len(panels), cols)]
    cell_w = max(p.width for p in panels)
    heights = [max(p.height for p in row) for row in rows]
    sheet = Image.new("RGB", (cols * cell_w, sum(heights)), (255, 255, 255))
    y = 0
    for row, h in zip(rows, heights):
        for k, p in enumerate(row):
            sheet.paste(p, (k * cell_w, y))
        y += h
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG")
    return sheet
