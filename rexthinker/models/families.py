"""Model families: what differs between Qwen2.5-VL, Qwen3-VL and Qwen3.5, in one adapter each.

Code that depends on the family (the prompt builder's box frame, the processor's pixel limits, the
learner's freeze settings, the tiny builds) asks the :class:`Family` of its checkpoint instead of
branching on a model name. A checkpoint folder's family is found from its ``config.json``
``model_type`` (:func:`family_of`); an unknown type fails loudly. :func:`model_family` is the one
place that decides which family (hence which box frame) a model is prompted in: every path that
prompts a checkpoint (training, evaluation, inference) asks it. Checkpoints this project writes
record their frame in ``FRAME_FILE`` (:func:`record_frame`), and :func:`model_family` refuses a
frame that disagrees with the recorded one, so a model is never scored in a frame it was not
trained in.

The values are taken from the installed transformers sources (``models/<family>/configuration_*.py``
and the ``Qwen2VLImageProcessor`` every family uses: resize factor = ``patch_size * merge_size``) and
from each family's grounding convention (see :mod:`rexthinker.coords`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rexthinker.coords import FRAME_KINDS, MODEL_PIXELS, RELATIVE_1000, BoxFrame, box_frame

# The reference pixel limits (contracts §1.6), as image-token counts so they carry over to families
# with another patch factor: 16..1280 tokens for training and the demo, at least 256 for HumanRef.
TRAIN_MIN_TOKENS = 16
TRAIN_MAX_TOKENS = 1280
EVAL_MIN_TOKENS = 256


@dataclass(frozen=True)
class Family:
    """One model family: its classes, image geometry, box frame and learner quirks."""

    name: str
    model_type: str  # config.json ``model_type``
    model_class: str  # transformers class of the checkpoint
    processor_class: str  # transformers processor class
    patch_size: int  # vision patch side in pixels
    merge_size: int  # spatial merge: one image token per merge_size x merge_size patches
    frame: str  # coords.MODEL_PIXELS or coords.RELATIVE_1000: what hint and answer coordinates mean
    projector_prefixes: tuple[str, ...]  # ``model.visual`` submodules that form the projector (freezing)
    mrope_interleaved: bool  # T/H/W rotary sections interleaved; vLLM reads it from rope_parameters
    hybrid: bool  # linear-attention (Gated DeltaNet) layers between full-attention ones: vLLM caches no prefixes on CPU
    vllm_cpu_dtype: str | None  # the one dtype vLLM's CPU backend runs the family in ("auto" becomes it there); None: any

    def __post_init__(self) -> None:
        if self.frame not in FRAME_KINDS:
            raise ValueError(f"family {self.name}: unknown frame {self.frame!r}; choose one of {FRAME_KINDS}")

    @property
    def factor(self) -> int:
        """Side of the pixel square one image token covers: ``smart_resize`` rounds to multiples of it."""
        return self.patch_size * self.merge_size

    def pixels(self, tokens: int) -> int:
        """The pixel limit that corresponds to ``tokens`` image tokens."""
        return tokens * self.factor**2

    @property
    def train_pixels(self) -> tuple[int, int]:
        """``(min_pixels, max_pixels)`` for training and the demo."""
        return self.pixels(TRAIN_MIN_TOKENS), self.pixels(TRAIN_MAX_TOKENS)

    @property
    def eval_min_pixels(self) -> int:
        return self.pixels(EVAL_MIN_TOKENS)

    def box_frame(self, width: int, height: int, min_pixels: int, max_pixels: int) -> BoxFrame:
        """The frame hints and answers are written in for a ``width x height`` image at these limits."""
        return box_frame(self.frame, width, height, factor=self.factor, min_pixels=min_pixels, max_pixels=max_pixels)


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add ``family`` to the registry; a name or ``model_type`` already there is refused."""
    if family.name in FAMILIES:
        raise ValueError(f"model family {family.name!r} is already registered")
    if any(f.model_type == family.model_type for f in FAMILIES.values()):
        raise ValueError(f"model_type {family.model_type!r} is already claimed by another family")
    FAMILIES[family.name] = family
    return family


