"""One prepared GPU check: the GPU tests, the learner at real sizes, and the stages on the small model.

    bash scripts/gpu_check.sh --out outputs/gpu_check            # one GPU, at most 450 s of parts (~8 min)
    bash scripts/gpu_check.sh --dry-run --out /tmp/gpu_check     # CPU: tiny shapes, the same code paths

Each part runs in a subprocess of its own under its own time limit (``--budget-s`` splits 450 s as
90 / 240 / 120; ``--limit learner=180`` sets one), writing ``OUT/<part>.json`` as it goes, so a
part that is killed still reports what it measured:

1. ``tests``: ``python -m pytest -m gpu -q tests/gpu`` (bf16 generation, CUDA vs CPU logits);
   skipped without CUDA.
2. ``learner``: Qwen2.5-VL-3B and -7B built from their published config numbers (:data:`ARCHS`),
   random bf16 weights made straight on the GPU, vision tower and projector frozen
   (``models.load.freeze``), trained by the project's GRPO update (:func:`rexthinker.grpo.update.update`,
   ``Learner`` single, gradient checkpointing, AdamW) on the released recipe's shapes: one prompt
   with a 640x480 image (a RefCOCOg-sized COCO image: 391 image tokens at the recipe's pixel limits)
   and 16 responses of 4096 tokens, in the recipe's plain layout (``share_prompts: false``, since
   it checkpoints). A sweep of ``algorithm.micro_batch_tokens`` (the recipe's 32k among them);
   tokens/s, MFU (EasyR1's formula, :func:`model_flops`) and peak memory per budget, an OOM
   recorded as such.
3. ``stages``: the ``small`` model through SynthRef data, a few SFT steps (``python -m
   rexthinker.sft``), a few GRPO steps in-process with transformers rollouts (``python -m
   rexthinker.grpo ... resources.mode=local rollout.backend=hf``), and the rollout-vs-learner
   log-prob parity in the compute dtype.

``--dry-run`` (or no CUDA) uses the ``tiny`` architecture and shapes, 1-2 steps: seconds, not
minutes. Writes ``OUT/gpu_report.json`` and ``OUT/gpu_report.md`` and prints one line per part.
Imports nothing of ray, vllm, deepspeed, datasets, trl, qwen_vl_utils or wandb.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMITS = {"tests": 90, "learner": 240, "stages": 120}  # seconds; --budget-s scales them
PEAK_TFLOPS = 989.0  # H100/H200 SXM bf16 dense, the spec (EasyR1's figure for H100)

VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14, spatial_merge_size=2,
              temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31])  # fmt: skip
QWEN_IDS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653, pad_token_id=151643,
                eos_token_id=151645)  # fmt: skip
# The config.json of Qwen/Qwen2.5-VL-{3B,7B}-Instruct (mrope_section [16, 24, 24], rope_theta 1e6).
ARCHS = {
    "Qwen2.5-VL-3B": dict(text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                                    num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, mrope_section=[16, 24, 24]),
                          vision=VISION, ids=QWEN_IDS),
    "Qwen2.5-VL-7B": dict(text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                                    num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False, mrope_section=[16, 24, 24]),
                          vision=VISION, ids=QWEN_IDS),
}  # fmt: skip


@dataclass(frozen=True)
class Workload:
    """One GRPO update's shapes: ``responses`` of one prompt (text + one image), all full length."""

    image: tuple[int, int]  # width, height before the processor's resize
    min_pixels: int
    max_pixels: int
    text_tokens: int  # the prompt's text (system prompt, hint list, question)
    response_tokens: int
    responses: int
    budgets: tuple[int, ...]  # the sweep of algorithm.micro_batch_tokens (the recipe's among them)


# grpo_refcocog.yaml: pixels 12544..1003520, n 16, max_new_tokens 4096, micro_batch_tokens 32768.
REAL = Workload((640, 480), 12544, 1003520, 300, 4096, 16, (8192, 16384, 32768, 65536))
DRY = Workload((640, 480), 3136, 50176, 24, 40, 4, (160, 320, 640))


