"""The demo: every stage of the pipeline on the embedded SynthRef task, on one CPU machine.

    make demo                                  # or: bash recipes/demo.sh [--out DIR] [--train N]

Stages: (1) load the shipped demo base (``models/demo-base``: the ``small`` Qwen2.5-VL pre-trained on
generic describe / locate chats by ``rexthinker.models.base``; ``--model small`` starts from random
weights instead), (2) generate SynthRef at its demo level in the three on-disk formats through
``python -m data_tools synthref --level demo``, (3) show it: a PNG grid of test samples
with numbered hint boxes, and a markdown file with the exact model input (chat template applied)
and target of a few samples, read back through the library's readers, (4) SFT
(``python -m rexthinker.sft``), (5) GRPO from the SFT checkpoint (``python -m rexthinker.grpo``),
(6) evaluate both checkpoints on the test split with the HumanRef runner and metric, in one table.
Each stage calls the same entry point a user runs. The terminal shows a header and a progress bar
per stage; everything else goes to ``OUT/demo.log``. Ends with the stage table, a per-domain table
of held-out F1 / rejection / format for the baselines, SFT and GRPO, the paths it wrote, and
``OUT/summary.json`` with the same numbers (keys ``baselines``, ``sft``, ``grpo``).

    bash recipes/demo.sh --stages data,show        # the first stages only
    bash recipes/demo.sh --sft-steps 40 --grpo-steps 4   # a shorter run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rexthinker.data.cot_tsv import CotTsvReader
from rexthinker.data.grpo_parquet import read_grpo_parquet
from rexthinker.data.humanref import read_humanref
from rexthinker.generation import render_request
from rexthinker.models import tiny
from rexthinker.prompts import pixel_limits, target_text
from rexthinker.viz import render_grid

SPLITS = ("train", "val", "test")


class Console:
    """What a person sees: a header per stage, one progress bar per stage and the final tables.

    Everything else (the stages' own output, library warnings, vLLM and Ray messages) goes to the log
    file: child processes write there directly, and while a stage runs in this process, file
    descriptors 1 and 2 point there too. On a failure the end of the log is shown.
    """

    def __init__(self, log_path: Path):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self.log = open(log_path, "a", buffering=1)
        self.term = os.fdopen(os.dup(1), "w", buffering=1)

    def say(self, text: str = "") -> None:
        print(text, file=self.term, flush=True)
        print(text, file=self.log, flush=True)

    def stage(self, title: str) -> float:
        self.say(f"\n=== {title} ===")
        return time.perf_counter()

    @contextlib.contextmanager
    def quiet(self):
        """Send this process's stdout and stderr (Python and C level) to the log for the block."""
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(self.log.fileno(), 1)
        os.dup2(self.log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])

    def run(self, cmd: list[str], desc: str, total: int, progress: Callable[[], int]) -> None:
        """Run ``cmd`` with its output in the log and a progress bar fed by ``progress()``."""
        from tqdm import tqdm

        self.log.write("$ python " + " ".join(cmd[1:]) + "\n")
        self.log.flush()
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "TQDM_MININTERVAL": "5"}
        proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        with tqdm(total=total, desc=desc, file=self.term, dynamic_ncols=True, leave=True) as bar:
            while True:
                running = proc.poll() is None
                done = min(total, _safe(progress))
                if done > bar.n:
                    bar.update(done - bar.n)
                if not running:
                    break
                time.sleep(1.0)
        if proc.returncode != 0:
            tail = self.log_path.read_text(errors="replace").splitlines()[-40:]
            self.say("\n".join(["", f"{desc} failed (exit {proc.returncode}); the end of {self.log_path}:", *tail]))
            raise SystemExit(proc.returncode)


def _safe(progress: Callable[[], int]) -> int:
    try:
        return int(progress())
    except (OSError, ValueError):  # a file being written or not there yet
        return 0


