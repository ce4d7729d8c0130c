"""Metric logging to the console, a JSONL file, TensorBoard and wandb, plus PNG curves at the end.

Only rank 0 logs. wandb runs offline unless ``WANDB_API_KEY`` is set (or ``WANDB_MODE`` says
otherwise), so a run never blocks on a login prompt.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from rexthinker.config import redact
from rexthinker.train import dist


class MetricLogger:
    def __init__(self, out_dir: Path, report_to: list[str], run_name: str, config: dict | None = None):
        self.out_dir = Path(out_dir)
        self.enabled = dist.is_main()
        self.report_to = set(report_to)
        unknown = self.report_to - {"console", "jsonl", "tensorboard", "wandb"}
        if unknown:
            raise ValueError(f"unknown report_to targets {sorted(unknown)}; use console, jsonl, tensorboard, wandb")
        self.history: list[dict] = []
        self._tb = self._wandb = None
        if not self.enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.out_dir / "metrics.jsonl"
        if "tensorboard" in self.report_to:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))
        if "wandb" in self.report_to:
            import wandb

            if not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ:
                os.environ["WANDB_MODE"] = "offline"
            self._wandb = wandb.init(project="rexthinker", name=run_name, dir=str(self.out_dir), config=redact(config or {}))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, "time": round(time.time(), 3), **{k: _plain(v) for k, v in metrics.items()}}
        self.history.append(row)
        if "jsonl" in self.report_to:
            with self.jsonl.open("a") as f:
                f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    def plot(self, keys: list[str], path: Path, title: str) -> Path | None:
        """One panel per key against the step, from everything logged in this run."""
        if not self.enabled:
            return None
        return plot_history(self.history, keys, path, title)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    return value


def plot_history(history: list[dict], keys: list[str], path: Path, title: str) -> Path | None:
    """A PNG with one panel per key of ``history`` rows against their ``step`` (keys no row has are
    left out; None when none is left)."""
    keys = [k for k in keys if any(k in row for row in history)]
    if not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        points = [(row["step"], row[key]) for row in history if isinstance(row.get(key), (int, float))]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 50 else None)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
