"""LoRA vs full fine-tuning, SFT on the ``small`` model (rexthinker.models.tiny): seconds per optimizer
step and peak memory (RSS) of the training process, a few steps each, on CPU.

Each mode runs in a process of its own (peak RSS is a per-process number) through the real SFT
trainer (``SFTTrainer``: load, LoRA attach, Learner, fit), on SynthRef traces; the first step (Adam's
state appears there) is left out of the step time. ``full`` trains the language model and head
(vision tower and projector frozen), the rest as ``sft_demo.yaml``; ``lora`` trains rank-``--rank`` adapters on every
linear layer of the language model's blocks. Numbers depend on the machine and its load:

    python benchmarks/lora_bench.py                  # both modes, 5 steps each, prints a table
    python benchmarks/lora_bench.py --steps 8 --rank 16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_mode(mode: str, steps: int, rank: int, batch: int, root: Path) -> dict:
    """One mode, in this process: the JSON row the parent prints."""
    from rexthinker.config import load_config
    from rexthinker.data.cot_tsv import write_cot_tsv
    from rexthinker.data.synthref import generate
    from rexthinker.models import tiny
    from rexthinker.sft.config import SFTConfig
    from rexthinker.sft.trainer import SFTTrainer

    write_cot_tsv(generate(batch * (steps + 1), seed=5, split="train"), root / "train")
    overrides = [
        f"model.path={tiny.get('small')}", f"data.train=[{root / 'train'}]", "model.freeze_vision=true",
        "model.freeze_projector=true", "learner.strategy=single", "learner.precision=fp32", "optim.warmup_ratio=0.0",
        f"trainer.per_device_batch_size={batch}", "trainer.grad_accum=1", f"trainer.max_steps={steps + 1}",
        "trainer.save_every=0", "data.num_workers=0", "trainer.report_to=[jsonl]", f"trainer.output_dir={root / 'run'}", "data.max_length=4096",
    ]  # fmt: skip
    if mode == "lora":
        overrides += [f"model.lora.r={rank}", f"model.lora.alpha={2 * rank}"]
    run = SFTTrainer(load_config(SFTConfig, REPO / "recipes/configs/sft_demo.yaml", overrides))
    loaded = rss_mib()
    start = time.perf_counter()
    run.fit()
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    step_times = [r["step_time_s"] for r in rows[1:]]
    trainable = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    total = sum(p.numel() for n, p in run.model.named_parameters() if ".lora_" not in n)  # the base model's
    run.cleanup()
    return {
        "mode": mode, "steps": len(step_times), "step_s": sum(step_times) / len(step_times), "fit_s": wall,
        "peak_rss_mib": rss_mib(), "rss_after_load_mib": loaded, "trainable_params": trainable, "params": total,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps per mode (after one untimed)")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2, help="samples per step")
    parser.add_argument("--mode", choices=["full", "lora"], default=None, help="(internal) run one mode here")
    args = parser.parse_args()
    if args.mode:
        with tempfile.TemporaryDirectory() as tmp:
            print("ROW " + json.dumps(run_mode(args.mode, args.steps, args.rank, args.batch, Path(tmp))), flush=True)
        return
    rows = []
    for mode in ("full", "lora"):
        cmd = [sys.executable, __file__, "--mode", mode, "--steps", str(args.steps), "--rank", str(args.rank), "--batch", str(args.batch)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0:
            raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads([line for line in proc.stdout.splitlines() if line.startswith("ROW ")][-1][4:]))
    print(f"SFT on the small model, batch {args.batch}, {args.steps} timed steps, LoRA rank {args.rank}")
    print(f"{'mode':6} {'trainable':>12} {'s/step':>8} {'peak RSS MiB':>13} {'RSS after load':>15}")
    for r in rows:
        print(f"{r['mode']:6} {r['trainable_params']:>12,} {r['step_s']:>8.3f} {r['peak_rss_mib']:>13.0f} {r['rss_after_load_mib']:>15.0f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
