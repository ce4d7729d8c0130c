"""Grounding DINO through transformers (the default backend): ``GroundingDinoForObjectDetection``
and its ``AutoProcessor``, from a hub id such as ``IDEA-Research/grounding-dino-base`` or a local
folder. Runs on CPU or GPU; a batch holds several (image, prompt) pairs, text padded to the longest.
"""

from __future__ import annotations

import os

from PIL import Image

from rexthinker.detect.base import Detections, Detector

DEFAULT_MODEL = "IDEA-Research/grounding-dino-base"


class TransformersGroundingDino(Detector):
    def __init__(
        self, model: str | os.PathLike = DEFAULT_MODEL, device: str = "cpu", batch_size: int = 8, dtype: str = "float32"
    ):
        import torch
        from transformers import AutoProcessor, GroundingDinoForObjectDetection

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name = str(model)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.processor = AutoProcessor.from_pretrained(str(model))
        self.model = GroundingDinoForObjectDetection.from_pretrained(str(model), dtype=getattr(torch, dtype))
        self.model.to(self.device).eval()

    def _forward(
        self, images: list[Image.Image], captions: list[str], box_threshold: float, text_threshold: float
    ) -> list[Detections]:
        import torch

        inputs = self.processor(images=images, text=captions, padding=True, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        outputs.logits = outputs.logits.float()
        outputs.pred_boxes = outputs.pred_boxes.float()
        results = self.processor.post_process_grounded_object_detection(
            outputs,
            inputs["input_ids"],
            threshold=box_threshold,
            text_threshold=text_threshold,
            target_sizes=[(image.height, image.width) for image in images],
        )
        return [
            Detections(r["boxes"].cpu().tolist(), r["scores"].cpu().tolist(), list(r["text_labels"])) for r in results
        ]
