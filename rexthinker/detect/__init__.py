"""Open-vocabulary detectors that propose the candidate boxes (box hints) of a new domain.

``boxes = detector.detect(image, category, box_threshold=0.25, text_threshold=0.25)`` (see
:mod:`rexthinker.detect.base`). Backends are listed explicitly in ``BACKENDS``:

- ``transformers``: Grounding DINO through transformers (default; hub id or local folder);
- ``groundingdino-py``: the original weights through the optional ``groundingdino-py`` package.

A :class:`DetectorSpec` is a small picklable description, so that each worker process of a data
tool builds its own detector once (:func:`load_detector`).
"""

from __future__ import annotations

from dataclasses import dataclass

from rexthinker.detect.base import BOX_THRESHOLD, TEXT_THRESHOLD, Detections, Detector, caption, select

BACKENDS = ("transformers", "groundingdino-py")


@dataclass(frozen=True)
class DetectorSpec:
    """How to build a detector and how to select its boxes.

    ``model`` is a hub id or folder (transformers) or the ``.pth`` checkpoint (groundingdino-py,
    which also needs ``config``, the package's ``GroundingDINO_SwinT_OGC.py``-style file, and may
    take ``text_encoder``, a BERT folder used instead of ``bert-base-uncased``)."""

    backend: str = "transformers"
    model: str = "IDEA-Research/grounding-dino-base"
    device: str = "cpu"
    batch_size: int = 8
    box_threshold: float = BOX_THRESHOLD
    text_threshold: float = TEXT_THRESHOLD
    nms_iou: float | None = None
    top_k: int | None = None
    config: str | None = None
    text_encoder: str | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown detector backend {self.backend!r}; choose one of {BACKENDS}")
        if self.backend == "groundingdino-py" and not self.config:
            raise ValueError("the groundingdino-py backend needs the model config file (config=...)")
        if self.nms_iou is not None and not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1], got {self.nms_iou}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")


def load_detector(spec: DetectorSpec) -> Detector:
    """Build the backend a spec names (loads weights; call once per process)."""
    if spec.backend == "transformers":
        from rexthinker.detect.hf import TransformersGroundingDino

        return TransformersGroundingDino(spec.model, spec.device, spec.batch_size, spec.dtype)
    from rexthinker.detect.gdpy import GroundingDinoPy

    return GroundingDinoPy(spec.config, spec.model, spec.device, spec.batch_size, spec.text_encoder)


def detector_by_name(name: str) -> Detector:
    """What ``--detector NAME`` of the inference and web-demo scripts loads: ``tiny`` (the locally
    built tiny Grounding DINO) or a hub id / folder, on CUDA when there is one."""
    import torch

    from rexthinker.detect import tiny

    model = str(tiny.get()) if name == "tiny" else name
    return load_detector(DetectorSpec(model=model, device="cuda" if torch.cuda.is_available() else "cpu"))


def run_detector(detector: Detector, spec: DetectorSpec, images, categories) -> list[Detections]:
    """``detector.detect_batch`` with the thresholds, NMS and top-k of ``spec``."""
    return detector.detect_batch(images, categories, spec.box_threshold, spec.text_threshold, spec.nms_iou, spec.top_k)


__all__ = [
    "BACKENDS", "BOX_THRESHOLD", "TEXT_THRESHOLD", "Detections", "Detector", "DetectorSpec", "caption",
    "load_detector", "run_detector", "select",
]  # fmt: skip
