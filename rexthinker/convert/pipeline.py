"""convert(): read -> check names and shapes -> settle the dtype -> write -> verify -> model card.

The output is written into a hidden ``.<name>.partial`` folder beside the target and renamed into
place only after every check passed, so a failed conversion never leaves a plausible-looking model.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rexthinker.convert import card
from rexthinker.convert.keys import ConversionError, Skeleton
from rexthinker.convert.layouts import READERS, resolve
from rexthinker.convert.verify import check_files, check_vllm, compare_tensors, logits, probe_inputs, tolerance
from rexthinker.models import lora
from rexthinker.models.families import model_family, record_frame

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ConversionReport:
    source: str
    layout: str
    out: str
    tensors: int
    parameters: int
    dtype_source: str
    dtype_out: str
    num_shards: int
    max_logit_diff: float
    tolerance: float
    tolerance_note: str
    probe_positions: int
    argmax_agreement: float
    vllm: str | None = None
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        kept = "kept" if self.dtype_source == self.dtype_out else "cast by --dtype"
        lines = [
            f"source   {self.source} ({self.layout} layout)",
            f"output   {self.out}: {self.num_shards} safetensors file(s), {self.tensors} tensors, {self.parameters:,} parameters",
            f"dtype    {self.dtype_source} -> {self.dtype_out} ({kept})",
            "tensors  every tensor present, no extra one; from_pretrained returns each one bit for bit"
            + ("" if self.dtype_source == self.dtype_out else f" (equal to the source cast to {self.dtype_out})"),
            f"logits   max |diff| {self.max_logit_diff:.3g} over {self.probe_positions} probe positions "
            f"(tolerance {self.tolerance:.3g}, {self.tolerance_note}); argmax agrees at {self.argmax_agreement:.1%}",
        ]
        if self.vllm is not None:
            lines.append(f"vllm     loads; {self.vllm}")
        lines += [f"note     {n}" for n in self.notes]
        return "\n".join(lines)


def settle_dtype(state: dict[str, torch.Tensor]) -> tuple[torch.dtype, str | None]:
    """The source's floating dtype; a mix (e.g. fp32 masters + bf16 frozen tensors) widens losslessly."""
    counts: dict[torch.dtype, int] = {}
    for tensor in {id(t): t for t in state.values()}.values():
        if tensor.is_floating_point():
            counts[tensor.dtype] = counts.get(tensor.dtype, 0) + 1
    unknown = [d for d in counts if d not in DTYPES.values()]
    if unknown:
        raise ConversionError(f"tensors of dtype {unknown} cannot be written; pass --dtype")
    if len(counts) == 1:
        return next(iter(counts)), None
    widest = torch.float32  # bf16 and fp16 each lose what the other keeps, so any mix widens to fp32
    mix = ", ".join(f"{n} {str(d).removeprefix('torch.')}" for d, n in counts.items())
    return widest, f"source mixes dtypes ({mix}); all widened to {str(widest).removeprefix('torch.')} (lossless); --dtype picks another"


def instantiate(config, state: dict[str, torch.Tensor], dtype: torch.dtype):
    """The model with exactly these tensors (no random init, no copy), tied weights re-tied."""
    from transformers import AutoModelForImageTextToText
    from transformers.initialization import no_init_weights

    with no_init_weights():
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    return model.eval()