def _last_step(metrics: Path) -> int:
    """The last training step a metrics.jsonl records (0 before the first)."""
    if not metrics.exists():
        return 0
    steps = [json.loads(line).get("step", 0) for line in metrics.read_text().splitlines() if line.startswith("{")]
    return max([s for s in steps if isinstance(s, int)], default=0)


def _lines(path: Path) -> int:
    return sum(1 for _ in path.open()) if path.exists() else 0


def build_model(name: str) -> tuple[Path, dict]:
    """The checkpoint the demo starts from: the shipped pre-trained base (``demo-base``,
    models/demo-base), or a random-weight build of a tiny spec (cached)."""
    from transformers import AutoConfig, AutoProcessor

    from rexthinker.models import base

    path = base.shipped() if name == "demo-base" else tiny.get(name)
    config = AutoConfig.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    t, v = config.text_config, config.vision_config
    n_params = _count_params(path)
    about = (f"{name}: {path}\n  text {t.num_hidden_layers}x{t.hidden_size}, vision {v.depth}x{v.hidden_size}, "
             f"vocab {len(processor.tokenizer)}, {n_params / 1e6:.2f} M parameters")  # fmt: skip
    facts = {"params_M": round(n_params / 1e6, 2), "pixels": pixel_limits(processor)}
    if name == "demo-base":
        last = base.lineage(path)[-1]["last"]
        facts["base_probes"] = {k.removeprefix("heldout_"): v for k, v in last.items() if k.startswith("heldout_")}
        about += "\n  pre-trained (describe / locate), held-out probes: " + ", ".join(f"{k} {v:.3f}" for k, v in facts["base_probes"].items())
    return path, {**facts, "about": about}


def _count_params(path: Path) -> int:
    from safetensors import safe_open

    total = 0
    for file in path.glob("*.safetensors"):
        with safe_open(str(file), "pt") as f:
            total += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
    return total


def generate_data(console: Console, out: Path, args, min_pixels: int, max_pixels: int) -> None:
    cmd = [
        sys.executable, "-m", "data_tools", "synthref", "--out", str(out), "--seed", str(args.seed),
        "--train", str(args.train), "--val", str(args.val), "--test", str(args.test),
        "--min-pixels", str(min_pixels), "--max-pixels", str(max_pixels), "--level", args.level, *args.synthref,
    ]  # fmt: skip
    total = args.train + args.val + args.test
    console.run(cmd, "data", total, lambda: sum(_lines(out / split / "humanref" / "annotations.jsonl") for split in SPLITS))


def show(data: Path, model_path: Path, out: Path, n_prompts: int) -> dict:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_path)
    lo, hi = pixel_limits(processor)
    test = read_humanref(data / "test" / "humanref" / "annotations.jsonl")
    render_grid(test[:12], out / "samples.png", cols=4)

    # The same samples through the other two formats: identical questions, identical model input.
    cot = CotTsvReader.from_prefix(data / "test" / "cot" / "synthref")
    grpo = read_grpo_parquet(data / "test" / "grpo" / "synthref.parquet", min_pixels=lo, max_pixels=hi)
    lines, prompt_tokens, target_tokens = ["# SynthRef: model input and target of a few test samples\n"], [], []
    for i, sample in enumerate(test):
        request = render_request(sample, processor)
        inputs = processor(text=[request.prompt], images=[request.image], return_tensors="pt")
        target = target_text(sample, request.info)
        prompt_tokens.append(int(inputs["input_ids"].shape[1]))
        target_tokens.append(len(processor.tokenizer.encode(target, add_special_tokens=False)))
        others = [render_request(other, processor) for other in (cot[i], grpo[i])]
        same = all((o.info, o.prompt) == (request.info, request.prompt) for o in others)
        if not same:
            raise SystemExit(f"sample {sample.id}: the three formats give different model inputs")
        if i < n_prompts:
            lines += [f"## {sample.id} ({sample.domain}/{sample.sub_domain})\n", "Model input (chat template applied; "
                      f"the image becomes {int(inputs['image_grid_thw'].prod()) // 4} image tokens):\n",
                      "````text", request.prompt, "````\n", "Target:\n", "````text", target, "````\n"]  # fmt: skip
    (out / "prompts.md").write_text("\n".join(lines))
    return {
        "test_samples": len(test),
        "prompt_tokens_mean": round(sum(prompt_tokens) / len(prompt_tokens), 1),
        "target_tokens_mean": round(sum(target_tokens) / len(target_tokens), 1),
        "target_tokens_max": max(target_tokens),
    }


