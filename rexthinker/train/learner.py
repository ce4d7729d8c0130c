"""The learner: one trainable model, its optimizer and schedule, on 1 process, replicated over several
(torch DDP) or sharded by DeepSpeed.

SFT and GRPO both drive it the same way::

    for i, micro in enumerate(micro_batches):
        learner.set_boundary(i == len(micro_batches) - 1)   # before the forward
        loss = loss_fn(learner(**micro), micro)              # already normalised by the caller
        learner.backward(loss)
    stats = learner.step()                                   # clip, update, schedule; grad_norm + lr

The caller normalises the loss over the whole optimizer step (all micro-batches, all ranks), so the
update does not depend on how a batch is split. DeepSpeed's own scaling is switched off for that
(``scale_wrt_gas=False``); DeepSpeed and DDP still average gradients over ranks, which the learner
undoes by multiplying by the world size (:attr:`Learner.grad_scale`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from rexthinker.models import lora
from rexthinker.models.families import family_for_model_type, record_frame
from rexthinker.train import checkpoint, dist

DEEPSPEED_CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "configs" / "deepspeed"


@dataclass
class OptimConfig:
    lr: float = 2e-5
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    scheduler: Literal["cosine", "constant", "linear"] = "cosine"
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.0
    max_grad_norm: float = 1.0


@dataclass
class LearnerConfig:
    # single: one process. ddp: one full copy per process (torch DistributedDataParallel: gradients
    # averaged over processes at every backward, everything else as single), for small models on
    # many CPU cores or GPUs. zero2 / zero3: DeepSpeed, optimizer states (and weights) sharded.
    strategy: Literal["single", "ddp", "zero2", "zero3"] = "single"
    # auto: bf16 on CUDA, fp32 on CPU. bf16: the weights themselves in bf16 (AdamW then rounds away
    # small updates). bf16-mixed: fp32 weights and optimizer, the forward under bf16 autocast (one
    # process only): faster matmuls where the CPU has AMX or AVX-512 BF16, or on a GPU.
    precision: Literal["auto", "bf16", "fp32", "bf16-mixed"] = "auto"
    deepspeed_config: str | None = None  # a DeepSpeed JSON; default recipes/configs/deepspeed/<strategy>.json
    gradient_checkpointing: bool = False


def resolve_precision(precision: str) -> torch.dtype:
    """The dtype the weights are held in."""
    if precision == "auto":
        return dist.compute_dtype()
    return {"bf16": torch.bfloat16, "fp32": torch.float32, "bf16-mixed": torch.float32}[precision]


def lr_lambda(optim: OptimConfig, total_steps: int):
    warmup = math.ceil(optim.warmup_ratio * total_steps) if optim.scheduler != "constant" else 0
    warmup = max(warmup, 0)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if optim.scheduler == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if optim.scheduler == "cosine" else 1.0 - progress
        return optim.min_lr_ratio + (1.0 - optim.min_lr_ratio) * shape

    return factor


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters; no weight decay on biases and norm weights (1-D tensors). An empty group
    is left out (LoRA adapters are all matrices): DeepSpeed's ZeRO optimizers drop it, and the LR
    scheduler, built on the full list, would then no longer match their groups."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameter (check the freeze settings)")
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def deepspeed_config(cfg: LearnerConfig, optim: OptimConfig, micro_batch_size: int) -> dict:
    path = Path(cfg.deepspeed_config) if cfg.deepspeed_config else DEEPSPEED_CONFIGS / f"{cfg.strategy}.json"
    if not path.is_file():
        raise FileNotFoundError(f"DeepSpeed config not found: {path}")
    ds = json.loads(path.read_text())
    ds["train_micro_batch_size_per_gpu"] = micro_batch_size
    ds["gradient_accumulation_steps"] = 1  # boundaries are set by the caller (set_boundary)
    ds["gradient_clipping"] = optim.max_grad_norm
    ds["bf16"] = {"enabled": resolve_precision(cfg.precision) == torch.bfloat16}
    ds.setdefault("zero_allow_untested_optimizer", True)
    ds.setdefault("steps_per_print", 10**9)
    return ds


class Learner:
    def __init__(self, model: torch.nn.Module, optim: OptimConfig, cfg: LearnerConfig, total_steps: int, micro_batch_size: int = 1):
        self.cfg, self.optim_cfg = cfg, optim
        self.lora = lora.is_lora(model)  # only adapters train (rexthinker.models.lora)
        if cfg.precision == "bf16-mixed" and cfg.strategy not in ("single", "ddp"):
            raise ValueError(f"learner.precision bf16-mixed runs with strategy 'single' or 'ddp'; under {cfg.strategy} use bf16 "
                             "(DeepSpeed keeps fp32 master weights itself)")  # fmt: skip
        dtype = resolve_precision(cfg.precision)
        model.to(dtype=dtype)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        optimizer = torch.optim.AdamW(param_groups(model, optim.weight_decay), lr=optim.lr, betas=optim.betas, eps=optim.eps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(optim, total_steps))
        self.engine, self.ddp = None, None
        if cfg.strategy in ("single", "ddp"):
            if cfg.strategy == "single" and dist.world_size() > 1:
                raise ValueError("strategy 'single' runs one process; use ddp, zero2 or zero3 with several")
            model.to(dist.device())
            if cfg.strategy == "ddp" and dist.world_size() > 1:
                # Gradients are averaged at every backward (no no_sync): correct with any number of
                # micro-batches, and the demo's steps have one.
                self.ddp = torch.nn.parallel.DistributedDataParallel(model)
            self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        else:
            import deepspeed

            model.to(dist.device())
            self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=model, optimizer=optimizer, lr_scheduler=scheduler,
                config=deepspeed_config(cfg, optim, micro_batch_size), dist_init_required=False,
            )  # fmt: skip
            self.model = self.engine.module
        self.dtype = dtype

    @property
    def module(self) -> torch.nn.Module:
        """The unwrapped model (its parameters are partitioned under ZeRO-3)."""
        return self.model

    @property
    def grad_scale(self) -> float:
        """Factor a loss normalised over all ranks needs so gradient averaging yields the sum."""
        return float(dist.world_size()) if self.engine is not None or self.ddp is not None else 1.0

    def __call__(self, **batch):
        with torch.autocast(dist.device().type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16-mixed"):
            return (self.engine or self.ddp or self.model)(**batch)

    def set_boundary(self, is_last_micro_batch: bool) -> None:
        if self.engine is not None:
            self.engine.set_gradient_accumulation_boundary(is_last_micro_batch)

    def backward(self, loss: torch.Tensor) -> None:
        if self.engine is not None:
            self.engine.backward(loss * self.grad_scale, scale_wrt_gas=False)
        else:
            (loss * self.grad_scale).backward()

    def current_lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def step(self) -> dict[str, float]:
        lr = self.current_lr()
        if self.engine is not None:
            self.engine.step()
            norm = self.engine.get_global_grad_norm()
            grad_norm = float(norm) if norm is not None else float("nan")
        else:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.optim_cfg.max_grad_norm))
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return {"grad_norm": grad_norm, "lr": lr}

    # --- state --------------------------------------------------------------------------------
    def save_state(self, folder: Path) -> None:
        """Weights (full precision), optimizer and schedule; every rank calls it. A LoRA learner
        saves its adapters only: the frozen base is the run's ``model.path``."""
        folder = Path(folder)
        if dist.is_main():
            folder.mkdir(parents=True, exist_ok=True)
        dist.barrier()
        if self.engine is not None:
            self.engine.save_checkpoint(str(folder), tag="learner", exclude_frozen_parameters=self.lora)
        elif dist.is_main():
            state = self.model.state_dict()
            torch.save(
                {"model": lora.adapter_state(state) if self.lora else state, "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict()},
                folder / "learner.pt",
            )  # fmt: skip

    def load_state(self, folder: Path, trust_pickle: bool = False) -> None:
        """What :meth:`save_state` wrote. DeepSpeed unpickles its files in full, so they are checked
        against an allow-list first (:func:`checkpoint.check_pickles`) unless ``trust_pickle``."""
        folder = Path(folder)
        if self.engine is not None:
            checkpoint.check_pickles(folder, trust=trust_pickle)
            path, _ = self.engine.load_checkpoint(str(folder), tag="learner", load_module_strict=not self.lora)
            if path is None:
                raise FileNotFoundError(f"no DeepSpeed learner state in {folder}")
        else:
            state = checkpoint.load_tensors(folder / "learner.pt", map_location=dist.device())
            if self.lora:  # exactly this model's adapters, nothing else
                expected = set(lora.adapter_state(self.model.state_dict()))
                if set(state["model"]) != expected:
                    raise KeyError(f"{folder / 'learner.pt'} does not hold this model's LoRA adapters: missing "
                                   f"{sorted(expected - set(state['model']))[:3]}, extra {sorted(set(state['model']) - expected)[:3]}")  # fmt: skip
            self.model.load_state_dict(state["model"], strict=not self.lora)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Unsharded weights on rank 0 (None elsewhere); every rank must call it under ZeRO-3."""
        if self.engine is not None and self.engine.zero_optimization_stage() == 3:
            state = self.engine._zero3_consolidated_16bit_state_dict()
            return state if dist.is_main() else None
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()} if dist.is_main() else None

    def export_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The plain model's weights under its own names, LoRA adapters merged (the trained ones
        untouched): what the Hugging Face export and the rollout engines get. Rank 0; all call it."""
        state = self.full_state_dict()
        return lora.merged_state_dict(state, lora.scaling(self.model)) if self.lora and state is not None else state

    def export_hf(self, folder: Path, processor=None) -> None:
        """A Hugging Face folder (safetensors, config, generation config, processor) that
        ``from_pretrained`` and vLLM load directly, adapters merged, with the family's box frame
        recorded (:func:`~rexthinker.models.families.record_frame`). Every rank calls it; rank 0 writes."""
        state = self.export_state_dict()
        if dist.is_main():
            folder = Path(folder)
            folder.mkdir(parents=True, exist_ok=True)
            model = lora.base_model(self.model)
            model.save_pretrained(folder, state_dict=state)
            record_frame(folder, family_for_model_type(model.config.model_type))
            if processor is not None:
                processor.save_pretrained(folder)
        dist.barrier()

    def export_adapter(self, folder: Path) -> None:
        """The LoRA adapters alone in peft's format (``PeftModel.from_pretrained(base, folder)``).
        Every rank calls it; rank 0 writes."""
        state = self.full_state_dict()
        if dist.is_main():
            self.model.save_pretrained(folder, state_dict=lora.adapter_state(state))
        dist.barrier()
