"""The SFT trainer: sample features, the optimizer-step loop, checkpoints, the held-out evaluation.

See :mod:`rexthinker.sft` (``python -m rexthinker.sft``) for the command and how it differs from the paper.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rexthinker.config import save_config, to_dict
from rexthinker.data.sources import Head, open_samples, open_training_samples
from rexthinker.models import lora
from rexthinker.models.families import model_family
from rexthinker.models.load import load_policy
from rexthinker.sft.config import SFTConfig
from rexthinker.sft.data import SFTDataset, length_key, step_batches, step_loader, steps_per_epoch
from rexthinker.train import checkpoint, dist, faults
from rexthinker.train.features import IGNORE
from rexthinker.train.learner import Learner
from rexthinker.train.metrics import MetricLogger


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Summed next-token cross-entropy over labelled positions, each weighted by ``weights`` (the
    batch's per-token loss weights, :class:`~rexthinker.sft.config.SFTLossConfig`) when given."""
    losses = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE, reduction="none")
    return losses.sum() if weights is None else (losses * weights[:, 1:].flatten()).sum()


def label_weight(batch: dict[str, torch.Tensor]) -> float:
    """What a batch's loss sum is divided by: its labelled tokens, or their summed weights."""
    if "weights" in batch:
        return float(batch["weights"][:, 1:][batch["labels"][:, 1:] != IGNORE].sum())
    return int((batch["labels"][:, 1:] != IGNORE).sum())