def tiny_arch(name: str) -> dict:
    """A tiny spec's dimensions in :data:`ARCHS`' form (token ids at the top of its vocabulary)."""
    from rexthinker.models.tiny import SPECS

    s, v = SPECS[name], SPECS[name].vocab_size
    text = dict(hidden_size=s.hidden_size, intermediate_size=s.intermediate_size, num_hidden_layers=s.num_layers,
                num_attention_heads=s.num_heads, num_key_value_heads=s.num_kv_heads, vocab_size=v,
                tie_word_embeddings=s.tie_word_embeddings, mrope_section=list(s.mrope_section))  # fmt: skip
    vision = dict(VISION, depth=s.vision_depth, hidden_size=s.vision_hidden, intermediate_size=s.vision_intermediate,
                  num_heads=s.vision_heads, fullatt_block_indexes=list(s.fullatt_block_indexes))  # fmt: skip
    ids = dict(image_token_id=v - 1, video_token_id=v - 2, vision_start_token_id=v - 4, vision_end_token_id=v - 3, pad_token_id=v - 5,
               eos_token_id=v - 6)  # fmt: skip
    return dict(text=text, vision=vision, ids=ids)


def model_flops(text: dict, seqlens: list[int]) -> float:
    """Model FLOPs of one forward + backward over sequences of these lengths, EasyR1's / verl's
    formula (``verl/utils/flops_counter.py``, ``_estimate_llama_flops``), language model only:
    ``6 * N * sum(s) + 12 * sum(s^2) * head_dim * heads * layers`` with
    ``N = layers * (3 * d * d_ff + d * (q + k + v + o widths)) + 2 * vocab * d``. Gradient-checkpoint
    recompute and the frozen vision tower are not counted."""
    d, layers, heads, kv = text["hidden_size"], text["num_hidden_layers"], text["num_attention_heads"], text["num_key_value_heads"]
    head_dim = d // heads
    n = layers * (3 * d * text["intermediate_size"] + d * (2 * heads + 2 * kv) * head_dim) + 2 * text["vocab_size"] * d
    return 6 * n * sum(seqlens) + 12 * sum(s * s for s in seqlens) * head_dim * heads * layers


FLOPS_FORMULA = ("6*N*sum(s) + 12*sum(s^2)*head_dim*heads*layers, N = layers*(3*d*d_ff + d*(2*heads+2*kv_heads)*head_dim) "
                 "+ 2*vocab*d (EasyR1/verl flops_counter; LM only, no recompute, no vision tower)")  # fmt: skip


# --- the record a part writes as it goes -----------------------------------------------------------
class Record(dict):
    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def save(self, **values) -> None:
        self.update(values)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self, indent=1, default=str) + "\n")
        tmp.replace(self.path)


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _sig(x: float) -> float:
    return float(f"{x:.4g}")


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


# --- part 1 ------------------------------------------------------------------------------------------
def part_tests(rec: Record, dry: bool) -> None:
    import torch

    if not torch.cuda.is_available():
        return rec.save(status="skipped (no CUDA)")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-s", "tests/gpu"], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    out = proc.stdout + proc.stderr
    summary = next((line for line in reversed(out.splitlines()) if " in " in line and ("passed" in line or "failed" in line)), "no summary")
    rec.save(summary=summary.strip("= "), logit_diffs=[line for line in out.splitlines() if "max |logit" in line], tail=_tail(out))
    rec.save(status="passed" if proc.returncode == 0 else f"failed ({rec['summary']})")


