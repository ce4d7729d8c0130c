"""Coordinate frames (contracts §1.6).

Boxes live in the *original* frame (pixels of the image as stored on disk) or in the frame a model
family reads and writes hints and answers in, one of two kinds (:class:`BoxFrame`):
- ``model_pixels`` (Qwen2.5-VL): pixels of the image after ``smart_resize``, i.e. what the vision
  tower sees. Original -> frame truncates and clamps to ``[0, W'-1]``; frame -> original is a plain
  rescale (contracts §1.6).
- ``relative_1000`` (Qwen3-VL, Qwen3.5): the image scaled to 1000 x 1000 whatever its size. The
  resize maps the whole image onto the whole model input, so relative coordinates are the same in
  the original and the resized image. Qwen's Qwen3-VL grounding cookbook (QwenLM/Qwen3-VL,
  ``cookbooks/2d_grounding.ipynb``) states "relative coordinates ranging from 0 to 1000" and decodes
  with ``x / 1000 * width``; it gives no encoding rule, so ours mirrors the pixel frame:
  ``int(x / W * 1000)`` (truncation), clamped to ``[0, 1000]`` (1000 is in the documented range).
  Decoding is the cookbook's rescale, no clamping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Reference pixel limits (contracts §1.6).
TRAIN_MIN_PIXELS = 16 * 28 * 28
TRAIN_MAX_PIXELS = 1280 * 28 * 28
EVAL_MIN_PIXELS = 256 * 28 * 28
PATCH_FACTOR = 28  # patch size 14 x spatial merge 2
MAX_ASPECT_RATIO = 200  # smart_resize refuses a more elongated image
MIN_IMAGE_SIDE = PATCH_FACTOR // 2 + 1  # see check_image_size

# The kinds of frame a model family writes boxes in (see the module docstring).
MODEL_PIXELS = "model_pixels"
RELATIVE_1000 = "relative_1000"
FRAME_KINDS = (MODEL_PIXELS, RELATIVE_1000)
RELATIVE_SCALE = 1000

Box = Sequence[float]


def smart_resize(
    height: int,
    width: int,
    factor: int = PATCH_FACTOR,
    min_pixels: int = TRAIN_MIN_PIXELS,
    max_pixels: int = TRAIN_MAX_PIXELS,
) -> tuple[int, int]:
    """Return ``(height', width')``: both multiples of ``factor``, area within the limits,
    aspect ratio kept as closely as possible (same arithmetic as qwen-vl-utils)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got height={height} width={width}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio must be at most {MAX_ASPECT_RATIO}, got {max(height, width) / min(height, width):.1f}")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def check_image_size(width: int, height: int) -> None:
    """Raise ValueError for an image the prompt builder cannot write hints for: an aspect ratio over
    ``MAX_ASPECT_RATIO`` (:func:`smart_resize` refuses it), or a side under ``MIN_IMAGE_SIDE`` pixels.
    Such a side rounds to 0 patches; the processor (transformers' resize) then scales the image up
    while :func:`smart_resize` (qwen-vl-utils) keeps one patch, so for some pixel limits the frame the
    hints are written in is not the one the model sees (a 600x3 image: 588x28 here, 812x28 there)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise ValueError(f"{width}x{height} image: aspect ratio {max(width, height) / min(width, height):.1f} is over {MAX_ASPECT_RATIO}")
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ValueError(f"{width}x{height} image: a side under {MIN_IMAGE_SIDE} px gets another model frame from the processor")


def model_frame_size(
    width: int, height: int, min_pixels: int = TRAIN_MIN_PIXELS, max_pixels: int = TRAIN_MAX_PIXELS, factor: int = PATCH_FACTOR
) -> tuple[int, int]:
    """``(width', height')`` of the model-input frame for an image of ``width x height``; ``factor`` is
    the family's patch size x spatial merge (28 for Qwen2.5-VL, 32 for Qwen3-VL)."""
    h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    return w, h


def to_model_frame(box: Box, original: tuple[int, int], model: tuple[int, int]) -> list[int]:
    """Map an ``[x0, y0, x1, y1]`` box from the original ``(W, H)`` frame to the model ``(W', H')``
    frame: ``int(x / W * W')`` then clamp to ``[0, W'-1]`` (same for y)."""
    (w, h), (mw, mh) = original, model
    out = []
    for i, v in enumerate(box):
        size, msize = (w, mw) if i % 2 == 0 else (h, mh)
        out.append(min(max(int(v / size * msize), 0), msize - 1))
    return out


def to_original_frame(box: Box, model: tuple[int, int], original: tuple[int, int]) -> list[float]:
    """Map a box from the model ``(W', H')`` frame back to original ``(W, H)`` pixels: ``x / W' * W``,
    no clamping."""
    (mw, mh), (w, h) = model, original
    return [v / mw * w if i % 2 == 0 else v / mh * h for i, v in enumerate(box)]


def to_relative_frame(box: Box, original: tuple[int, int]) -> list[int]:
    """Map a box from the original ``(W, H)`` frame to the 0-1000 relative frame: ``int(x / W * 1000)``
    then clamp to ``[0, 1000]`` (same for y)."""
    w, h = original
    return [min(max(int(v / (w if i % 2 == 0 else h) * RELATIVE_SCALE), 0), RELATIVE_SCALE) for i, v in enumerate(box)]


@dataclass(frozen=True)
class BoxFrame:
    """The frame one image's hints and answers are written in: its kind and ``size``, the ``(W', H')``
    that coordinates scale to (the resized model input, or ``(1000, 1000)``)."""

    kind: str  # MODEL_PIXELS or RELATIVE_1000
    size: tuple[int, int]

    def __post_init__(self) -> None:
        if self.kind not in FRAME_KINDS:
            raise ValueError(f"unknown box frame {self.kind!r}; choose one of {FRAME_KINDS}")

    def encode(self, box: Box, original: tuple[int, int]) -> list[int]:
        """``box`` in original pixels of an image of size ``original`` -> integer frame coordinates."""
        if self.kind == MODEL_PIXELS:
            return to_model_frame(box, original, self.size)
        return to_relative_frame(box, original)

    def decode(self, box: Box, original: tuple[int, int]) -> list[float]:
        """Frame coordinates -> original pixels (a plain rescale for both kinds, no clamping)."""
        return to_original_frame(box, self.size, original)


def box_frame(
    kind: str, width: int, height: int, *, factor: int = PATCH_FACTOR, min_pixels: int = TRAIN_MIN_PIXELS,
    max_pixels: int = TRAIN_MAX_PIXELS,
) -> BoxFrame:  # fmt: skip
    """The :class:`BoxFrame` of kind ``kind`` for a ``width x height`` image fed at these pixel limits."""
    if kind == MODEL_PIXELS:
        return BoxFrame(kind, model_frame_size(width, height, min_pixels, max_pixels, factor))
    return BoxFrame(kind, (RELATIVE_SCALE, RELATIVE_SCALE))


def xywh_to_xyxy(box: Box) -> list[float]:
    x, y, w, h = box
    return [x, y, x + w, y + h]


def xyxy_to_xywh(box: Box) -> list[float]:
    x0, y0, x1, y1 = box
    return [x0, y0, x1 - x0, y1 - y0]
