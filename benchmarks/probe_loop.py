"""The timed training loop the probes share (``copy_probe.py``, ``region_probe.py``): AdamW with a
linear warm-up, gradient clipping 1.0, held-out evaluation every ``eval_every`` steps printed as a
JSON line, and the final row (with the run's settings and the curve) appended to ``results``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch


def train_for(model, args, next_batch: Callable[[int], tuple[dict, dict]], evaluate: Callable[[], dict]) -> dict:
    """Train until ``args.seconds`` have passed. ``next_batch(step)`` returns the model's keyword
    inputs (with ``labels``) and extra fields to print; ``evaluate()`` the held-out numbers."""
    optim = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: min(1.0, (s + 1) / max(1, args.warmup)))
    config_row = {k: v for k, v in vars(args).items() if k not in ("results", "threads", "eval_every") and not k.startswith("_")}
    start, step, loss, extra, history = time.perf_counter(), 0, torch.tensor(float("nan")), {}, []

    def report(**fields) -> dict:
        row = {**fields, "step": step, "samples": step * args.batch, "s": round(time.perf_counter() - start),
               **extra, "loss": round(loss.item(), 3), **evaluate()}  # fmt: skip
        print(json.dumps(row), flush=True)
        history.append({k: v for k, v in row.items() if k not in fields})
        return row

    while time.perf_counter() - start < args.seconds:
        batch, extra = next_batch(step)
        loss = model(**batch).loss
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        step += 1
        if step % args.eval_every == 0:
            report()
    row = report(**config_row)
    row["history"] = history  # the curve, for plot_probes.py
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        with open(args.results, "a") as f:
            f.write(json.dumps(row) + "\n")
    return row
