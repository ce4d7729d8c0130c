"""Plot probe curves: one panel per metric, one line per run, held-out value against training step.

    python benchmarks/plot_probes.py outputs/probes/copy_probe.jsonl --metrics exact_restate exact_answer \\
        --out docs/images/copy_probe.png

Reads the rows ``copy_probe.py`` / ``region_probe.py`` append to their results file (each holds its
curve under ``history``) or their printed output saved to a file (intermediate JSON lines, then the
final row). ``--notes`` keeps the runs whose note starts with one of the given prefixes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_runs(paths: list[Path]) -> list[dict]:
    """``[{"note": ..., "history": [rows]}]`` from results files or saved probe output."""
    runs = []
    for path in paths:
        pending = []
        for line in path.read_text().splitlines():
            if not line.startswith("{"):
                continue
            row = json.loads(line)
            if "note" not in row:  # an intermediate line of saved output
                pending.append(row)
                continue
            history = row.get("history") or [*pending, {k: v for k, v in row.items() if k != "history"}]
            runs.append({"note": row["note"] or path.stem, "history": history})
            pending = []
    return runs


def plot(runs: list[dict], metrics: list[str], out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(max(7.0, 5.2 * len(metrics)), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for run in runs:
            points = [(r["step"], r[metric]) for r in run["history"] if metric in r]
            if points:
                ax.plot(*zip(*points), marker=".", label=run["note"])
        ax.set_title(metric)
        ax.set_xlabel("training step")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--notes", nargs="*", default=None, help="keep runs whose note starts with one of these")
    p.add_argument("--title", default="held-out exact match vs training step")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    runs = read_runs(args.paths)
    if args.notes:
        runs = [r for r in runs if any(r["note"].startswith(n) for n in args.notes)]
    if not runs:
        raise SystemExit("no probe runs found in " + ", ".join(map(str, args.paths)))
    print(plot(runs, args.metrics, args.out, args.title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