def sft_precision() -> str:
    """bf16-mixed where the CPU computes in bf16 natively (AVX-512 BF16 or AMX), fp32 elsewhere: the same
    SFT step took 1.6 s against 2.3 s in fp32 on such a CPU, with the same held-out F1 (dev/LOG.md,
    session 7); on a CPU without them bf16 is emulated, and slower."""
    import torch

    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "bf16-mixed" if native else "fp32"


def sft(console: Console, out: Path, model_path: Path, steps: int, precision: str) -> Path:
    data = out / "synthref"
    cmd = [sys.executable, "-m", "rexthinker.sft", "--config", "recipes/configs/sft_demo.yaml", f"model.path={model_path}",
           f"data.train=[{data / 'train' / 'cot' / 'synthref'}]", f"data.val=[{data / 'val' / 'cot' / 'synthref'}]",
           f"trainer.output_dir={out / 'sft'}", f"trainer.max_steps={steps}", "trainer.log_every=1",
           f"learner.precision={precision}"]  # fmt: skip
    console.run(cmd, "sft (steps, then held-out evaluation)", steps, lambda: _last_step(out / "sft" / "metrics.jsonl"))
    return out / "sft" / "final"


def grpo(console: Console, out: Path, start: Path, steps: int, evaluated: bool) -> Path:
    """``evaluated``: the SFT stage's ``eval.json`` already scores ``start`` on the same validation
    samples, so GRPO skips its own start evaluation (the same greedy generations, about a minute)."""
    data = out / "synthref"
    cmd = [sys.executable, "-m", "rexthinker.grpo", "--config", "recipes/configs/grpo_demo.yaml", f"model.path={start}",
           f"data.train=[{data / 'train' / 'grpo' / 'synthref.parquet'}]", f"data.val=[{data / 'val' / 'cot' / 'synthref'}]",
           f"trainer.output_dir={out / 'grpo'}", f"trainer.max_steps={steps}", "trainer.log_every=1",
           f"eval.at_start={str(not evaluated).lower()}"]  # fmt: skip
    console.run(cmd, "grpo (evaluation, steps, evaluation)", steps, lambda: _last_step(out / "grpo" / "metrics.jsonl"))
    return out / "grpo" / "final"


def evaluate(console: Console, out: Path, checkpoints: dict[str, Path], lo: int, hi: int, n_test: int) -> Path:
    gt = out / "synthref" / "test" / "humanref" / "annotations.jsonl"
    preds = []
    for name, path in checkpoints.items():
        pred = out / "eval" / name / "predictions.jsonl"
        cmd = [sys.executable, "evaluation/run_humanref.py", "--model", str(path), "--gt", str(gt), "--out", str(out / "eval" / name),
               "--template", "train", "--min-pixels", str(lo), "--max-pixels", str(hi), "--name", name, "--no-charts"]  # fmt: skip
        console.run(cmd, f"eval {name} (test split)", n_test, lambda pred=pred: _lines(pred))
        preds.append(pred)
    cmd = [sys.executable, "evaluation/metric.py", "--gt_path", str(gt), "--pred_path", *map(str, preds),
           "--pred_names", *checkpoints, "--dump_path", str(out / "eval")]  # fmt: skip
    console.run(cmd, "metric", 1, lambda: 0)
    return out / "eval" / "comparison.md"


