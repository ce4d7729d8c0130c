"""The HumanRef runner: prediction rows, resume, a repaired truncated file, the metric at the end,
Ray data parallelism, the box frame of each model family. The tiny model's answers are noise, so
structure is checked on it; an oracle that copies the right hint boxes checks the coordinates and the
scores end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evaluation.run_humanref import PredictionLog, RunConfig, main, run
from rexthinker.contracts.answer import answer_json
from rexthinker.contracts.completion import parse_completion
from rexthinker.contracts.hint import hint_json
from rexthinker.coords import model_frame_size, to_original_frame
from rexthinker.data.humanref import read_humanref, write_humanref
from rexthinker.data.synthref import generate
from rexthinker.generation import Generation, render
from rexthinker.inference import Referrer
from rexthinker.models import families, tiny
from rexthinker.prompts import prompt_boxes

ROOT = Path(__file__).resolve().parents[2]
ROW_KEYS = {"id", "extracted_predictions", "raw_response", "prompt"}
# seed 3 gives all five SynthRef domains, a rejection among them, in six samples
SEED, N = 3, 6


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthref_humanref")
    return write_humanref(generate(N, seed=SEED, split="test"), root)


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _config(benchmark, out, **kw) -> RunConfig:
    # small pixel limits keep the tiny model fast; the runner's defaults are the evaluation's
    base = dict(
        model=str(kw.pop("model")), gt=str(benchmark), out=str(out), min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28,
        max_new_tokens=8, batch_size=2, num_workers=0, charts=False, progress=False,
    )  # fmt: skip
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture
def oracle(monkeypatch):
    """``Referrer.generate`` answers with exactly the ground-truth hints (and loads no engine)."""

    def generate(self, samples, progress=False):
        out = []
        for sample, info, prompt, _ in render(samples, self.processor, self.template, self.instruction, self.family):
            answer = answer_json(info.answer_boxes, sample.referring)
            text = f"<think>- Person 1: ok → ✅</think><answer>{answer}</answer>"
            out.append(Generation(sample, info, prompt, text, 7))
        return out

    monkeypatch.setattr(Referrer, "generate", generate)
    return object()  # the "engine" handed to run()


@pytest.mark.vllm
def test_tiny_model_rows_resume_and_metric(benchmark, tmp_path, tiny_model_path, tiny_vllm, capsys):
    cfg = _config(benchmark, tmp_path, model=tiny_model_path, limit=3)
    record = run(cfg, engine=tiny_vllm)
    predictions = tmp_path / "predictions.jsonl"
    first = predictions.read_text(encoding="utf-8").splitlines()
    ids = [s.id for s in read_humanref(benchmark, load_images=False)]
    assert [json.loads(line)["id"] for line in first] == ids[:3]
    assert record["runs"][-1]["generated"] == 3 and record["runs"][-1]["done_before"] == 0

    cfg.limit = None
    record = run(cfg, engine=tiny_vllm)
    lines = predictions.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert lines[:3] == first  # the earlier rows are untouched
    assert [r["id"] for r in rows] == ids  # every id once, in ground-truth order
    samples = {s.id: s for s in read_humanref(benchmark)}
    for row in rows:  # the answers are noise, but whatever boxes they hold are mapped to original pixels
        assert set(row) == ROW_KEYS and isinstance(row["raw_response"], str) and "<|image_pad|>" in row["prompt"]
        size = samples[row["id"]].image_size
        frame = model_frame_size(*size, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
        answer = parse_completion(row["raw_response"]).answer
        assert row["extracted_predictions"] == [to_original_frame(b, frame, size) for b in answer.boxes]
    session = record["runs"][-1]
    assert session["generated"] == 3 and session["done_before"] == 3 and session["samples_per_s"] > 0
    assert json.loads((tmp_path / "run.json").read_text())["runs"][-1] == session
    assert (tmp_path / "comparison.md").exists() and (tmp_path / "comparison.json").exists()
    assert "All Data" in capsys.readouterr().out


def test_oracle_scores_perfectly_at_evaluation_pixels(benchmark, tmp_path, tiny_model_path, oracle):
    """At the evaluation's pixel limits (SynthRef images are upscaled), hints copied back map to
    boxes the metric matches at every threshold: the frames are right."""
    cfg = _config(benchmark, tmp_path, model=tiny_model_path, min_pixels=256 * 28 * 28, max_pixels=1280 * 28 * 28)
    record = run(cfg, engine=oracle)
    (result,) = record["results"]
    assert result.all_data.densityf1_50 == 1.0 and result.all_data.densityf1_50_95 > 0.95
    assert result.rejection_score == result.rejection_total == 1
    truth = {s.id: s for s in read_humanref(benchmark, load_images=False)}
    for row in _rows(tmp_path / "predictions.jsonl"):
        expected = truth[row["id"]].answer_boxes
        assert len(row["extracted_predictions"]) == len(expected)
        for got, want in zip(sorted(row["extracted_predictions"]), sorted(expected)):
            assert max(abs(a - b) for a, b in zip(got, want)) < 1.0


def test_qwen3_vl_oracle_answers_in_0_1000_score_perfectly(benchmark, tmp_path, oracle):
    """The tiny Qwen3-VL's family prompts in 0-1000; hints copied back are decoded to original pixels."""
    model = tiny.get("tiny", "qwen3_vl")
    cfg = _config(benchmark, tmp_path, model=model, min_pixels=families.QWEN3_VL.eval_min_pixels, max_pixels=1280 * 32 * 32)
    record = run(cfg, engine=oracle)
    (result,) = record["results"]
    assert result.all_data.densityf1_50 == 1.0 and result.all_data.densityf1_50_95 > 0.95
    truth = {s.id: s for s in read_humanref(benchmark, load_images=False)}
    for row in _rows(tmp_path / "predictions.jsonl"):
        assert all(0 <= v <= 1000 for box in parse_completion(row["raw_response"]).answer.boxes for v in box)
        for got, want in zip(sorted(row["extracted_predictions"]), sorted(truth[row["id"]].answer_boxes)):
            assert max(abs(a - b) for a, b in zip(got, want)) < 1.0  # one thousandth of a SynthRef image is under a pixel


