"""The detector interface every backend implements, and the box selection they share.

A detector answers ``boxes = detector.detect(image, category, box_threshold, text_threshold)``: the
``[x0, y0, x1, y1]`` boxes (original pixels) of every object of ``category`` it finds. The defaults
are the reference's (box 0.25, text 0.25, no NMS, no top-k). ``detect_batch`` does the same for
many (image, category) pairs at once, ``batch_size`` per forward pass, and also returns scores and
the matched phrase of each box. A batch is padded to its largest image, which can move boxes
slightly compared with one image at a time (as in any DETR-style batch); pairs are grouped by
aspect ratio and size first, so padding stays small and the grouping is deterministic.

What the thresholds mean (as in Grounding DINO's own inference code): a query is kept when its best
token probability exceeds ``box_threshold``; ``text_threshold`` only decides which prompt tokens form
the box's label phrase, it never removes a box. Boxes come out in the model's query order, clipped
to the image; a box that is empty after clipping is dropped. NMS (``nms_iou``) and top-k (``top_k``,
the k best scores, kept in query order) are off unless asked for.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image

BOX_THRESHOLD = 0.25
TEXT_THRESHOLD = 0.25


@dataclass
class Detections:
    """What a detector found in one image: parallel lists, in query order."""

    boxes: list[list[float]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.boxes)


def caption(category: str) -> str:
    """The text prompt for one category, as Grounding DINO expects it: lower case, ending in '.'."""
    text = " ".join(category.lower().split())
    if not text:
        raise ValueError("a detector prompt needs a non-empty category")
    return text if text.endswith(".") else text + "."


def select(
    found: Detections, size: tuple[int, int], nms_iou: float | None = None, top_k: int | None = None
) -> Detections:
    """Clip boxes to the ``(width, height)`` image, drop empty ones, then apply NMS and top-k."""
    width, height = size
    keep = []
    boxes = []
    for k, box in enumerate(found.boxes):
        x0, y0 = min(max(float(box[0]), 0.0), width), min(max(float(box[1]), 0.0), height)
        x1, y1 = min(max(float(box[2]), 0.0), width), min(max(float(box[3]), 0.0), height)
        if x1 > x0 and y1 > y0:
            keep.append(k)
            boxes.append([x0, y0, x1, y1])
    scores = [found.scores[k] for k in keep]
    labels = [found.labels[k] for k in keep]
    order = list(range(len(boxes)))
    if nms_iou is not None and boxes:
        import torch
        from torchvision.ops import nms

        kept = nms(torch.tensor(boxes, dtype=torch.float64), torch.tensor(scores, dtype=torch.float64), nms_iou)
        order = sorted(int(i) for i in kept)
    if top_k is not None:
        best = sorted(order, key=lambda i: (-scores[i], i))[: max(0, top_k)]
        order = sorted(best)
    return Detections([boxes[i] for i in order], [scores[i] for i in order], [labels[i] for i in order])


class Detector(ABC):
    """An open-vocabulary detector. Subclasses implement :meth:`_forward` for one batch."""

    batch_size: int = 8

    def detect(
        self,
        image: Image.Image,
        category: str,
        box_threshold: float = BOX_THRESHOLD,
        text_threshold: float = TEXT_THRESHOLD,
        nms_iou: float | None = None,
        top_k: int | None = None,
    ) -> list[list[float]]:
        """Boxes of ``category`` in ``image`` (original pixels, query order)."""
        return self.detect_batch([image], [category], box_threshold, text_threshold, nms_iou, top_k)[0].boxes

    def detect_batch(
        self,
        images: Sequence[Image.Image],
        categories: Sequence[str],
        box_threshold: float = BOX_THRESHOLD,
        text_threshold: float = TEXT_THRESHOLD,
        nms_iou: float | None = None,
        top_k: int | None = None,
    ) -> list[Detections]:
        """One :class:`Detections` per (image, category) pair, ``batch_size`` pairs per forward pass."""
        if len(images) != len(categories):
            raise ValueError(f"got {len(images)} images but {len(categories)} categories")
        if not 0.0 <= box_threshold <= 1.0 or not 0.0 <= text_threshold <= 1.0:
            raise ValueError(f"thresholds must be in [0, 1], got box {box_threshold}, text {text_threshold}")
        images = [image.convert("RGB") if image.mode != "RGB" else image for image in images]
        captions = [caption(c) for c in categories]
        # Batches are padded to their largest image; grouping similar sizes keeps padding small.
        order = sorted(range(len(images)), key=lambda i: (images[i].height / images[i].width, images[i].size, i))
        found: list[Detections | None] = [None] * len(images)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            results = self._forward(
                [images[i] for i in batch], [captions[i] for i in batch], box_threshold, text_threshold
            )
            for i, result in zip(batch, results):
                found[i] = result
        return [select(d, image.size, nms_iou, top_k) for d, image in zip(found, images)]

    @abstractmethod
    def _forward(
        self, images: list[Image.Image], captions: list[str], box_threshold: float, text_threshold: float
    ) -> list[Detections]:
        """Raw detections (boxes in original pixels, possibly outside the image) for one batch."""