QWEN2_5_VL = register(Family(
    name="qwen2_5_vl", model_type="qwen2_5_vl", model_class="Qwen2_5_VLForConditionalGeneration",
    processor_class="Qwen2_5_VLProcessor", patch_size=14, merge_size=2, frame=MODEL_PIXELS,
    projector_prefixes=("merger.",), mrope_interleaved=False, hybrid=False, vllm_cpu_dtype=None,
))  # fmt: skip
QWEN3_VL = register(Family(
    name="qwen3_vl", model_type="qwen3_vl", model_class="Qwen3VLForConditionalGeneration",
    processor_class="Qwen3VLProcessor", patch_size=16, merge_size=2, frame=RELATIVE_1000,
    projector_prefixes=("merger.", "deepstack_merger_list."), mrope_interleaved=True, hybrid=False, vllm_cpu_dtype=None,
))  # fmt: skip
QWEN3_5 = register(Family(
    name="qwen3_5", model_type="qwen3_5", model_class="Qwen3_5ForConditionalGeneration",
    processor_class="Qwen3VLProcessor", patch_size=16, merge_size=2, frame=RELATIVE_1000,
    projector_prefixes=("merger.",), mrope_interleaved=True, hybrid=True,
    vllm_cpu_dtype="bfloat16",  # vLLM 0.32: "CPU GDN attention requires BF16" (tests/models/test_tiny_families.py)
))  # fmt: skip


def get_family(name: str) -> Family:
    """The registered family called ``name``."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; choose one of {sorted(FAMILIES)}") from None


def family_for_model_type(model_type: str) -> Family:
    """The family whose checkpoints have this ``config.json`` ``model_type``."""
    for family in FAMILIES.values():
        if family.model_type == model_type:
            return family
    known = sorted(f.model_type for f in FAMILIES.values())
    raise KeyError(f"no model family for model_type {model_type!r}; supported: {known}")


FRAME_FILE = "box_frame.json"  # in a checkpoint folder: {"family": name, "frame": kind}


class FrameMismatchError(ValueError):
    """A checkpoint folder records another box frame than the one it is asked to be used in."""


def family_of(checkpoint: str | Path) -> Family:
    """The family of the Hugging Face checkpoint folder ``checkpoint``, from its ``config.json``."""
    config = Path(checkpoint) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{checkpoint}: no config.json, not a Hugging Face checkpoint folder")
    model_type = json.loads(config.read_text()).get("model_type")
    if not model_type:
        raise KeyError(f"{config} has no model_type")
    return family_for_model_type(model_type)


def record_frame(folder: str | Path, family: Family) -> None:
    """Write ``folder/FRAME_FILE``: the box frame the checkpoint there reads hints and writes answers in."""
    record = {"family": family.name, "frame": family.frame}
    (Path(folder) / FRAME_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def model_family(model: str | Path, name: str | None = None) -> Family:
    """The family ``model`` (a checkpoint folder or a hub id) is prompted in: the family called ``name``,
    or the checkpoint's own (its config's ``model_type``). A folder that records its frame
    (:func:`record_frame`) must record this family's: another raises :class:`FrameMismatchError`."""
    if Path(model).is_dir():
        own = family_of(model)
    else:
        from transformers import AutoConfig

        own = family_for_model_type(AutoConfig.from_pretrained(str(model)).model_type)
    family = get_family(name) if name else own
    record = Path(model) / FRAME_FILE
    if record.is_file():
        recorded = json.loads(record.read_text(encoding="utf-8")).get("frame")
        if recorded != family.frame:
            raise FrameMismatchError(
                f"{model} records box frame {recorded!r} ({FRAME_FILE}), but it is asked to use {family.frame!r} "
                f"(family {family.name}): its hints and answers would be read in the wrong coordinates"
            )
    return family
