"""The one in-memory sample every stage of the pipeline passes around."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from PIL import Image


@dataclass
class RefSample:
    """One referring question over one image.

    Boxes are ``[x0, y0, x1, y1]`` corners. They are in original image pixels unless ``box_frame``
    names another ``(width, height)`` frame: a GRPO parquet row, for instance, stores its boxes in
    the model-input frame and its reader says so here, so no lossy round trip through the original
    frame ever happens.
    """

    id: str
    image_name: str
    referring: str
    candidate_boxes: list[list[float]]
    answer_boxes: list[list[float]]
    category: str = "person"
    domain: str = ""
    sub_domain: str = ""
    think: str | None = None
    image_bytes: bytes | None = None  # the encoded image (PNG/JPEG), decoded on demand
    image_size: tuple[int, int] | None = None  # (width, height) of the original image
    box_frame: tuple[int, int] | None = None  # (width, height) the boxes are in; None = original
    extra: dict[str, Any] = field(default_factory=dict)  # keys a reader met but does not model

    @property
    def is_rejection(self) -> bool:
        return not self.answer_boxes

    @property
    def answer_indices(self) -> list[int]:
        """0-based indices of the answer boxes among the candidates ("Person k" is index k-1)."""
        return [i for i, box in enumerate(self.candidate_boxes) if list(box) in map(list, self.answer_boxes)]

    def load_image(self) -> Image.Image:
        if self.image_bytes is None:
            raise ValueError(f"sample {self.id!r} carries no image bytes (image_name={self.image_name!r})")
        image = Image.open(io.BytesIO(self.image_bytes))
        image.load()
        return image.convert("RGB")


def check_original_frame(sample: RefSample, modelled: tuple[str, ...], format_name: str) -> None:
    """Refuse a sample a writer of original-pixel rows cannot write faithfully: boxes in another
    frame, or ``extra`` keys that would overwrite the format's own fields."""
    if sample.box_frame is not None:
        raise ValueError(f"sample {sample.id!r}: {format_name} rows hold original pixels, but boxes are in frame {sample.box_frame}")
    clash = sorted(set(sample.extra) & set(modelled))
    if clash:
        raise ValueError(f"sample {sample.id!r}: extra keys {clash} clash with {format_name} fields")


def encode_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