# --- the summary -----------------------------------------------------------------------------------
def _rates(result: dict | None) -> dict | None:
    """``format`` / ``f1`` / ``rejection`` (and per domain) of a quickeval result."""
    if result is None:
        return None

    def pick(r: dict) -> dict:
        return {"format": r.get("format"), "f1": r.get("accuracy_f1"), "rejection": r.get("rejection_acc")}

    return {**pick(result), "per_domain": {d: pick(r) for d, r in result.get("per_domain", {}).items()}}


def _baselines(result: dict | None) -> dict | None:
    """The trivial policies as one row: F1 of answering every hint box, rejection of answering none
    (a policy writes no trace, so it has no format rate)."""
    if result is None or not result.get("baselines"):
        return None
    every, none = result["baselines"]["all_boxes"], result["baselines"]["no_boxes"]
    domains = sorted(set(every.get("per_domain", {})) | set(none.get("per_domain", {})))
    per = {d: {"format": None, "f1": every.get("per_domain", {}).get(d, {}).get("accuracy_f1"),
               "rejection": none.get("per_domain", {}).get(d, {}).get("rejection_acc")} for d in domains}  # fmt: skip
    return {"format": None, "f1": every["accuracy_f1"], "rejection": none["rejection_acc"], "per_domain": per,
            "all_boxes": every, "no_boxes": none}  # fmt: skip


