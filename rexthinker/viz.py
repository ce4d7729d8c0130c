"""Pictures of samples: numbered hint boxes, highlighted answers, and captioned contact sheets.

Line widths and label sizes scale with the image, so a 300-pixel SynthRef scene and a 4000-pixel
photo are equally readable.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

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


def draw_sample(sample: RefSample) -> Image.Image:
    """The sample's image with hint box k labelled "k" (Person k) and answer boxes drawn thicker in
    another colour."""
    image = sample.load_image()
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
    return f"[{where}] {sample.referring}\n{answer}"


def render_grid(
    samples: Sequence[RefSample],
    path: str | os.PathLike,
    cols: int = 4,
    tile_size: tuple[int, int] = (320, 240),
    caption_height: int = 72,
) -> Image.Image:
    """Write a PNG contact sheet of ``draw_sample`` tiles, each captioned with its domain, referring
    expression and answer; the sheet is ``cols * tile_w`` by ``rows * (tile_h + caption_height)``
    (fewer columns when there are fewer samples). Returns the sheet."""
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
        tile = draw_sample(sample)
        tile.thumbnail((tile_w, tile_h))
        sheet.paste(tile, (x + (tile_w - tile.width) // 2, y + (tile_h - tile.height) // 2))
        lines = [part for para in _caption(sample).split("\n") for part in textwrap.wrap(para, chars) or [""]]
        if len(lines) > max_lines:
            lines = lines[:max_lines]
            lines[-1] = lines[-1][: max(0, chars - 1)] + "\u2026"
        for k, line in enumerate(lines):
            draw.text((x + 4, y + tile_h + 2 + k * line_h), line, font=caption_font, fill=(0, 0, 0))
        draw.rectangle([x, y, x + tile_w - 1, y + cell_h - 1], outline=(200, 200, 200))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG")
    return sheet
