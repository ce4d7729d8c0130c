"""The demo: every stage of the pipeline on the embedded SynthRef task, on one CPU machine.

    make demo                                  # or: bash recipes/demo.sh [--out DIR] [--train N]

Stages: (1) build the ``small`` Qwen2.5-VL checkpoint (cached), (2) generate SynthRef in the three
on-disk formats through ``python -m data_tools synthref``, (3) show it: a PNG grid of test samples
with numbered hint boxes, and a markdown file with the exact model input (chat template applied)
and target of a few samples, read back through the library's readers, (4) SFT
(``python -m rexthinker.sft``), (5) GRPO from the SFT checkpoint (``python -m rexthinker.grpo``),
(6) evaluate both checkpoints on the test split with the HumanRef runner and metric, in one table.
Each stage calls the same entry point a user runs. Ends with a summary table and the paths it wrote.

    bash recipes/demo.sh --stages data,show        # the first stages only
    bash recipes/demo.sh --sft-steps 40 --grpo-steps 4   # a shorter run
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

from rexthinker.data.cot_tsv import CotTsvReader
from rexthinker.data.grpo_parquet import read_grpo_parquet
from rexthinker.data.humanref import read_humanref
from rexthinker.models import tiny
from rexthinker.prompts import build_messages, pixel_limits, target_text
from rexthinker.viz import render_grid


def stage(title: str):
    print(f"\n=== {title} ===", flush=True)
    return time.perf_counter()


def build_model(name: str) -> tuple[Path, dict]:
    from transformers import AutoConfig, AutoProcessor

    path = tiny.get(name)
    config = AutoConfig.from_pretrained(path)
    spec = tiny.SPECS[name]
    t, v = config.text_config, config.vision_config
    n_params = _count_params(path)
    print(f"{name}: {path}\n  text {t.num_hidden_layers}x{t.hidden_size}, vision {v.depth}x{v.hidden_size}, "
          f"vocab {len(AutoProcessor.from_pretrained(path).tokenizer)}, {n_params / 1e6:.2f} M parameters")  # fmt: skip
    return path, {"params_M": round(n_params / 1e6, 2), "pixels": (spec.min_pixels, spec.max_pixels)}


def _count_params(path: Path) -> int:
    from safetensors import safe_open

    total = 0
    for file in path.glob("*.safetensors"):
        with safe_open(str(file), "pt") as f:
            total += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
    return total


def generate_data(out: Path, args, min_pixels: int, max_pixels: int) -> None:
    cmd = [
        sys.executable, "-m", "data_tools", "synthref", "--out", str(out), "--seed", str(args.seed),
        "--train", str(args.train), "--val", str(args.val), "--test", str(args.test),
        "--min-pixels", str(min_pixels), "--max-pixels", str(max_pixels),
    ]  # fmt: skip
    print("$ python " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)


def show(data: Path, model_path: Path, out: Path, n_prompts: int) -> dict:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_path)
    lo, hi = pixel_limits(processor)
    test = read_humanref(data / "test" / "humanref" / "annotations.jsonl")
    grid = render_grid(test[:12], out / "samples.png", cols=4)
    print(f"wrote {out / 'samples.png'} ({grid.size[0]}x{grid.size[1]})")

    # The same samples through the other two formats: identical questions, identical model input.
    cot = CotTsvReader.from_prefix(data / "test" / "cot" / "synthref")
    grpo = read_grpo_parquet(data / "test" / "grpo" / "synthref.parquet", min_pixels=lo, max_pixels=hi)
    lines, prompt_tokens, target_tokens = ["# SynthRef: model input and target of a few test samples\n"], [], []
    for i, sample in enumerate(test):
        messages, info = build_messages(sample, lo, hi)
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = processor(text=[text], images=[messages[-1]["content"][0]["image"]], return_tensors="pt")
        target = target_text(sample, info)
        prompt_tokens.append(int(inputs["input_ids"].shape[1]))
        target_tokens.append(len(processor.tokenizer.encode(target, add_special_tokens=False)))
        same = build_messages(cot[i], lo, hi)[1] == info and build_messages(grpo[i], lo, hi)[1] == info
        if not same:
            raise SystemExit(f"sample {sample.id}: the three formats give different model inputs")
        if i < n_prompts:
            lines += [f"## {sample.id} ({sample.domain}/{sample.sub_domain})\n", "Model input (chat template applied; "
                      f"the image becomes {int(inputs['image_grid_thw'].prod()) // 4} image tokens):\n",
                      "````text", text, "````\n", "Target:\n", "````text", target, "````\n"]  # fmt: skip
    (out / "prompts.md").write_text("\n".join(lines))
    print(f"wrote {out / 'prompts.md'}")
    return {
        "test_samples": len(test),
        "prompt_tokens_mean": round(sum(prompt_tokens) / len(prompt_tokens), 1),
        "target_tokens_mean": round(sum(target_tokens) / len(target_tokens), 1),
        "target_tokens_max": max(target_tokens),
    }


def run(cmd: list[str]) -> None:
    print("$ " + " ".join(["python", *cmd[1:]]), flush=True)
    subprocess.run(cmd, check=True)


def sft(out: Path, model_path: Path, steps: int) -> Path:
    data = out / "synthref"
    run([sys.executable, "-m", "rexthinker.sft", "--config", "recipes/configs/sft_demo.yaml", f"model.path={model_path}",
         f"data.train=[{data / 'train' / 'cot' / 'synthref'}]", f"data.val=[{data / 'val' / 'cot' / 'synthref'}]",
         f"trainer.output_dir={out / 'sft'}", f"trainer.max_steps={steps}"])  # fmt: skip
    return out / "sft" / "final"


def grpo(out: Path, start: Path, steps: int) -> Path:
    data = out / "synthref"
    run([sys.executable, "-m", "rexthinker.grpo", "--config", "recipes/configs/grpo_demo.yaml", f"model.path={start}",
         f"data.train=[{data / 'train' / 'grpo' / 'synthref.parquet'}]", f"data.val=[{data / 'val' / 'cot' / 'synthref'}]",
         f"trainer.output_dir={out / 'grpo'}", f"trainer.total_steps={steps}"])  # fmt: skip
    return out / "grpo" / "final"


def evaluate(out: Path, checkpoints: dict[str, Path], lo: int, hi: int) -> Path:
    gt = out / "synthref" / "test" / "humanref" / "annotations.jsonl"
    preds = []
    for name, path in checkpoints.items():
        run([sys.executable, "evaluation/run_humanref.py", "--model", str(path), "--gt", str(gt), "--out", str(out / "eval" / name),
             "--template", "train", "--min-pixels", str(lo), "--max-pixels", str(hi), "--name", name, "--no-charts"])  # fmt: skip
        preds.append(out / "eval" / name / "predictions.jsonl")
    run([sys.executable, "evaluation/metric.py", "--gt_path", str(gt), "--pred_path", *map(str, preds),
         "--pred_names", *checkpoints, "--dump_path", str(out / "eval")])  # fmt: skip
    return out / "eval" / "comparison.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--model", default="small", choices=sorted(tiny.SPECS))
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--val", type=int, default=200)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=3, help="samples whose prompt is written out")
    parser.add_argument("--stages", default="data,show,sft,grpo,eval", help="comma-separated subset of data,show,sft,grpo,eval")
    parser.add_argument("--sft-steps", type=int, default=230)  # about 8 minutes on 2 CPU cores
    parser.add_argument("--grpo-steps", type=int, default=10)
    args = parser.parse_args()
    stages = set(args.stages.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timings, facts = {}, {}

    t0 = stage(f"1. model: build or reuse the '{args.model}' Qwen2.5-VL checkpoint")
    model_path, facts["model"] = build_model(args.model)
    timings["model"] = time.perf_counter() - t0

    lo, hi = facts["model"]["pixels"]
    rows = [("model", f"{args.model}, {facts['model']['params_M']} M params", timings["model"])]
    written = [model_path]
    if "data" in stages:
        t0 = stage("2. data: SynthRef in the HumanRef, HumanRef-CoT and GRPO-parquet formats")
        generate_data(out / "synthref", args, lo, hi)
        manifest = json.loads((out / "synthref" / "synthref.json").read_text())
        rows.append(("data", ", ".join(f"{k} {v}" for k, v in manifest.get("counts", {}).items()), time.perf_counter() - t0))
        written.append(out / "synthref")
    if "show" in stages:
        t0 = stage("3. show: sample grid and rendered prompts")
        facts["show"] = show(out / "synthref", model_path, out, args.show)
        rows.append(("prompt", f"{facts['show']['prompt_tokens_mean']} tokens (mean, image included); target "
                     f"{facts['show']['target_tokens_mean']} mean / {facts['show']['target_tokens_max']} max", time.perf_counter() - t0))  # fmt: skip
        written += [out / "samples.png", out / "prompts.md"]
    checkpoints = {}
    if "sft" in stages:
        t0 = stage(f"4. SFT: {args.sft_steps} steps on SynthRef traces")
        checkpoints["sft"] = sft(out, model_path, args.sft_steps)
        e = json.loads((out / "sft" / "eval.json").read_text())
        rows.append(("sft", f"val format {e['format']:.3f}, F1 {e['accuracy_f1']:.3f}, rejection {e['rejection_acc']:.3f}", time.perf_counter() - t0))
        written += [out / "sft" / "final", out / "sft" / "loss_curve.png"]
    if "grpo" in stages:
        t0 = stage(f"5. GRPO: {args.grpo_steps} steps from the SFT checkpoint")
        checkpoints["grpo"] = grpo(out, out / "sft" / "final", args.grpo_steps)
        a, b = (json.loads((out / "grpo" / f"eval_{t}.json").read_text()) for t in ("start", "end"))
        rows.append(("grpo", f"val F1 {a['accuracy_f1']:.3f} -> {b['accuracy_f1']:.3f}, rejection {a['rejection_acc']:.3f} -> "
                     f"{b['rejection_acc']:.3f}", time.perf_counter() - t0))  # fmt: skip
        written += [out / "grpo" / "final", out / "grpo" / "reward_curves.png"]
    if "eval" in stages and checkpoints:
        t0 = stage("6. evaluate: HumanRef runner + metric on the test split")
        table = evaluate(out, checkpoints, lo, hi)
        rows.append(("eval", f"comparison table: {table}", time.perf_counter() - t0))
        written.append(table)

    print("\n=== summary ===")
    width = max(len(r[1]) for r in rows)
    print(f"{'stage':<8} {'result':<{width}}  seconds")
    for name, result, seconds in rows:
        print(f"{name:<8} {result:<{width}}  {seconds:7.1f}")
    print("\nwrote:")
    for path in written:
        print(f"  {path}")
    stages_out = [{"stage": n, "result": r, "seconds": round(s, 1)} for n, r, s in rows]
    (out / "summary.json").write_text(json.dumps({"stages": stages_out, **facts}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
