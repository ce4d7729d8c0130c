"""SFT step time by process layout on CPU: one process with all threads, one with one thread, and
one single-threaded process per core under ``learner.strategy=ddp``, on the demo's workload
(``sft_demo.yaml``, ``models/demo-base``, SynthRef traces at the demo level, 8 samples a step in
every layout), through the real command (``python -m rexthinker.sft``).

The layouts run one after another, ``--repeats`` times in alternation, each for ``--steps`` steps;
the first ``--skip`` steps of a run (start-up, Adam's first step) are left out of its mean. A step's
time is the one the trainer logs (``step_time_s``: from the end of one step to the end of the next,
data included). Numbers depend on the machine and its load; run it on a quiet machine:

    python benchmarks/sft_processes.py                      # all layouts, 12 steps x 2 repeats
    python benchmarks/sft_processes.py --steps 20 --precision fp32
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


LAYOUTS = {  # name -> (processes, threads per process)
    "1 process, all threads": (1, None),
    "1 process, 1 thread": (1, 1),
    "ddp, 1 thread each": (None, 1),
}


def run_layout(name: str, data: Path, model: str, steps: int, precision: str, out: Path) -> list[float]:
    processes, threads = LAYOUTS[name]
    processes = processes or cores()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["OMP_NUM_THREADS"] = str(threads or cores())
    cmd = [sys.executable, "-m", "rexthinker.sft", "--config", "recipes/configs/sft_demo.yaml", f"model.path={model}",
           f"data.train=[{data}]", f"trainer.output_dir={out}", f"trainer.max_steps={steps}", "trainer.save_every=0",
           "eval.enabled=false", "trainer.report_to=[jsonl]", f"learner.precision={precision}"]  # fmt: skip
    if processes > 1:
        cmd += [f"trainer.nproc={processes}", "learner.strategy=ddp", f"trainer.per_device_batch_size={8 // processes}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["step_time_s"] for r in rows if "step_time_s" in r]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--skip", type=int, default=2, help="first steps of each run left out")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", default="bf16-mixed", help="learner.precision (bf16-mixed is fast only with AMX / AVX-512 BF16)")
    parser.add_argument("--model", default=str(REPO / "models" / "demo-base"))
    parser.add_argument("--out", type=Path, default=None, help="write the table as JSON here too")
    args = parser.parse_args(argv)
    if 8 % cores():
        raise SystemExit(f"the demo's 8 samples a step do not split over {cores()} processes")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run([sys.executable, "-m", "data_tools", "synthref", "--level", "demo", "--train", str(8 * args.steps + 8),
                        "--val", "0", "--test", "0", "--formats", "cot", "--out", str(root / "data")],
                       cwd=REPO, check=True, capture_output=True)  # fmt: skip
        data = root / "data" / "train" / "cot" / "synthref"
        times: dict[str, list[float]] = {name: [] for name in LAYOUTS}
        for repeat in range(args.repeats):
            for name in LAYOUTS:
                steps = run_layout(name, data, args.model, args.steps, args.precision, root / f"run{repeat}-{list(LAYOUTS).index(name)}")
                times[name].append(statistics.mean(steps[args.skip :]))
                print(f"[sft_processes] repeat {repeat + 1}: {name}: {times[name][-1]:.2f} s a step", flush=True)
    base = statistics.mean(times["1 process, all threads"])
    print(f"\nSFT steps of 8 demo samples, {args.precision}, {cores()} cores, mean of steps {args.skip + 1}-{args.steps} "
          f"over {args.repeats} runs each\n")  # fmt: skip
    print("| layout | s / step (each run) | vs 1 process, all threads |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {' / '.join(f'{v:.2f}' for v in values)} | {base / statistics.mean(values):.2f}x |")
    if args.out:
        args.out.write_text(json.dumps({"precision": args.precision, "cores": cores(), "steps": args.steps, "times": times}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