# --- part 2 ------------------------------------------------------------------------------------------
def build_model(arch: dict, device, dtype):
    """Qwen2.5-VL with random weights made directly on ``device`` (no CPU copy, no download)."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    t, ids = dict(arch["text"]), arch["ids"]
    mrope = t.pop("mrope_section")
    config = Qwen2_5_VLConfig(
        text_config=dict(t, max_position_embeddings=128000, rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope},
                         bos_token_id=ids["pad_token_id"], pad_token_id=ids["pad_token_id"], eos_token_id=ids["eos_token_id"]),
        vision_config=dict(arch["vision"], out_hidden_size=t["hidden_size"]),
        tie_word_embeddings=t["tie_word_embeddings"], **{k: v for k, v in ids.items() if k not in ("pad_token_id", "eos_token_id")},
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device):
        return Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation="sdpa")


def workload_sequences(arch: dict, w: Workload):
    """``w.responses`` token sequences sharing one prompt: random text ids around the vision block of
    a ``w.image`` image resized by the processor's rule (``smart_resize``), random pixels."""
    import torch
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    from rexthinker.grpo.experience import EncodedPrompt, TokenSequence

    v, ids = arch["vision"], arch["ids"]
    factor = v["patch_size"] * v["spatial_merge_size"]
    h, wd = smart_resize(w.image[1], w.image[0], factor, w.min_pixels, w.max_pixels)
    grid = torch.tensor([[1, h // v["patch_size"], wd // v["patch_size"]]])
    image_tokens = int(grid.prod()) // v["spatial_merge_size"] ** 2
    g = torch.Generator().manual_seed(0)
    text_ids = min(ids.values())  # ordinary tokens lie below the special ones

    def text(n):
        return torch.randint(0, text_ids, (n,), generator=g)

    half = w.text_tokens // 2
    input_ids = torch.cat([text(half), torch.tensor([ids["vision_start_token_id"]]), torch.full((image_tokens,), ids["image_token_id"]),
                           torch.tensor([ids["vision_end_token_id"]]), text(w.text_tokens - half)])  # fmt: skip
    types = (input_ids == ids["image_token_id"]).long()
    patch_dim = 3 * v["temporal_patch_size"] * v["patch_size"] ** 2
    prompt = EncodedPrompt(input_ids, types, torch.randn(int(grid.prod()), patch_dim, generator=g), grid)
    seqs = [TokenSequence(prompt, text(w.response_tokens).tolist()) for _ in range(w.responses)]
    return seqs, {"image": f"{w.image[0]}x{w.image[1]} -> {wd}x{h}", "image_tokens": image_tokens, "prompt_tokens": input_ids.numel()}


def timed_update(learner, seqs, arch: dict, budget: int) -> dict:
    """One GRPO update (forward, backward, AdamW step) at this micro-batch budget, in the recipe's
    layout (``share_prompts: false``: it checkpoints, which drops the shared layout's prompt cache):
    time, model FLOP/s and, on CUDA, MFU and peak memory."""
    import torch

    from rexthinker.grpo.config import AlgorithmConfig
    from rexthinker.grpo.experience import micro_batches_by_tokens
    from rexthinker.grpo.update import update

    alg = AlgorithmConfig(micro_batch_tokens=budget, share_prompts=False, kl_coef=0.0)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    lengths = [s.length for s in seqs]
    micro = micro_batches_by_tokens(lengths, budget)
    advantages = torch.randn(len(seqs), generator=torch.Generator().manual_seed(1))
    _sync()
    start = time.perf_counter()
    update(learner, None, seqs, advantages, alg, pad_id=arch["ids"]["pad_token_id"], step=0, loss_scale_tokens=max(lengths))
    _sync()
    seconds = time.perf_counter() - start
    flops = model_flops(arch["text"], lengths)
    row = {"budget": budget, "micro_batches": len(micro),
           "tokens": sum(lengths), "step_s": _sig(seconds), "tokens_per_s": _sig(sum(lengths) / seconds),
           "model_tflops": _sig(flops / seconds / 1e12)}  # fmt: skip
    if cuda:
        row.update(mfu=round(flops / seconds / (PEAK_TFLOPS * 1e12), 4), peak_mem_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2))
    return row


def measure(learner, seqs, arch, budget) -> dict:
    """:func:`timed_update`, or the error it raised (an OOM named as such), memory released after."""
    import torch

    try:
        row = timed_update(learner, seqs, arch, budget)
    except Exception as exc:  # an OOM, or a layout that fails: recorded, the sweep goes on
        oom = isinstance(exc, torch.OutOfMemoryError)
        row = {"budget": budget, "error": "OOM" if oom else f"{type(exc).__name__}: {exc}"[:300]}
    learner.optimizer.zero_grad(set_to_none=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row


def matmul_tflops(n: int) -> float:
    import torch

    device, dtype = ("cuda", torch.bfloat16) if torch.cuda.is_available() else ("cpu", torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync()
    start, reps = time.perf_counter(), 10
    for _ in range(reps):
        a @ b
    _sync()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def part_learner(rec: Record, dry: bool) -> None:
    import torch

    from rexthinker.models.load import freeze
    from rexthinker.train.learner import Learner, LearnerConfig, OptimConfig, resolve_precision

    cuda = torch.cuda.is_available()
    archs, w = ({"tiny": tiny_arch("tiny")}, DRY) if dry or not cuda else (ARCHS, REAL)
    dtype, n = resolve_precision("auto"), 8192 if cuda else 256
    rec.save(workload=asdict(w), flops_formula=FLOPS_FORMULA, peak_tflops=PEAK_TFLOPS if cuda else None, matmul_n=n,
             matmul_tflops=_sig(matmul_tflops(n)), dtype=str(dtype).removeprefix("torch."), models={})  # fmt: skip
    for name, arch in archs.items():
        result = rec["models"][name] = {}
        start = time.perf_counter()
        model = build_model(arch, "cuda" if cuda else "cpu", dtype)
        freeze(model, freeze_vision=True, freeze_projector=True, freeze_llm=False)  # the recipes' freeze_vision / freeze_projector
        learner = Learner(model, OptimConfig(lr=1e-6, scheduler="constant", warmup_ratio=0.0),
                          LearnerConfig(strategy="single", gradient_checkpointing=True), total_steps=100)  # fmt: skip
        params = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        seqs, shape = workload_sequences(arch, w)
        result.update(params=params, trainable=trainable, build_s=round(time.perf_counter() - start, 1), **shape)
        rec.save()
        result["warm_up"] = measure(learner, seqs[:2], arch, w.budgets[0])  # kernels and allocator, not reported
        result["sweep"] = []
        for budget in w.budgets:
            result["sweep"].append(measure(learner, seqs, arch, budget))
            rec.save()
        fits = [r for r in result["sweep"] if "error" not in r]
        result["best"] = max(fits, key=lambda r: r["tokens_per_s"])["budget"] if fits else None
        rec.save()
        del learner, model
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    failed = [n for n, r in rec["models"].items() if r["best"] is None]
    rec.save(status=f"failed (no budget fits: {', '.join(failed)})" if failed else "measured")


# --- part 3 ------------------------------------------------------------------------------------------
def _run(cmd: list[str], log: Path) -> tuple[float, str | None]:
    """Run an entry point with its output in ``log``; (seconds, None) or (seconds, the error)."""
    start = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    seconds = round(time.perf_counter() - start, 1)
    return seconds, None if rc == 0 else f"exit {rc}: {_tail(log.read_text(errors='replace'), 1)}"


def _metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def logprob_parity(model_path: Path, device: str, new_tokens: int) -> dict:
    """Greedy generations of two SynthRef prompts in the compute dtype: the log-prob of each
    generated token from ``generate``'s own step logits (the KV-cache decode a transformers rollout
    runs; ``HFRollout`` returns no log-probs) against the learner's forward of prompt + response
    (:func:`rexthinker.grpo.update.response_logprobs`), in both layouts."""
    import torch

    from rexthinker.data import synthref
    from rexthinker.generation import render_request
    from rexthinker.grpo.config import AlgorithmConfig
    from rexthinker.grpo.experience import TokenSequence, encode_prompt
    from rexthinker.grpo.update import response_logprobs
    from rexthinker.models.families import model_family
    from rexthinker.models.load import load_policy
    from rexthinker.rollout.base import forbidden_token_ids
    from rexthinker.train.learner import resolve_precision

    dtype = resolve_precision("auto")
    model, processor = load_policy(str(model_path))
    model.to(device=device, dtype=dtype).eval()
    family = model_family(model_path)
    tok = processor.tokenizer
    seqs, rollout = [], []
    for sample in synthref.generate(2, seed=0, split="test"):
        request = render_request(sample, processor, family=family)
        prompt = encode_prompt(processor, request.prompt, request.image)
        inputs = processor(text=[request.prompt], images=[request.image], return_tensors="pt").to(device)
        with torch.no_grad():
            out = model.generate(**inputs, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens, output_logits=True,
                                 return_dict_in_generate=True, suppress_tokens=forbidden_token_ids(tok), pad_token_id=tok.pad_token_id)  # fmt: skip
        ids = out.sequences[0, inputs["input_ids"].shape[1] :]
        logits = torch.stack(out.logits, dim=1)[0].float()
        rollout.append(torch.log_softmax(logits, -1).gather(-1, ids[:, None])[:, 0].cpu())
        seqs.append(TokenSequence(prompt, ids.tolist()))
    result = {"dtype": str(dtype).removeprefix("torch."), "tokens": sum(len(s.response_ids) for s in seqs)}
    for share in (True, False):
        learner = response_logprobs(model, seqs, AlgorithmConfig(share_prompts=share), tok.pad_token_id)
        diff = torch.cat([(a - b).abs() for a, b in zip(rollout, learner)])
        result["shared prompt" if share else "plain"] = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean())}
    return result


def part_stages(rec: Record, dry: bool) -> None:
    import torch

    from rexthinker.models import tiny

    cuda = torch.cuda.is_available()
    name, sft_steps, grpo_steps, new_tokens = ("tiny", 2, 1, 16) if dry or not cuda else ("small", 10, 2, 128)
    out = rec.path.parent / "stages"
    out.mkdir(exist_ok=True)
    spec = tiny.SPECS[name]
    start = time.perf_counter()
    model = tiny.get(name)
    rec.save(model=name, stages={"model": {"seconds": round(time.perf_counter() - start, 1), "path": str(model)}})
    py = sys.executable
    data = out / "synthref"
    seconds, error = _run([py, "-m", "data_tools", "synthref", "--out", str(data), "--train", "16", "--val", "4", "--test", "4",
                           "--seed", "0", "--min-pixels", str(spec.min_pixels), "--max-pixels", str(spec.max_pixels),
                           "--level", "demo"], out / "data.log")  # fmt: skip
    rec["stages"]["data"] = {"seconds": seconds, "error": error} if error else {"seconds": seconds, "samples": 24}
    rec.save()

    common = [f"model.path={model}", "data.val=[]", "eval.enabled=false", "learner.precision=auto", "trainer.log_every=1",
              "trainer.report_to=[console,jsonl]"]  # fmt: skip
    sft_out = out / "sft"
    seconds, error = _run([py, "-m", "rexthinker.sft", "--config", "recipes/configs/sft_demo.yaml", *common,
                           f"data.train=[{data / 'train' / 'cot' / 'synthref'}]", f"trainer.output_dir={sft_out}",
                           f"trainer.max_steps={sft_steps}"], out / "sft.log")  # fmt: skip
    rows = _metrics(sft_out / "metrics.jsonl")
    timed = rows[1:] or rows  # the first step compiles and warms up
    sft = {"seconds": seconds, "steps": len(rows)}
    if timed:
        sft["tokens_per_s"] = round(sum(r["tokens_per_s"] for r in timed) / len(timed), 1)
        sft["step_s"] = round(sum(r["step_time_s"] for r in timed) / len(timed), 3)
    rec["stages"]["sft"] = {**sft, "error": error} if error else sft
    rec.save()

    grpo_out = out / "grpo"
    seconds, error = _run([py, "-m", "rexthinker.grpo", "--config", "recipes/configs/grpo_demo.yaml", *common,
                           "resources.mode=local", "rollout.backend=hf", "rollout.n=4", "algorithm.prompts_per_step=4",
                           f"rollout.max_new_tokens={new_tokens}", f"data.train=[{data / 'train' / 'grpo' / 'synthref.parquet'}]",
                           f"trainer.output_dir={grpo_out}", f"trainer.max_steps={grpo_steps}"], out / "grpo.log")  # fmt: skip
    rows = _metrics(grpo_out / "metrics.jsonl")
    grpo = {"seconds": seconds, "steps": len(rows)}
    if rows:
        keys = sorted({k for r in rows for k in r if k.startswith("time/") or k in ("samples_per_s", "rollout/tokens_per_s")})
        grpo["mean"] = {k: round(sum(r.get(k, 0.0) for r in rows) / len(rows), 3) for k in keys}
    rec["stages"]["grpo"] = {**grpo, "error": error} if error else grpo
    rec.save()

    start = time.perf_counter()
    try:
        parity = logprob_parity(model, "cuda" if cuda else "cpu", new_tokens)
    except Exception as exc:  # recorded; the part fails below
        parity = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    rec["stages"]["parity"] = {"seconds": round(time.perf_counter() - start, 1), **parity}
    failed = [f"{k}: {v['error']}" for k, v in rec["stages"].items() if "error" in v]
    rec.save(status=f"failed ({'; '.join(failed)})" if failed else "measured")


PARTS = {"tests": part_tests, "learner": part_learner, "stages": part_stages}


# --- the driver --------------------------------------------------------------------------------------
def run_part(name: str, out: Path, limit: float, dry: bool) -> dict:
    """The part in a subprocess (its own session, so a timeout kills its children too)."""
    path = out / f"{name}.json"
    path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "rexthinker.gpu_check", "--part", name, "--out", str(out)] + (["--dry-run"] if dry else [])
    start = time.perf_counter()
    with (out / f"{name}.log").open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    record = json.loads(path.read_text()) if path.exists() else {}
    if rc is None:
        record["status"] = f"failed (timed out after {limit:g} s)"
    elif rc != 0:
        record["status"] = f"failed (exit {rc}: {_tail((out / f'{name}.log').read_text(errors='replace'), 1)})"
    record.setdefault("status", "failed (no status written)")
    return {"part": name, "limit_s": limit, "seconds": round(time.perf_counter() - start, 1), **record}


def summary_line(r: dict) -> str:
    """``<part>: <status> — <the headline numbers>``."""
    facts = []
    if r["part"] == "tests" and "summary" in r:
        facts.append(r["summary"])
    for name, m in r.get("models", {}).items():
        best = next((s for s in m.get("sweep", []) if s["budget"] == m.get("best")), None)
        if best:
            mfu = f", MFU {best['mfu']:.1%}, peak {best['peak_mem_gib']} GiB" if "mfu" in best else ""
            facts.append(f"{name}: {best['tokens_per_s']:.0f} tok/s at {best['budget']} tokens{mfu}")
    for name, s in r.get("stages", {}).items():
        if "tokens_per_s" in s:
            facts.append(f"sft {s['tokens_per_s']:.0f} tok/s")
        elif "plain" in s:
            facts.append(f"log-prob parity max {s['plain']['max_abs']:.1e}")
    return f"{r['part']}: {r['status']} ({r['seconds']:g} s)" + (" — " + "; ".join(facts) if facts else "")


def _facts(values: dict) -> str:
    """``key value, ...`` with nested dicts flattened and floats to 4 significant figures."""
    return ", ".join(f"{k} {_facts(v) if isinstance(v, dict) else f'{v:.4g}' if isinstance(v, float) else v}" for k, v in values.items())


def markdown(report: dict) -> str:
    lines = ["# GPU check", "", f"{report['device']}; {'dry run' if report['dry_run'] else 'full run'}, {report['seconds']:g} s.", ""]
    lines += [f"- {summary_line(r)}" for r in report["parts"]]
    for r in report["parts"]:
        lines += ["", f"## {r['part']}: {r['status']}", ""]
        if r["part"] == "tests":
            lines += [f"- {d}" for d in r.get("logit_diffs", [])] + (["", "```", r["tail"], "```"] if "tail" in r else [])
        if r["part"] == "learner" and "workload" in r:
            w = r["workload"]
            lines += [f"Workload per update: one prompt ({w['text_tokens']} text tokens + one {w['image'][0]}x{w['image'][1]} image at "
                      f"pixels {w['min_pixels']}..{w['max_pixels']}) and {w['responses']} responses of {w['response_tokens']} tokens; "
                      f"Learner `single`, {r['dtype']}, gradient checkpointing, vision tower and projector frozen, one update "
                      f"(forward, backward, AdamW step) per budget after a warm-up update of 2 responses, no reference model.",  # fmt: skip
                      "", f"Model FLOPs per update: {r['flops_formula']}. MFU = model FLOPs / time / "
                      + (f"{r['peak_tflops']:g} TFLOP/s (bf16 dense spec)" if r["peak_tflops"] else "peak (CUDA only)")
                      + f"; a {r['matmul_n']}^3 matmul measured here: {r['matmul_tflops']} TFLOP/s."]  # fmt: skip
            for name, m in r["models"].items():
                lines += ["", f"### {name}: {m.get('params', 0) / 1e9:.3g} B parameters ({m.get('trainable', 0) / 1e9:.3g} B trainable), "
                          f"built in {m.get('build_s')} s; image {m.get('image')}, {m.get('image_tokens')} image tokens, "
                          f"prompt {m.get('prompt_tokens')} tokens", "",
                          "| micro_batch_tokens | micro-batches | tokens | s/update | tokens/s | model TFLOP/s | MFU | peak GiB |",
                          "|---|---|---|---|---|---|---|---|"]  # fmt: skip
                for s in m.get("sweep", []):
                    if "error" in s:
                        lines.append(f"| {s['budget']} | {s['error']} ||||||")
                    else:
                        lines.append(f"| {s['budget']} | {s['micro_batches']} | {s['tokens']} | {s['step_s']} | "
                                     f"{s['tokens_per_s']} | {s['model_tflops']} | {s.get('mfu', '–')} | {s.get('peak_mem_gib', '–')} |")  # fmt: skip
                lines += ["", f"Fastest budget that fits: {m.get('best')}. The `single` learner keeps weights, gradients and AdamW "
                          f"states in {r['dtype']}; fp32 master weights and states (16 bytes per trainable parameter, as ZeRO / FSDP "
                          f"mixed precision keeps them) would need {m.get('trainable', 0) * 16 / 2**30:.0f} GiB before activations."]  # fmt: skip
            lines += ["", "EasyR1's published actor MFU (assets/baselines.md, v0.3.0, Geometry3k, 8 x H100): 7B 13.6-19.2% (AMP), "
                      "13.9% (bf16); 3B 6.3%. Their runs shard over 8 GPUs (FSDP) with padding-free attention; this is one GPU, padded."]  # fmt: skip
        if r["part"] == "stages":
            lines += [f"- {k}: {_facts(v)}" for k, v in r.get("stages", {}).items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the reports and each part's JSON and log")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes and steps (what CPU CI runs)")
    parser.add_argument("--budget-s", type=float, default=sum(LIMITS.values()), help="all parts' limits together, split 90:240:120")
    parser.add_argument("--limit", action="append", default=[], metavar="PART=S", help="one part's limit in seconds")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of " + ",".join(PARTS))
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # run one part in this process
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.part:
        PARTS[args.part](Record(out / f"{args.part}.json"), args.dry_run)
        return 0

    import torch

    limits = {k: v * args.budget_s / sum(LIMITS.values()) for k, v in LIMITS.items()}
    limits.update({k: float(v) for k, v in (item.split("=") for item in args.limit)})
    start, parts = time.perf_counter(), []
    for name in args.parts.split(","):
        parts.append(run_part(name, out, limits[name], args.dry_run))
        print(summary_line(parts[-1]), flush=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    report = {"device": device, "dry_run": args.dry_run, "seconds": round(time.perf_counter() - start, 1), "parts": parts}
    (out / "gpu_report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "gpu_report.md").write_text(markdown(report))
    print(f"wrote {out / 'gpu_report.json'} and {out / 'gpu_report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