class SFTTrainer:
    """The SFT stage in the lifecycle of :func:`rexthinker.train.cli.main`: setup (here), fit, finish,
    evaluate, cleanup."""

    def __init__(self, cfg: SFTConfig):
        self.cfg = cfg
        dist.init()
        torch.manual_seed(cfg.trainer.seed)
        random.seed(cfg.trainer.seed)
        np.random.seed(cfg.trainer.seed)
        self.out = Path(cfg.trainer.output_dir)
        self.ckpt_root = self.out / "checkpoints"
        self.lock = checkpoint.RunLock(self.out) if dist.is_main() else None  # one run per output folder
        try:
            self._setup(cfg)
        except BaseException:  # a run that fails to start leaves the folder free
            if self.lock is not None:
                self.lock.release()
            raise

    def _setup(self, cfg: SFTConfig) -> None:
        model, self.processor = load_policy(cfg.model.path, cfg.model)
        self.family = model_family(cfg.model.path)  # the box frame of every prompt and target
        self.model = lora.attach(model, cfg.model.lora)
        samples = open_training_samples(cfg.data, self.out, "sft", main=dist.is_main())
        if cfg.data.max_samples:
            samples = Head(samples, cfg.data.max_samples)
        self.dataset = SFTDataset(samples, self.processor, cfg.data.max_length, cfg.data.template, cfg.data.instruction, cfg.loss.weights,
                                  self.family)  # fmt: skip
        t = cfg.trainer
        self.world = dist.world_size()
        self.per_epoch = steps_per_epoch(len(self.dataset), t.per_device_batch_size, t.grad_accum, self.world)
        self.total_steps = t.max_steps or max(1, math.ceil(t.epochs * self.per_epoch))
        self.learner = Learner(self.model, cfg.optim, cfg.learner, self.total_steps, t.per_device_batch_size)
        self.logger = MetricLogger(self.out, t.report_to, t.run_name, to_dict(cfg))
        self.step = 0
        if dist.is_main():
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
            trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
            total = sum(p.numel() for p in self.model.parameters())
            print(f"[sft] {len(self.dataset)} samples, {self.world} process(es), {self.per_epoch} steps/epoch, "
                  f"{self.total_steps} steps; trainable {trainable / 1e6:.2f} M of {total / 1e6:.2f} M parameters", flush=True)  # fmt: skip
        if t.resume:
            self.resume()

    def resume(self) -> None:
        """From the newest checkpoint every rank can load; a damaged one is skipped for the one
        before it. A file that would run code when unpickled stops the run."""
        if dist.is_main():
            checkpoint.recover(self.ckpt_root)
        found = dist.broadcast_object([str(p) for p in checkpoint.candidates(self.ckpt_root)] if dist.is_main() else None)
        for folder in map(Path, found):
            problem, unsafe = None, False
            try:
                self.learner.load_state(folder / "learner", self.cfg.trainer.trust_pickle)
                checkpoint.load_rng(folder)
                step = checkpoint.read_state(folder)["step"]
            except checkpoint.UnsafeCheckpointError as exc:
                problem, unsafe = exc, True
            except Exception as exc:  # a damaged checkpoint: try the one before
                problem = exc
            verdict = dist.all_reduce_max(2.0 if unsafe else 1.0 if problem else 0.0)  # every rank takes the same branch
            if verdict == 2.0:
                raise problem if unsafe else checkpoint.UnsafeCheckpointError(f"another rank refused to load {folder}")
            if verdict == 0.0:
                self.step = step
                if dist.is_main():
                    print(f"[sft] resumed from {folder} at step {self.step}", flush=True)
                return
            if dist.is_main():
                print(f"[sft] cannot resume from {folder} ({type(problem).__name__ if problem else 'another rank failed'}: "
                      f"{problem}); trying an older checkpoint", flush=True)  # fmt: skip
        if checkpoint.step_dirs(self.ckpt_root):  # never a silent fresh start over a run's checkpoints
            raise RuntimeError(f"none of the checkpoints in {self.ckpt_root} could be loaded (see above); "
                               "remove them, or set trainer.resume=false in a new output_dir")  # fmt: skip

    # --- train ---------------------------------------------------------------------------------
    def fit(self) -> None:
        t = self.cfg.trainer
        pad_id = self.processor.tokenizer.pad_token_id
        window = self.cfg.data.group_by_length
        lengths = [length_key(s) for s in self.dataset.samples] if window else None
        batches = step_batches(len(self.dataset), t.seed, t.per_device_batch_size, t.grad_accum, dist.rank(), self.world, lengths, window)
        plan = list(itertools.islice(batches, self.step, self.total_steps))  # a resumed run skips what it consumed
        bar = _progress(self.total_steps, self.step) if dist.is_main() else None
        fallback = None
        start = time.perf_counter()
        for epoch, micro in step_loader(self.dataset, plan, pad_id, self.cfg.data.num_workers):
            skipped = sum(int(b["skipped"]) for b in micro)
            micro = [b for b in micro if "input_ids" in b]
            if not micro:  # every sample of this rank was too long: a zero-loss pass keeps ranks in step
                if fallback is None:
                    raise RuntimeError("no sample fits data.max_length; raise it")
                micro = [dict(fallback, labels=torch.full_like(fallback["labels"], IGNORE))]
            fallback = micro[-1]
            n_label = dist.all_reduce_sum(sum(label_weight(b) for b in micro))
            loss_sum, tokens = 0.0, 0
            self.model.train()
            for k, batch in enumerate(micro):
                self.learner.set_boundary(k == len(micro) - 1)
                batch = {key: v.to(dist.device()) for key, v in batch.items() if key != "skipped"}
                labels, weights = batch.pop("labels"), batch.pop("weights", None)
                logits = self.learner(**batch).logits
                loss = token_loss_sum(logits, labels, weights)
                self.learner.backward(loss / max(n_label, 1.0))
                loss_sum += float(loss.detach())
                tokens += int(batch["attention_mask"].sum())
                if k == 0:
                    faults.point("step.mid", self.step + 1)
            stats = self.learner.step()
            self.step += 1
            elapsed = time.perf_counter() - start
            metrics = {
                "loss": dist.all_reduce_sum(loss_sum) / max(n_label, 1.0),
                "lr": stats["lr"],
                "grad_norm": stats["grad_norm"],
                "tokens_per_s": dist.all_reduce_sum(tokens) / elapsed,
                "step_time_s": elapsed,
                "epoch": epoch + 1,
                "skipped_too_long": dist.all_reduce_sum(skipped),
            }
            if self.step % t.log_every == 0 or self.step == self.total_steps:
                self.logger.log(self.step, metrics)
            if bar is not None:
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}", tok_s=f"{metrics['tokens_per_s']:.0f}")
                bar.update(1)
            if t.save_every and self.step % t.save_every == 0 and self.step < self.total_steps:
                self.save()
            start = time.perf_counter()
        if bar is not None:
            bar.close()

    # --- save ----------------------------------------------------------------------------------
    def save(self) -> Path:
        tmp = checkpoint.begin(self.ckpt_root, self.step)
        self.learner.save_state(tmp / "learner")
        self.learner.export_hf(tmp / "hf", self.processor)
        if self.learner.lora:
            self.learner.export_adapter(tmp / "adapter")
        checkpoint.save_rng(tmp)
        return checkpoint.commit(tmp, {"step": self.step, "total_steps": self.total_steps}, keep=self.cfg.trainer.keep_checkpoints)

    def finish(self) -> Path:
        """The final checkpoint, plus ``<output_dir>/final`` (the Hugging Face folder) and curves."""
        final = self.save()
        if dist.is_main():
            target = self.out / "final"
            if target.is_symlink() or target.exists():
                target.unlink() if target.is_symlink() else shutil.rmtree(target)
            target.symlink_to(final.relative_to(self.out) / "hf")
            self.logger.plot(["loss", "lr", "grad_norm", "tokens_per_s"], self.out / "loss_curve.png", "SFT")
            print(f"[sft] final checkpoint: {target} -> {final / 'hf'}", flush=True)
        return self.out / "final"

    # --- evaluate ------------------------------------------------------------------------------
    def evaluate(self, tag: str) -> dict | None:
        """Greedy generations on ``data.val`` from the final checkpoint, scored with ``eval.reward``
        (rexthinker.quickeval). SFT evaluates once, at the ``"end"``, on rank 0, after the ranks have
        left their process group."""
        e = self.cfg.eval
        if tag != "end" or not e.enabled:
            return None
        if self.world > 1:  # training is over: every rank leaves the process group, so that rank 0's
            dist.barrier()  # evaluation engine (vLLM sets up a group of its own) does not wait on ranks that left
            dist.cleanup()
        if not dist.is_main():
            return None
        faults.point("eval.end")
        if not self.cfg.data.val:
            raise SystemExit("eval.enabled needs data.val")
        from rexthinker import quickeval
        from rexthinker.generation import hf_generate, new_engine, vllm_generate

        samples = Head(open_samples(self.cfg.data.val, on_error=self.cfg.data.on_error), e.num_samples)
        kwargs = dict(template=self.cfg.data.template, instruction=self.cfg.data.instruction, progress=True, family=self.family)
        start = time.perf_counter()
        if e.backend == "hf":
            model = self.learner.module.eval()
            gens = hf_generate(model, self.processor, samples, max_new_tokens=e.max_new_tokens, batch_size=e.batch_size, **kwargs)
        else:
            from vllm import SamplingParams

            llm = new_engine(str(self.out / "final"), max_model_len=4096, enforce_eager=False)
            gens = vllm_generate(llm, self.processor, samples, SamplingParams(temperature=0.0, max_tokens=e.max_new_tokens), **kwargs)
        result = quickeval.score(gens, e.reward)
        result["generate_s"] = time.perf_counter() - start
        result["baselines"] = quickeval.baselines([(g.info.hint_boxes, g.info.answer_boxes) for g in gens],
                                                  [g.sample.domain or "unknown" for g in gens])  # fmt: skip
        (self.out / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
        with (self.out / "eval_samples.jsonl").open("w") as f:
            for g in gens:
                f.write(json.dumps({"id": g.sample.id, "referring": g.sample.referring, "completion": g.text}) + "\n")
        self.logger.log(self.step, {f"eval/{k}": v for k, v in result.items() if isinstance(v, (int, float))})
        print(f"[sft] eval on {result['samples']} held-out samples: format {result['format']:.3f}, "
              f"accuracy-F1 {result['accuracy_f1']:.3f}, rejection acc {result['rejection_acc']:.3f} "
              f"(baselines: all boxes F1 {result['baselines']['all_boxes']['accuracy_f1']:.3f}, "
              f"no boxes rejection {result['baselines']['no_boxes']['rejection_acc']:.3f})", flush=True)  # fmt: skip
        return result

    def cleanup(self) -> None:
        self.logger.close()
        dist.cleanup()
        if self.lock is not None:
            self.lock.release()


def _progress(total: int, done: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="sft", unit="step", dynamic_ncols=True)