# What each 0-1000 family's generation prompt opens, so every raw response (the whole assistant turn) starts with it.
OPENED = {"qwen3_vl": "", "qwen3_5": "<think>\n"}


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_5"])
def test_tiny_qwen3_vl_evaluates_end_to_end_with_transformers(benchmark, tmp_path, family):
    """Qwen3-VL and Qwen3.5 (its raw responses start with the ``<think>`` its prompt opened)."""
    model = tiny.get("tiny", family)
    record = run(_config(benchmark, tmp_path, model=model, backend="hf", min_pixels=4 * 32 * 32, max_pixels=64 * 32 * 32, limit=2))
    assert record["runs"][-1]["generated"] == 2 and record["results"]
    rows = _rows(tmp_path / "predictions.jsonl")
    samples = {s.id: s for s in read_humanref(benchmark)}
    assert len(rows) == 2 and all(row["raw_response"].startswith(OPENED[family]) for row in rows)
    for row in rows:  # noise, but whatever boxes the answers hold are decoded from 0-1000
        width, height = samples[row["id"]].image_size
        boxes = parse_completion(row["raw_response"]).answer.boxes
        assert row["extracted_predictions"] == [[v / 1000 * (width if i % 2 == 0 else height) for i, v in enumerate(b)] for b in boxes]



@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_default_pixel_limits_are_the_familys_humanref_limits(benchmark, tmp_path, family):
    """256 to 1280 image tokens (contracts §1.6) of the model's own family, recorded for resumes."""
    model = tiny.get("tiny", family)
    record = run(_config(benchmark, tmp_path, model=model, backend="hf", min_pixels=None, max_pixels=None, limit=1, max_new_tokens=4))
    want = {"qwen2_5_vl": (256 * 28 * 28, 1280 * 28 * 28), "qwen3_vl": (256 * 32 * 32, 1280 * 32 * 32)}[family]
    assert (record["settings"]["min_pixels"], record["settings"]["max_pixels"]) == want

