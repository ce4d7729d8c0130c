"""Grounding DINO through the ``groundingdino-py`` package (optional backend), for users who hold the
original weights (``groundingdino_swint_ogc.pth``) and the package's config file
(``GroundingDINO_SwinT_OGC.py``).

The package is not a dependency of this project: ``pip install groundingdino-py`` (it brings timm,
opencv, pycocotools and supervision). It runs here on CPU or GPU without its compiled extension
(multi-scale deformable attention falls back to PyTorch). On transformers 5 it needs the shim in
:mod:`rexthinker.detect.gdpy_compat`, applied before the model is built.

Preprocessing is the package's inference recipe: resize so the short side is 800 pixels unless the
long side would pass 1333, then ImageNet normalisation; a batch is padded and masked by the model.
The text encoder is loaded from ``text_encoder`` (default ``bert-base-uncased``, or a local folder).
"""

from __future__ import annotations

import os

from PIL import Image

from rexthinker.detect.base import Detections, Detector

SHORT_SIDE = 800
LONG_SIDE_MAX = 1333
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def resized_size(width: int, height: int, short: int = SHORT_SIDE, long_max: int = LONG_SIDE_MAX) -> tuple[int, int]:
    """``(width, height)`` after the package's resize rule: short side ``short``, long side at most
    ``long_max`` (the short side shrinks instead)."""
    lo, hi = min(width, height), max(width, height)
    if hi / lo * short > long_max:
        short = int(round(long_max * lo / hi))
    if width < height:
        return short, int(short * height / width)
    return int(short * width / height), short


class GroundingDinoPy(Detector):
    def __init__(
        self,
        config: str | os.PathLike,
        checkpoint: str | os.PathLike,
        device: str = "cpu",
        batch_size: int = 4,
        text_encoder: str | None = None,
    ):
        try:
            import groundingdino  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "the groundingdino-py backend needs the groundingdino-py package: pip install groundingdino-py"
            ) from exc
        import torch
        from groundingdino.models import build_model
        from groundingdino.util.misc import clean_state_dict
        from groundingdino.util.slconfig import SLConfig

        from rexthinker.detect import gdpy_compat

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        gdpy_compat.install()
        args = SLConfig.fromfile(str(config))
        args.device = device
        if text_encoder is not None:
            args.text_encoder_type = text_encoder
        model = build_model(args)
        state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(clean_state_dict(state.get("model", state)), strict=False)
        # The released checkpoint omits BERT's position_ids buffer and nothing else.
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing:
            raise ValueError(f"{checkpoint}: {len(missing)} weights missing, e.g. {missing[:3]}")
        self.unexpected_keys = list(unexpected)
        self.name = str(checkpoint)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.model = model.to(self.device).eval()

    def _tensor(self, image: Image.Image):
        import torchvision.transforms.functional as F

        width, height = resized_size(*image.size)
        tensor = F.to_tensor(image.resize((width, height), Image.BILINEAR))
        return F.normalize(tensor, MEAN, STD)

    def _forward(
        self, images: list[Image.Image], captions: list[str], box_threshold: float, text_threshold: float
    ) -> list[Detections]:
        import torch
        from groundingdino.util.misc import nested_tensor_from_tensor_list
        from groundingdino.util.utils import get_phrases_from_posmap

        batch = nested_tensor_from_tensor_list([self._tensor(image).to(self.device) for image in images])
        with torch.inference_mode():
            outputs = self.model(batch, captions=captions)
        probs = outputs["pred_logits"].float().sigmoid().cpu()  # (batch, queries, 256)
        centers = outputs["pred_boxes"].float().cpu()  # (batch, queries, 4) cx, cy, w, h in [0, 1]
        tokenizer = self.model.tokenizer
        found = []
        for prob, boxes, image, text in zip(probs, centers, images, captions):
            scores = prob.max(dim=1).values
            keep = scores > box_threshold
            tokens = tokenizer(text)
            width, height = image.size
            det = Detections()
            for p, (cx, cy, w, h), score in zip(prob[keep], boxes[keep].tolist(), scores[keep].tolist()):
                det.boxes.append(
                    [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
                )
                det.scores.append(score)
                det.labels.append(get_phrases_from_posmap(p > text_threshold, tokens, tokenizer).replace(".", ""))
            found.append(det)
        return found