def _json_safe(value):
    """``value`` with NaN (a rate over no samples) written as null, so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _cell(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def results_table(rows: dict[str, dict | None]) -> list[str]:
    """One line per domain (and all), one column group per row of ``rows``: F1, or rejection
    accuracy for the rejection domain, and the format rate."""
    rows = {k: v for k, v in rows.items() if v is not None}
    domains = sorted({d for r in rows.values() for d in r.get("per_domain", {})}, key=lambda d: (d == "rejection", d))
    head = f"{'domain':<12}" + "".join(f"{name + ' F1/rej':>16}{'fmt':>7}" for name in rows)
    lines = [head, "-" * len(head)]
    for d in [*domains, "all"]:
        cells = []
        for r in rows.values():
            src = r if d == "all" else r.get("per_domain", {}).get(d, {})
            value = src.get("rejection") if d == "rejection" else src.get("f1")
            cells.append(f"{_cell(value):>16}{_cell(src.get('format')):>7}")
        lines.append(f"{d:<12}" + "".join(cells))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--model", default="demo-base", choices=["demo-base", *sorted(tiny.SPECS)],
                        help="demo-base: the shipped pre-trained small model (models/demo-base); else a random-weight build")
    parser.add_argument("--level", default="demo", help="SynthRef level of the data (synthref.LEVELS)")
    parser.add_argument("--synthref", nargs="*", default=[], metavar="key=value",
                        help="SynthRef settings over the level, e.g. trace_wants=true (data_tools synthref's overrides)")
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--val", type=int, default=200)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=3, help="samples whose prompt is written out")
    parser.add_argument("--stages", default="data,show,sft,grpo,eval", help="comma-separated subset of data,show,sft,grpo,eval")
    parser.add_argument("--sft-steps", type=int, default=450)  # ~11 min on 2 CPU cores, evaluation included (2026-11-30, session 5)
    parser.add_argument("--grpo-steps", type=int, default=10)
    parser.add_argument("--log", default=None, help="the full log (default: OUT/demo.log)")
    args = parser.parse_args()
    stages = set(args.stages.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    console = Console(Path(args.log) if args.log else out / "demo.log")
    console.say(f"rexthinker demo: stages {args.stages}; the full log is {console.log_path}")
    timings, facts = {}, {}

    what = "load the shipped pre-trained base (models/demo-base)" if args.model == "demo-base" else f"build or reuse the random '{args.model}'"
    t0 = console.stage(f"1. model: {what} Qwen2.5-VL checkpoint")
    with console.quiet():
        model_path, facts["model"] = build_model(args.model)
    console.say(facts["model"].pop("about"))
    timings["model"] = time.perf_counter() - t0

    lo, hi = facts["model"]["pixels"]
    rows = [("model", f"{args.model}, {facts['model']['params_M']} M params", timings["model"])]
    written = [model_path]
    if "data" in stages:
        t0 = console.stage("2. data: SynthRef in the HumanRef, HumanRef-CoT and GRPO-parquet formats")
        generate_data(console, out / "synthref", args, lo, hi)
        manifest = json.loads((out / "synthref" / "synthref.json").read_text())
        rows.append(("data", ", ".join(f"{k} {v}" for k, v in manifest.get("counts", {}).items()), time.perf_counter() - t0))
        written.append(out / "synthref")
    if "show" in stages:
        t0 = console.stage("3. show: sample grid and rendered prompts")
        with console.quiet():
            facts["show"] = show(out / "synthref", model_path, out, args.show)
        rows.append(("prompt", f"{facts['show']['prompt_tokens_mean']} tokens (mean, image included); target "
                     f"{facts['show']['target_tokens_mean']} mean / {facts['show']['target_tokens_max']} max", time.perf_counter() - t0))  # fmt: skip
        written += [out / "samples.png", out / "prompts.md"]
    checkpoints, results = {}, {}
    if "sft" in stages:
        precision = sft_precision()
        t0 = console.stage(f"4. SFT: {args.sft_steps} steps on SynthRef traces ({precision})")
        checkpoints["sft"] = sft(console, out, model_path, args.sft_steps, precision)
        e = json.loads((out / "sft" / "eval.json").read_text())
        results["baselines"], results["sft"] = _baselines(e), _rates(e)
        rows.append(("sft", f"val format {e['format']:.3f}, F1 {e['accuracy_f1']:.3f}, rejection {e['rejection_acc']:.3f}", time.perf_counter() - t0))
        written += [out / "sft" / "final", out / "sft" / "loss_curve.png"]
    if "grpo" in stages:
        t0 = console.stage(f"5. GRPO: {args.grpo_steps} steps from the SFT checkpoint")
        sft_eval = out / "sft" / "eval.json"
        checkpoints["grpo"] = grpo(console, out, out / "sft" / "final", args.grpo_steps, sft_eval.exists())
        start_eval = sft_eval if sft_eval.exists() else out / "grpo" / "eval_start.json"
        a, b = (json.loads(path.read_text()) for path in (start_eval, out / "grpo" / "eval_end.json"))
        results["grpo"] = _rates(b)
        rows.append(("grpo", f"val F1 {a['accuracy_f1']:.3f} -> {b['accuracy_f1']:.3f}, rejection {a['rejection_acc']:.3f} -> "
                     f"{b['rejection_acc']:.3f}", time.perf_counter() - t0))  # fmt: skip
        written += [out / "grpo" / "final", out / "grpo" / "reward_curves.png"]
    if "eval" in stages and checkpoints:
        t0 = console.stage("6. evaluate: HumanRef runner + metric on the test split")
        table = evaluate(console, out, checkpoints, lo, hi, args.test)
        rows.append(("eval", f"HumanRef metric table: {table}", time.perf_counter() - t0))
        written.append(table)

    console.stage("summary")
    width = max(len(r[1]) for r in rows)
    console.say(f"{'stage':<8} {'result':<{width}}  seconds")
    for name, result, seconds in rows:
        console.say(f"{name:<8} {result:<{width}}  {seconds:7.1f}")
    if results:
        console.say(f"\nHeld-out validation ({args.val} samples, default reward): F1 per domain (rejection accuracy "
                    "for the rejection domain) and format rate; baselines: every hint box (F1) / no box (rejection)")  # fmt: skip
        for line in results_table({"baselines": results.get("baselines"), "sft": results.get("sft"), "grpo": results.get("grpo")}):
            console.say(line)
    console.say("\nwrote:")
    for path in [*written, console.log_path]:
        console.say(f"  {path}")
    stages_out = [{"stage": n, "result": r, "seconds": round(s, 1)} for n, r, s in rows]
    summary = {**{k: results.get(k) for k in ("baselines", "sft", "grpo")}, "stages": stages_out, **facts}
    (out / "summary.json").write_text(json.dumps(_json_safe(summary), indent=2, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
