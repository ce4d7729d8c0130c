"""benchmarks/grpo_vs_trl.py (``make bench``): TRL's rows and reward wrapper against our prompt builder
and reward, the TRL settings against the GRPO config, the results table, and (slow) both sides end
to end on the tiny model in subprocesses."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rexthinker.contracts.answer import answer_json
from rexthinker.data.synthref import generate
from tests.scripts.helpers import REPO

SCRIPT = REPO / "benchmarks" / "grpo_vs_trl.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("grpo_vs_trl", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_processor(tiny_model_path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_path)


def workload(bench, tiny_model_path, **changes):
    values = dict(model=str(tiny_model_path), data="unused.parquet", prompts=2, n=2, max_new_tokens=16, warmup=0, steps=1, seed=0)
    return bench.Workload(**{**values, **changes})


def test_trl_rows_render_like_our_prompts_and_the_wrapped_reward_scores_like_ours(bench, tiny_model_path, tiny_processor):
    from trl.trainer.utils import get_callable_name

    cfg = workload(bench, tiny_model_path).config()
    samples = generate(6, seed=3)
    rows = bench.trl_rows(samples, tiny_processor, cfg)  # raises if TRL's chat template renders a row differently
    assert [r["prompt"][0]["role"] for r in rows] == ["system"] * 6
    assert all(isinstance(m["content"], str) for r in rows for m in r["prompt"])

    reward = bench.TRLReward(cfg.reward.function, **cfg.reward.kwargs)
    assert get_callable_name(reward) == "referring"
    right = [f"<think>x</think><answer>{answer_json(r['solution_boxes'], 'person')}</answer>" for r in rows]
    texts = [*right, "no answer at all"]
    columns = {k: [r[k] for r in rows] + [rows[0][k]] for k in ("solution_boxes", "hint_boxes", "image")}
    # TRL's call: conversational completions, dataset columns, and its own extras.
    scores = reward(prompts=[r["prompt"] for r in rows] + [rows[0]["prompt"]],
                    completions=[[{"role": "assistant", "content": t}] for t in texts], completion_ids=[[1]] * len(texts),
                    trainer_state=None, log_extra=print, log_metric=print, **columns)  # fmt: skip
    assert scores == pytest.approx([1.0] * 6 + [0.0])
    ours = bench.load_reward(cfg.reward.function)(texts, solution_boxes=columns["solution_boxes"])["overall"]
    assert scores == ours
    assert reward(None, texts, **columns) == ours  # plain-text completions too


def test_trl_settings_match_the_grpo_config(bench, tiny_model_path, tmp_path):
    from trl import GRPOConfig as TRLConfig

    w = workload(bench, tiny_model_path, prompts=4, n=4, max_new_tokens=32, warmup=1, steps=2)
    cfg = w.config()
    assert bench.micro_batch(16, 400, cfg.algorithm.micro_batch_tokens) == 16
    assert bench.micro_batch(64, 650, 8192) == 8 and bench.micro_batch(64, 10_000, 8192) == 1
    args = TRLConfig(**bench.trl_settings(cfg, w, 8, tmp_path, [11, 12]))
    assert args.generation_batch_size == 16 and args.steps_per_generation == args.gradient_accumulation_steps == 2
    assert (args.num_generations, args.max_completion_length, args.max_steps) == (4, 32, 3)
    assert (args.learning_rate, args.beta, args.epsilon, args.epsilon_high) == (cfg.optim.lr, cfg.algorithm.kl_coef, 0.2, 0.3)
    assert (args.temperature, args.top_p, args.weight_decay) == (cfg.rollout.temperature, cfg.rollout.top_p, cfg.optim.weight_decay)
    assert not args.use_vllm and not args.bf16 and not args.gradient_checkpointing
    assert args.generation_kwargs == {"suppress_tokens": [11, 12]}
    with pytest.raises(ValueError, match="does not divide"):
        bench.trl_settings(cfg, w, 5, tmp_path, [])
    with pytest.raises(ValueError, match="implement alike"):
        bench.trl_settings(bench.load_config(type(cfg), bench.CONFIG, [*w.overrides, "algorithm.ppo_epochs=2"]), w, 8, tmp_path, [])


def _rows(side, steps, step_s, start=1000.0):
    rows, t = [], start
    for k in range(1, steps + 1):
        t += step_s
        if side == "ours":
            row = {"time/rollout_s": 4.0, "time/reward_s": 0.1, "time/learner_ref_logprobs_s": 1.0,
                   "time/learner_old_logprobs_s": 0.0, "time/learner_optimize_s": 3.0, "time/sync_s": 0.4,
                   "response/length_mean": 12.0, "response/truncated_share": 0.5}  # fmt: skip
        else:
            row = {"time/generate_s": 10.0, "time/reward_s": 0.1, "time/ref_logprobs_s": 1.0, "time/forward_s": 1.5,
                   "time/backward_s": 1.5, "time/optimizer_s": 0.5, "completions/mean_length": 16.0, "completions/clipped_ratio": 1.0}  # fmt: skip
        rows.append({"step": k, "time": t, "time/step_s": step_s - 0.1, **row})
    return rows


def test_summary_report_and_chart(bench, tiny_model_path, tmp_path):
    w = workload(bench, tiny_model_path, prompts=8, n=8, warmup=1, steps=3)
    ours = bench.summarise("ours", _rows("ours", 4, 10.0), w)
    trl = bench.summarise("trl", _rows("trl", 4, 20.0), w)
    assert ours["samples_per_s"] == pytest.approx(64 * 3 / 30.0) and trl["samples_per_s"] == pytest.approx(64 * 3 / 60.0)
    assert ours["stages_s"][bench.OTHER] == pytest.approx(10.0 - (4.0 + 0.1 + 1.0 + 3.0 + 0.4))
    assert ours["orchestration_share"] == pytest.approx(0.2) and trl["orchestration_share"] == pytest.approx(1 - 14.5 / 20)
    assert ours["completion_tokens_mean"] == 12.0 and trl["truncated_share"] == 1.0
    no_warmup = bench.summarise("ours", _rows("ours", 1, 10.0), workload(bench, tiny_model_path, warmup=0, steps=1))
    assert no_warmup["wall_s"] == pytest.approx(9.9)  # the step's own time when nothing precedes it

    results = {"command": "python benchmarks/grpo_vs_trl.py", "workload": bench.asdict(w), "machine": bench.machine(),
               "note": "other jobs were running", "sides": {"ours": ours, "trl": trl}, "load_average": {"ours": {"start": 2.0, "end": 1.9}, "trl": {"start": 2.1, "end": 2.0}},
               "ratio": ours["samples_per_s"] / trl["samples_per_s"], "trl_setup": {"micro_batch": 8}}  # fmt: skip
    md = bench.report(results, tmp_path)
    assert (tmp_path / "results.md").read_text() == md
    assert "| **samples/s** | **6.40** | **3.20** |" in md and "**2.00x**" in md and "other jobs were running" in md
    assert "transformers" in md and "vLLM 0.32" in md and "| measured steps (s) | 9.9, 9.9, 9.9 | 19.9, 19.9, 19.9 |" in md
    bench.chart(results, tmp_path / "stages.png")
    assert (tmp_path / "stages.png").read_bytes()[:4] == b"\x89PNG"


def test_arguments_are_checked(bench, monkeypatch):
    for argv in (["--sides", "ours,deepspeed"], ["--n", "1"], ["--steps", "0"]):
        monkeypatch.setattr(sys, "argv", ["grpo_vs_trl.py", *argv])
        with pytest.raises(SystemExit) as exit_:
            bench.main()
        assert exit_.value.code == 2


def test_a_failed_side_keeps_the_other_sides_results(bench, monkeypatch, tmp_path):
    def run_side(side, w, run_dir, timeout, verbose):
        if side == "trl":
            raise bench.SideFailed("exit 1 after 2/4 steps: RuntimeError: shape mismatch\nlast lines of run.log:\n...")
        return _rows("ours", 4, 10.0)

    monkeypatch.setattr(bench, "bench_data", lambda model, rows, seed: tmp_path / "train.parquet")
    monkeypatch.setattr(bench, "run_side", run_side)
    monkeypatch.setattr(sys, "argv", ["grpo_vs_trl.py", "--model", "tiny", "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="failed: trl"):
        bench.main()
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert list(results["sides"]) == ["ours"] and "ratio" not in results
    assert results["failed"] == {"trl": "exit 1 after 2/4 steps: RuntimeError: shape mismatch"}
    assert "**trl did not finish**" in (tmp_path / "out" / "results.md").read_text()
    assert (tmp_path / "out" / "stages.png").exists()


@pytest.mark.slow
def test_both_sides_end_to_end_on_the_tiny_model(tmp_path, tiny_processor):
    from rexthinker.rollout.base import forbidden_token_ids

    """About 100 s on 2 cores: each side in its own process (vLLM must not share this one)."""
    env = dict(os.environ, REXTHINKER_CACHE=os.environ.get("REXTHINKER_CACHE", str(REPO / ".cache")))
    cmd = [sys.executable, str(SCRIPT), "--model", "tiny", "--prompts", "2", "--n", "2", "--max-new-tokens", "16",
           "--warmup", "0", "--steps", "1", "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    for side in ("ours", "trl"):
        r = results["sides"][side]
        assert r["samples_per_s"] > 0 and 0 <= r["orchestration_share"] < 1
        assert 0 < r["completion_tokens_mean"] <= 16
        assert r["stages_s"]["generation"] > 0 and r["stages_s"]["policy fwd/bwd + optimizer"] > 0
    assert results["ratio"] > 0 and results["trl_setup"]["micro_batch"] == 4
    assert results["trl_setup"]["suppress_tokens"] == forbidden_token_ids(tiny_processor.tokenizer)  # as our rollouts
    assert results["trl_setup"]["padding_side"] == "left"
    assert (tmp_path / "results.md").exists() and (tmp_path / "stages.png").exists()
    assert len(Path(tmp_path / "trl" / "steps.jsonl").read_text().splitlines()) == 1