@pytest.mark.vllm
@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_5"])
def test_tiny_qwen3_vl_evaluates_with_vllm_in_a_subprocess(benchmark, tmp_path, family):
    """A subprocess: one in-process vLLM engine per test process (the session's is Qwen2.5-VL's).
    Qwen3.5's engine runs in bf16 without prefix caching, its family's CPU settings (generation.engine_settings)."""
    model, (lo, hi) = tiny.get("tiny", family), (4 * 32 * 32, 64 * 32 * 32)
    proc = subprocess.run([
        sys.executable, "evaluation/run_humanref.py", "--model", str(model), "--gt", str(benchmark), "--out", str(tmp_path),
        "--num-workers", "0", "--limit", "2", "--max-new-tokens", "8", "--min-pixels", str(lo), "--max-pixels", str(hi),
        "--max-model-len", "2048", "--no-charts", "--no-progress",
    ], cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples, rows = read_humanref(benchmark), _rows(tmp_path / "predictions.jsonl")
    assert len(rows) == 2 and all(row["raw_response"].startswith(OPENED[family]) for row in rows)
    for row, sample in zip(rows, samples):
        hints = prompt_boxes(sample, lo, hi, family=families.get_family(family)).hint_boxes
        assert hint_json(sample.category, hints) in row["prompt"] and max(v for box in hints for v in box) <= 1000


def test_a_checkpoint_is_refused_in_a_frame_it_does_not_record(benchmark, tmp_path, tiny_model_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_path, model)
    families.record_frame(model, families.QWEN2_5_VL)
    cfg = _config(benchmark, tmp_path / "out", model=model, family="qwen3_vl")
    with pytest.raises(families.FrameMismatchError, match=rf"{model} records box frame 'model_pixels'.*'relative_1000'"):
        run(cfg)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_truncated_last_line_is_dropped_and_never_duplicated(benchmark, tmp_path, tiny_model_path, oracle):
    cfg = _config(benchmark, tmp_path, model=tiny_model_path, limit=4)
    run(cfg, engine=oracle)
    predictions = tmp_path / "predictions.jsonl"
    lines = predictions.read_text(encoding="utf-8").splitlines(keepends=True)
    predictions.write_text("".join(lines[:3]) + lines[3][:25], encoding="utf-8")  # a crash mid-write

    cfg.limit = None
    record = run(cfg, engine=oracle)
    rows = _rows(predictions)
    assert len(rows) == N and len({r["id"] for r in rows}) == N
    assert predictions.read_text(encoding="utf-8").splitlines(keepends=True)[:3] == lines[:3]
    assert record["runs"][-1]["generated"] == 3
    assert not (tmp_path / "predictions.jsonl.tmp").exists()

    record = run(cfg, engine=oracle)  # nothing left to do: nothing written
    assert record["runs"][-1]["generated"] == 0 and len(_rows(predictions)) == N


def test_prediction_log_refuses_what_it_cannot_repair(tmp_path):
    path = tmp_path / "p.jsonl"
    good = [json.dumps({"id": i, "extracted_predictions": []}) for i in ("a", "b")]
    path.write_text(good[0] + "\nnot json\n" + good[1] + "\n")
    with pytest.raises(ValueError, match="line 2"):
        PredictionLog(path, ["a", "b"])
    path.write_text(good[0] + "\n" + good[0] + "\n")
    with pytest.raises(ValueError, match="twice"):
        PredictionLog(path, ["a", "b"])
    path.write_text(good[0] + "\n")
    with pytest.raises(ValueError, match="not in the ground truth"):
        PredictionLog(path, ["b"])
    path.write_text(good[0] + "\n" + good[1])  # a whole last row without its newline is kept
    log = PredictionLog(path, ["a", "b", "c"])
    assert len(log) == 2 and log.repaired is None and path.read_text().endswith("\n")
    with pytest.raises(ValueError, match="already"):
        log.append([{"id": "a", "extracted_predictions": []}])
    log.append([{"id": "c", "extracted_predictions": [[1, 2, 3, 4]]}])
    log.close(order=["c", "b", "a"])
    assert [r["id"] for r in _rows(path)] == ["c", "b", "a"]


def test_resume_with_other_settings_is_refused(benchmark, tmp_path, tiny_model_path, oracle):
    run(_config(benchmark, tmp_path, model=tiny_model_path, limit=1), engine=oracle)
    with pytest.raises(ValueError, match="max_new_tokens"):
        run(_config(benchmark, tmp_path, model=tiny_model_path, max_new_tokens=9), engine=oracle)


def test_command_line_with_transformers(benchmark, tmp_path, tiny_model_path, capsys):
    main([
        "--model", str(tiny_model_path), "--gt", str(benchmark), "--out", str(tmp_path), "--backend", "hf",
        "--num-workers", "0", "--limit", "2", "--max-new-tokens", "4", "--min-pixels", "3136", "--max-pixels", "50176",
        "--no-charts", "--no-progress", "--metric-mode", "both",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert "2 to generate" in out and "(corrected)" in out
    assert [set(r) for r in _rows(tmp_path / "predictions.jsonl")] == [ROW_KEYS, ROW_KEYS]
    settings = json.loads((tmp_path / "run.json").read_text())["settings"]
    assert settings["template"] == "humanref_eval" and settings["min_pixels"] == 3136


def test_ray_one_actor_on_cpu(benchmark, tmp_path, tiny_model_path):
    """One Ray actor holding a transformers engine; the driver writes rows as chunks return."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        start = time.perf_counter()
        cfg = _config(benchmark, tmp_path, model=tiny_model_path, backend="hf", num_workers=1, limit=4)
        record = run(cfg)
        elapsed = time.perf_counter() - start
    finally:
        ray.shutdown()
    session = record["runs"][-1]
    assert session["num_workers"] == 1 and session["generated"] == 4 and len(session["engine_load_s"]) == 1
    assert [r["id"] for r in _rows(tmp_path / "predictions.jsonl")] == [f"synthref-test-{k:06d}" for k in range(4)]
    print(f"ray run with one actor: {elapsed:.1f} s")
