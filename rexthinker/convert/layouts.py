"""Which kind of checkpoint a path holds, where its config and processor are, and how to read its weights.

| layout      | what the path holds                                         | config + processor from |
|-------------|-------------------------------------------------------------|-------------------------|
| `hf`        | a Hugging Face folder (`step-N/hf`, `final`, a release)     | the folder itself       |
| `learner`   | our single-process `learner/learner.pt` {"model", ...}      | `step-N/hf`             |
| `deepspeed` | our DeepSpeed ZeRO-2/3 states (`learner/` with `latest`)    | `step-N/hf`             |
| `reference` | `model_world_size_{W}_rank_{r}.pt` + `huggingface/`         | `huggingface/`          |
| `adapter`   | a peft LoRA adapter (`step-N/adapter`), merged into its base | the base model folder   |

A ``step-N`` folder of ours holds both an ``hf/`` export and the learner states; it converts the
``hf/`` export unless a layout is asked for (``--layout learner`` or ``deepspeed`` takes the
learner's full-precision weights instead, which differ from ``hf/`` when training ran in bf16).
A LoRA run's ``hf/`` is already the merged model; its learner states hold the adapters alone, so
``--layout adapter`` merges ``adapter/`` into the base named in ``adapter_config.json`` (or
``--hf-files``) instead.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rexthinker.convert.keys import ConversionError, layout_rules, rename_all
from rexthinker.convert.reference import RANK_FILE, merge
from rexthinker.models import lora
from rexthinker.models.families import Family, family_of
from rexthinker.train.checkpoint import UnsafeCheckpointError, check_pickles

LAYOUTS = ("hf", "learner", "deepspeed", "reference", "adapter")


@dataclass
class Source:
    layout: str
    path: Path  # the weights: a folder (hf, deepspeed, reference) or learner.pt
    hf_files: Path  # config.json, generation config and processor files
    notes: list[str] = field(default_factory=list)
    trust_pickle: bool = False  # let DeepSpeed unpickle its files unchecked (see checkpoint.check_pickles)

    @property
    def family(self) -> Family:
        """The model family of the checkpoint (``hf_files``' config), whose rules rename its tensors."""
        return family_of(self.hf_files)


def _has_rank_files(folder: Path) -> bool:
    return folder.is_dir() and any(RANK_FILE.match(p.name) for p in folder.iterdir())


def _is_hf(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def _is_deepspeed(folder: Path) -> bool:
    return folder.is_dir() and ((folder / "latest").is_file() or any(folder.glob("*_model_states.pt")))


def detect(path: Path) -> str:
    path = Path(path)
    if path.is_file() and path.suffix == ".pt":
        return "learner"
    if not path.is_dir():
        raise ConversionError(f"{path}: no such checkpoint folder")
    if _has_rank_files(path):
        return "reference"
    if (path / "adapter_config.json").is_file():
        return "adapter"
    if (path / "learner.pt").is_file():
        return "learner"
    if _is_deepspeed(path):
        return "deepspeed"
    if _is_hf(path) or _is_hf(path / "hf"):
        return "hf"
    raise ConversionError(
        f"{path}: not a checkpoint this converter knows. Expected a Hugging Face folder (config.json + "
        "*.safetensors), a step-N folder, learner/learner.pt, a DeepSpeed folder (latest, *_model_states.pt) "
        "or the reference trainer's model_world_size_<W>_rank_<r>.pt files"
    )


def resolve(path: Path, layout: str | None = None, hf_files: Path | None = None) -> Source:
    """Where the weights and the config/processor files of ``path`` are, for ``layout`` (detected when None)."""
    path = Path(path).resolve()
    layout = layout or detect(path)
    if layout not in LAYOUTS:
        raise ConversionError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    step_dir = path if (path / "learner").is_dir() and (path / "hf").is_dir() else None
    if layout == "hf":
        weights = path / "hf" if step_dir else path
        near = [weights]
    elif layout == "learner":
        weights = path if path.is_file() else (step_dir / "learner" if step_dir else path) / "learner.pt"
        near = [weights.parent.parent / "hf"]
    elif layout == "deepspeed":
        weights = step_dir / "learner" if step_dir else path
        near = [weights.parent / "hf", weights.parent.parent / "hf"]
    elif layout == "adapter":  # the base model, never a step's hf/ (that one has the adapters merged already)
        weights = step_dir / "adapter" if step_dir else path
        spec = weights / "adapter_config.json"
        base = json.loads(spec.read_text()).get("base_model_name_or_path") if spec.is_file() else None
        near = [Path(base) if base else weights]
    else:
        weights = path
        near = [path / "huggingface"]
    if not weights.exists():
        raise ConversionError(f"{path}: no {layout} weights at {weights}")
    if hf_files is None:
        found = [p for p in near if (p / "config.json").is_file()]
        if not found:
            raise ConversionError(
                f"{weights}: the {layout} layout keeps config.json and the processor in {near[0]}, which has none; "
                "pass --hf-files with a folder that has them (e.g. the model the run started from)"
            )
        hf_files = found[0]
    elif not (Path(hf_files) / "config.json").is_file():
        raise ConversionError(f"--hf-files {hf_files}: no config.json there")
    return Source(layout, weights, Path(hf_files).resolve())


# --- readers: each returns tensors under model names and the file name of each -------------------
def read_hf(source: Source, shapes) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    files = sorted(source.path.glob("*.safetensors"))
    index = source.path / "model.safetensors.index.json"
    if index.is_file():
        listed = sorted({source.path / f for f in json.loads(index.read_text())["weight_map"].values()})
        if listed != files:
            raise ConversionError(f"{index}: lists {[p.name for p in listed]} but the folder has {[p.name for p in files]}")
    raw = {}
    for file in files:
        for name, tensor in load_file(str(file)).items():
            if name in raw:
                raise ConversionError(f"{source.path}: {name!r} is stored twice")
            raw[name] = tensor
    return _renamed(raw, source)


def read_learner(source: Source, shapes) -> tuple[dict, dict]:
    state = torch.load(source.path, map_location="cpu", mmap=True, weights_only=True)
    if not isinstance(state, dict) or "model" not in state:
        raise ConversionError(f"{source.path}: expected a dict with a 'model' state dict (Learner.save_state)")
    if lora.adapter_state(state["model"]):
        raise ConversionError(f"{source.path} holds LoRA adapters only (the base stays frozen): convert the step folder "
                              "(its hf/ is the merged model), or its adapter/ with --layout adapter")  # fmt: skip
    return _renamed(state["model"], source)


def read_deepspeed(source: Source, shapes) -> tuple[dict, dict]:
    """Full fp32 weights from the ZeRO-2/3 shards: trainable parameters from the optimizer's fp32
    partitions, frozen ones from the model-state files, tied ones restored (DeepSpeed's own helper)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    folder, tag = source.path, None
    if any(folder.glob("*_model_states.pt")):  # the tag folder itself
        folder, tag = folder.parent, folder.name
    if tag is None and not (folder / "latest").is_file():
        raise ConversionError(f"{folder}: a DeepSpeed folder needs a 'latest' file or *_model_states.pt files")
    tag_dir = folder / (tag or (folder / "latest").read_text().strip())
    stage = 3 if any(tag_dir.glob("zero_pp_rank_*_model_states.pt")) else 2
    ranks = len(list(tag_dir.glob("*_optim_states.pt")))
    try:
        check_pickles(tag_dir, trust=source.trust_pickle)  # DeepSpeed's loader unpickles in full
    except UnsafeCheckpointError as exc:
        raise ConversionError(str(exc)) from exc
    with contextlib.redirect_stdout(io.StringIO()):  # the helper prints its progress
        state = get_fp32_state_dict_from_zero_checkpoint(str(folder), tag=tag)
    source.notes.append(f"DeepSpeed ZeRO-{stage} states of {ranks} ranks, rebuilt as full fp32 master weights")
    return _renamed(dict(state), source)


def read_reference(source: Source, shapes) -> tuple[dict, dict]:
    merged, names, counts = merge(source.path, shapes, layout_rules(source.family, "reference"))
    source.notes.append("reference rank files: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return merged, names


def read_adapter(source: Source, shapes) -> tuple[dict, dict]:
    """The base model's weights (``hf_files``) with the LoRA adapter merged: ``W + alpha / r * B @ A``."""
    tensors, names = read_hf(Source("hf", source.hf_files, source.hf_files), shapes)
    try:
        adapters, scale = lora.read_adapter(source.path)
        merged = lora.merge(tensors, adapters, scale)
    except (KeyError, ValueError) as exc:
        raise ConversionError(f"{source.path}: {exc}") from None
    source.notes.append(f"LoRA adapter of {len(adapters)} modules (scale {scale:g}) merged into the base {source.hf_files}")
    return merged, names


def _renamed(raw: dict, source: Source) -> tuple[dict, dict]:
    """``raw`` under model names (the rules of the source's family and layout), and the file name of each."""
    mapping = rename_all(raw.keys(), layout_rules(source.family, source.layout), str(source.path))
    return {mapping[k]: v for k, v in raw.items()}, {v: k for k, v in mapping.items()}


READERS = {"hf": read_hf, "learner": read_learner, "deepspeed": read_deepspeed, "reference": read_reference, "adapter": read_adapter}