def convert(
    source: str | Path,
    out: str | Path,
    *,
    layout: str | None = None,
    dtype: str | None = None,
    max_shard_size: str | int = "5GB",
    hf_files: str | Path | None = None,
    base_model: str | None = None,
    stage: str | None = None,
    vllm: bool = False,
    trust_pickle: bool = False,
) -> ConversionReport:
    out = Path(out).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConversionError(f"{out} already exists; choose a new folder or remove it")
    if dtype is not None and dtype not in DTYPES:
        raise ConversionError(f"--dtype {dtype!r}: choose one of {sorted(DTYPES)}")
    # read
    src = resolve(Path(source), layout, Path(hf_files) if hf_files else None)
    src.trust_pickle = trust_pickle
    config, processor, generation, notes = load_hf_files(src.hf_files)
    family = model_family(src.hf_files)  # a box frame the source records must be its family's
    skeleton = Skeleton(config)
    tensors, names = READERS[src.layout](src, skeleton.shapes)
    state = skeleton.complete(tensors, where=str(src.path), sources=names)
    notes = src.notes + notes
    source_dtype, mixed = settle_dtype(state)
    if mixed:
        notes.append(mixed)
        state = {k: v.to(source_dtype) if v.is_floating_point() else v for k, v in state.items()}
    out_dtype = DTYPES[dtype] if dtype else source_dtype
    # write, verify, describe, then move into place
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        written = Written(config, generation, processor, skeleton, source_dtype, out_dtype)
        diff, tol, tol_note, probe = write_and_verify(written, state, tmp, max_shard_size)
        record_frame(tmp, family)
        stored = {id(state[n]): state[n] for n in skeleton.stored_names}
        report = ConversionReport(
            source=str(src.path), layout=src.layout, out=str(out), tensors=len(skeleton.stored_names),
            parameters=sum(t.numel() for t in stored.values()), dtype_source=_name(source_dtype),
            dtype_out=_name(out_dtype), num_shards=len(list(tmp.glob("*.safetensors"))), max_logit_diff=diff,
            tolerance=tol, tolerance_note=tol_note, probe_positions=probe["positions"],
            argmax_agreement=probe["argmax_agreement"], notes=notes,
        )  # fmt: skip
        if vllm:
            report.vllm = check_vllm(tmp, processor)
        facts = card.gather(src.path, config, src.layout)
        facts.base_model = base_model or facts.base_model
        facts.stage = stage or facts.stage
        (tmp / "README.md").write_text(card.render(out.name, facts, report))
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def export_adapter(source: str | Path, out: str | Path, *, hf_files: str | Path | None = None) -> str:
    """The LoRA adapter of ``source`` (a peft adapter folder or a LoRA run's ``step-N``) alone, in
    peft's format, after checking it: every adapted module exists in the base with matching shapes,
    and peft's own loading of the written adapter onto the base gives the logits of the merged
    weights. Returns a one-line report."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    out = Path(out).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConversionError(f"{out} already exists; choose a new folder or remove it")
    src = resolve(Path(source), "adapter", Path(hf_files) if hf_files else None)
    config, processor, _, _ = load_hf_files(src.hf_files)
    skeleton = Skeleton(config)
    state, _ = READERS["adapter"](src, skeleton.shapes)  # merged: checks every module against the base
    state = skeleton.complete(state, where=str(src.path))
    adapters, _ = lora.read_adapter(src.path)
    for module, ab in adapters.items():
        out_features, in_features = skeleton.shapes[f"{module}.weight"]
        if ab["A"].shape[1] != in_features or ab["B"].shape[0] != out_features or ab["A"].shape[0] != ab["B"].shape[1]:
            raise ConversionError(f"{src.path}: adapter of {module!r} has shapes A {tuple(ab['A'].shape)}, B {tuple(ab['B'].shape)} "
                                  f"for a {out_features} x {in_features} weight")  # fmt: skip
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy2(src.path / name, tmp / name)
        dtype, _ = settle_dtype(state)
        inputs = probe_inputs(processor)
        want = logits(instantiate(config, state, dtype), inputs)
        base = AutoModelForImageTextToText.from_pretrained(src.hf_files, dtype=dtype)
        got = logits(PeftModel.from_pretrained(base, tmp), inputs)
        diff = float((got - want).abs().max())
        tol, note = tolerance(dtype, dtype, want)
        if not diff <= tol:
            raise ConversionError(f"peft's loading of the adapter differs from the merged weights by {diff:.3g} (tolerance {tol:.3g}, {note})")
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return (f"adapter  {out}: {len(adapters)} adapted modules for the base {src.hf_files}; peft loads it onto the base "
            f"with the merged model's logits (max |diff| {diff:.3g})")  # fmt: skip


def load_hf_files(folder: Path):
    """Config, processor (with its chat template) and generation config of ``folder``, and notes."""
    from transformers import AutoConfig, AutoProcessor, GenerationConfig

    config = AutoConfig.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    if not getattr(processor, "chat_template", None):
        raise ConversionError(f"{folder}: the processor has no chat template; pass --hf-files with one that has")
    try:
        return config, processor, GenerationConfig.from_pretrained(folder), []
    except OSError:
        derived = f"{folder} has no generation_config.json; wrote one derived from config.json"
        return config, processor, GenerationConfig.from_model_config(config), [derived]


@dataclass
class Written:
    """What goes into the output folder besides the weights, and the dtypes on both sides."""

    config: object
    generation: object
    processor: object
    skeleton: Skeleton
    source_dtype: torch.dtype
    dtype: torch.dtype


def write_and_verify(w: Written, state: dict[str, torch.Tensor], folder: Path, max_shard_size):
    """Save the source weights as ``w.dtype`` into ``folder`` and check what was written.

    Returns the max |logit diff|, its tolerance and why, and probe facts; raises on any mismatch."""
    from transformers import AutoModelForImageTextToText

    inputs = probe_inputs(w.processor)
    model = instantiate(w.config, state, w.source_dtype)
    source_logits = logits(model, inputs)
    model.generation_config = w.generation
    model.to(w.dtype)
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    del model  # the source tensors stay in ``state`` for the comparison; the cast copy can go
    w.processor.save_pretrained(folder)
    check_files(folder, w.skeleton, w.dtype)
    converted = AutoModelForImageTextToText.from_pretrained(folder, dtype=w.dtype)
    compare_tensors(converted, state, w.dtype)
    out_logits = logits(converted, inputs)
    diff = float((out_logits - source_logits).abs().max())
    tol, tol_note = tolerance(w.source_dtype, w.dtype, source_logits)
    if not diff <= tol:
        raise ConversionError(f"logits of the written model differ from the source by {diff:.3g} (tolerance {tol:.3g}, {tol_note})")
    agreement = float((out_logits.argmax(-1) == source_logits.argmax(-1)).float().mean())
    return diff, tol, tol_note, {"positions": int(source_logits.shape[1]), "argmax_agreement": agreement}


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def push_to_hub(folder: str | Path, repo_id: str, public: bool = False) -> str:
    """Upload a converted folder; the repository is created private unless ``public``."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="model", private=not public, exist_ok=True)
    if not public and api.repo_info(repo_id, repo_type="model").private is False:
        raise ConversionError(f"{repo_id} already exists and is public; pass --public to upload to it anyway")
    api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(folder), commit_message="Upload converted rexthinker checkpoint")
    return f"https://huggingface.co/{repo_id}"
