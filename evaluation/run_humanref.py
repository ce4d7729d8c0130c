"""Generate predictions for a HumanRef-format benchmark and score them with the HumanRef metric.

    python evaluation/run_humanref.py --model IDEA-Research/Rex-Thinker-GRPO-7B \\
        --gt data/HumanRef/annotations.jsonl --out outputs/humanref/rex-thinker-grpo-7b
    bash evaluation/run_humanref.sh MODEL GT OUT [more flags]            # the same, env set up
    python evaluation/run_humanref.py --model outputs/demo/grpo/final \\
        --gt outputs/demo/data/test/humanref/annotations.jsonl --out /tmp/eval --num-workers 0 --limit 50

Every sample's candidate boxes become the box hints; the model answers greedily; its answer boxes
are mapped back to original pixels and written, one row per sample, to ``OUT/predictions.jsonl``:
``{"id", "extracted_predictions", "raw_response", "prompt"}`` (``[]`` when the model rejects or its
answer cannot be read; ``run.json`` counts both). Then ``evaluation.metric`` scores the file and the
table is printed and written to ``OUT/comparison.md`` / ``comparison.json`` (plus ``details.json``
and charts), with the RefCOCO-style Acc@0.5 of the single-target samples beside it (``data_tools
refcocog`` writes such rows).

Defaults follow the reference evaluation: the HumanRef user text (``--template humanref_eval``),
THINK_PROMPT as the system message, pixel limits 256*28*28 .. 1280*28*28, greedy decoding.

- Resumable: a restart reads ``predictions.jsonl``, keeps every complete row, repairs a last line
  cut short by a crash (the file is rewritten without it), and generates only the missing ids; an
  id is never written twice. Rows are appended a chunk (``--batch-size`` samples) at a time, each
  chunk flushed and fsynced. A finished run leaves the file in ground-truth order. Resuming with
  other settings (model, template, pixel limits, token budget) is refused: use another ``--out``.
- Data-parallel: ``--num-workers K`` Ray actors each hold one engine (one GPU each; on a machine
  without GPUs they split its CPUs); chunks go to whichever actor is free and the driver writes
  rows as chunks come back. The default is one actor per GPU (one on CPU); ``--num-workers 0``
  runs in this process without Ray. Actors read the images themselves, so on a multi-node cluster
  the data must be on a shared path.
- ``--limit N`` evaluates the first N samples only (the metric then scores those N).
- ``OUT/run.json`` records the settings and, per invocation, the timing (samples/s, tokens/s),
  engine load times and answer statistics.
- Box frame: hints and answers are in the box frame of the checkpoint's model family (model-input
  pixels for Qwen2.5-VL, 0-1000 for Qwen3-VL and Qwen3.5; ``--family`` names another); a
  checkpoint folder that records its frame (``box_frame.json``, written by the trainers and the
  converter) is refused in any other, before anything is generated.

Differences from the reference evaluation script: boxes are mapped back with the model frame the
processor really used (checked per sample, see ``rexthinker.generation``); answers that cannot be
read are still written as ``[]`` but counted in ``run.json`` and announced, since the metric scores
them as rejections; the run resumes and runs data-parallel.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from evaluation.metric import evaluate
from evaluation.metric_inputs import GroundTruth, PredictionFile, load_predictions
from evaluation.metric_report import markdown_report, write_report
from evaluation.metric_results import CORRECTED_SUFFIX, MODES
from rexthinker.data.errors import checked_image_size
from rexthinker.data.humanref import read_humanref
from rexthinker.data.sample import RefSample
from rexthinker.models.families import FAMILIES, model_family

PREDICTIONS_FILE = "predictions.jsonl"
RUN_FILE = "run.json"
# Settings that change what a prediction is: a resumed run must use the same ones.
RESUME_KEYS = ("model", "gt", "template", "instruction", "min_pixels", "max_pixels", "max_new_tokens", "family")
# Environment the Ray actors need from the driver (a cluster started elsewhere does not inherit it).
FORWARDED_ENV = ("VLLM_", "REXTHINKER_", "HF_", "TOKENIZERS_", "TRANSFORMERS_")


@dataclass
class RunConfig:
    """Everything one evaluation run needs; the command-line flags map onto it one to one."""

    model: str
    gt: str
    out: str
    image_root: str | None = None  # default: images/ beside the annotations file
    backend: str = "vllm"
    family: str | None = None  # the model family whose box frame prompts use; None: the checkpoint's own
    template: str = "humanref_eval"
    instruction: str = "system"
    min_pixels: int | None = None  # None: the family's HumanRef limit (256 image tokens; EVAL_MIN_PIXELS for Qwen2.5-VL)
    max_pixels: int | None = None  # None: the family's 1280 image tokens (TRAIN_MAX_PIXELS for Qwen2.5-VL)
    max_new_tokens: int = 2048
    batch_size: int = 64
    num_workers: int | None = None  # None: one per GPU of the Ray cluster, 1 without GPUs; 0: no Ray
    max_model_len: int | None = None  # vLLM only; default: the model's
    limit: int | None = None
    name: str | None = None  # model name in the tables; default: the model folder's name
    metric_mode: str = "reference"
    charts: bool = True
    progress: bool = True

    @property
    def images(self) -> Path:
        return Path(self.image_root) if self.image_root else Path(self.gt).parent / "images"

    def resume_settings(self) -> dict:
        """The settings a resumed run must share; local paths made absolute, so ``./m`` and ``m`` agree."""
        settings = {key: getattr(self, key) for key in RESUME_KEYS}
        for key in ("model", "gt"):
            if Path(settings[key]).exists():
                settings[key] = str(Path(settings[key]).resolve())
        return settings


# --------------------------------------------------------------------------------------------------
# The prediction file


class PredictionLog:
    """``predictions.jsonl``, append-only and resumable.

    Opening reads what an earlier run wrote: every complete row is kept, a last line cut short (no
    newline and not valid JSON) is dropped and the file rewritten without it. Anything else that is
    wrong (a broken line in the middle, an id twice, an id the ground truth does not have) stops the
    run: the file did not come from an interrupted run of this program.
    """

    def __init__(self, path: str | os.PathLike, known_ids: Iterable[str]):
        self.path = Path(path)
        self.lines: dict[str, str] = {}  # id -> its JSON line, in file order
        self.repaired: str | None = None
        if self.path.exists():
            self._read(set(known_ids))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    def _read(self, known: set[str]) -> None:
        data = self.path.read_bytes()
        *complete, tail = data.split(b"\n")
        dirty = False
        if tail.strip():  # the last line has no newline: a write cut short, unless it is a whole row
            try:
                json.loads(tail)
                complete.append(tail)
            except ValueError:
                self.repaired = f"dropped a truncated last line ({len(tail)} bytes)"
            dirty = True
        for n, raw in enumerate(complete, 1):
            if not raw.strip():
                dirty = True
                continue
            try:
                row = json.loads(raw)
            except ValueError as exc:
                where = f"{self.path} line {n}"
                raise ValueError(f"{where}: not valid JSON ({exc}); only a cut-short last line is repaired") from exc
            if not isinstance(row, dict) or "id" not in row or "extracted_predictions" not in row:
                raise ValueError(f"{self.path} line {n}: not a prediction row")
            sample_id = str(row["id"])
            if sample_id not in known:
                where = f"{self.path} line {n}"
                raise ValueError(f"{where}: id {sample_id!r} is not in the ground truth; use another --out")
            if sample_id in self.lines:
                raise ValueError(f"{self.path} line {n}: id {sample_id!r} appears twice")
            self.lines[sample_id] = raw.decode("utf-8")
        if dirty:
            self._rewrite(list(self.lines.values()))

    def _rewrite(self, lines: Sequence[str]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in lines))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self.lines

    def __len__(self) -> int:
        return len(self.lines)

    def append(self, rows: Sequence[dict]) -> None:
        """Write rows (new ids only) in one write, then flush and fsync."""
        text = []
        for row in rows:
            sample_id = str(row["id"])
            if sample_id in self.lines:
                raise ValueError(f"id {sample_id!r} is already in {self.path}")
            line = json.dumps(row, ensure_ascii=False)
            self.lines[sample_id] = line
            text.append(line + "\n")
        self._fh.write("".join(text))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self, order: Sequence[str] | None = None) -> None:
        """Close; with ``order`` (ground-truth ids), first rewrite the rows in that order."""
        self._fh.close()
        if order is not None:
            rank = {sample_id: k for k, sample_id in enumerate(order)}
            ids = sorted(self.lines, key=lambda i: rank.get(i, len(rank)))
            if ids != list(self.lines):
                self._rewrite([self.lines[i] for i in ids])
                self.lines = {i: self.lines[i] for i in ids}


# --------------------------------------------------------------------------------------------------
# Generation


class Worker:
    """One engine answering chunks of samples; in this process or as a Ray actor."""

    def __init__(self, cfg: RunConfig, engine=None):
        from rexthinker.inference import Referrer

        start = time.perf_counter()
        engine_kwargs = {"max_model_len": cfg.max_model_len} if cfg.max_model_len else {}
        self.referrer = Referrer(
            cfg.model, cfg.backend, template=cfg.template, instruction=cfg.instruction, min_pixels=cfg.min_pixels,
            max_pixels=cfg.max_pixels, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, engine=engine,
            engine_kwargs=engine_kwargs, family=cfg.family,
        )  # fmt: skip
        self.images = cfg.images
        self.load_s = time.perf_counter() - start

    def load_seconds(self) -> float:
        return self.load_s

    def run(self, samples: Sequence[RefSample]) -> list[tuple[dict, dict]]:
        """``(prediction row, statistics)`` per sample, in order."""
        from rexthinker.inference import prediction_row

        loaded = [self._with_image(s) for s in samples]
        out = []
        for result in self.referrer.ask(loaded):
            stats = {
                "tokens": result.num_tokens,
                "unreadable": not result.completion.answer.ok,
                "rejection": result.is_rejection,
                "unfaithful": result.unfaithful,
            }
            out.append((prediction_row(result), stats))
        return out

    def _with_image(self, sample: RefSample) -> RefSample:
        path = self.images / sample.image_name
        try:
            data = path.read_bytes()
            size = checked_image_size(data)
        except Exception as exc:  # a benchmark with a broken image must not be scored silently
            raise RuntimeError(f"sample {sample.id!r}: cannot use image {path}: {exc}") from exc
        return dataclasses.replace(sample, image_bytes=data, image_size=size)


def chunks(samples: Sequence[RefSample], size: int) -> list[list[RefSample]]:
    return [list(samples[k : k + size]) for k in range(0, len(samples), size)]


def generate_in_process(worker: Worker, work: list[list[RefSample]], write) -> list[float]:
    for chunk in work:
        write(worker.run(chunk))
    return [worker.load_s]


def generate_with_ray(cfg: RunConfig, work: list[list[RefSample]], write) -> list[float]:
    """Chunks to ``cfg.num_workers`` actors, each given the next chunk as soon as it returns one."""
    import ray

    if not ray.is_initialized():
        ray.init()  # joins the cluster RAY_ADDRESS names, else starts a local one
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    k = cfg.num_workers if cfg.num_workers is not None else max(1, gpus)
    k = max(1, min(k, len(work)))
    if gpus:
        if k > gpus:
            raise ValueError(f"{k} workers asked for but the Ray cluster has {gpus} GPUs (one per worker)")
        options = {"num_gpus": 1}
    else:
        options = {"num_cpus": max(1, int(resources.get("CPU", 1)) // k)}
    env = {key: value for key, value in os.environ.items() if key.startswith(FORWARDED_ENV)}
    actor_class = ray.remote(Worker)
    actors = [actor_class.options(**options, runtime_env={"env_vars": env}).remote(cfg) for _ in range(k)]
    try:
        queue = deque(work)
        pending = {}
        for actor in actors:
            if queue:
                pending[actor.run.remote(queue.popleft())] = actor
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            actor = pending.pop(ready)
            write(ray.get(ready))
            if queue:
                pending[actor.run.remote(queue.popleft())] = actor
        return ray.get([actor.load_seconds.remote() for actor in actors])
    finally:
        for actor in actors:
            ray.kill(actor)


# --------------------------------------------------------------------------------------------------
# The run


def run(cfg: RunConfig, engine=None) -> dict:
    """Generate the missing predictions, score them, write the reports; return the run record
    (also in ``run.json``), with the metric results under ``"results"``. ``engine`` (an already
    built ``vllm.LLM`` or transformers model) runs in this process instead of loading one."""
    family = model_family(cfg.model, cfg.family)  # a recorded box frame that disagrees stops the run here
    if cfg.min_pixels is None or cfg.max_pixels is None:  # contracts §1.6's limits, as image tokens of this family
        cfg = dataclasses.replace(cfg, min_pixels=cfg.min_pixels or family.eval_min_pixels, max_pixels=cfg.max_pixels or family.train_pixels[1])
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    record = _read_record(out / RUN_FILE, cfg)
    _write_record(out / RUN_FILE, record)  # settings first, so a crashed run is resumed with checks
    samples = read_humanref(cfg.gt, load_images=False)
    selected = samples[: cfg.limit] if cfg.limit is not None else samples
    log = PredictionLog(out / PREDICTIONS_FILE, (s.id for s in samples))
    if log.repaired:
        print(f"[run_humanref] {log.path}: {log.repaired}", flush=True)
    todo = [s for s in selected if s.id not in log]
    print(f"[run_humanref] {len(selected)} samples, {len(selected) - len(todo)} already predicted, "
          f"{len(todo)} to generate", flush=True)  # fmt: skip

    stats: list[dict] = []
    bar = _progress(len(todo)) if cfg.progress and todo else None

    def write(pairs: list[tuple[dict, dict]]) -> None:
        log.append([row for row, _ in pairs])
        stats.extend(s for _, s in pairs)
        if bar is not None:
            bar.update(len(pairs))

    session = {"started": _now(), "backend": cfg.backend, "batch_size": cfg.batch_size, "limit": cfg.limit,
               "done_before": len(selected) - len(todo)}  # fmt: skip
    start = time.perf_counter()
    try:
        if todo:
            work = chunks(todo, cfg.batch_size)
            if cfg.num_workers == 0 or engine is not None:
                session["num_workers"] = 0
                load_s = generate_in_process(Worker(cfg, engine), work, write)
            else:
                load_s = generate_with_ray(cfg, work, write)
                session["num_workers"] = len(load_s)
            session["engine_load_s"] = [round(s, 2) for s in load_s]
    finally:
        if bar is not None:
            bar.close()
        log.close(order=[s.id for s in samples])
    wall = time.perf_counter() - start
    generate_s = wall - max(session.get("engine_load_s", [0.0]))
    tokens = sum(s["tokens"] for s in stats)
    session.update(
        finished=_now(), generated=len(stats), wall_s=round(wall, 2), generate_s=round(generate_s, 2),
        samples_per_s=round(len(stats) / generate_s, 3) if stats and generate_s > 0 else None,
        tokens_per_s=round(tokens / generate_s, 1) if stats and generate_s > 0 else None,
        mean_new_tokens=round(tokens / len(stats), 1) if stats else None,
        unreadable_answers=sum(s["unreadable"] for s in stats), rejections=sum(s["rejection"] for s in stats),
        unfaithful=sum(s["unfaithful"] for s in stats), device=_device(), versions=_versions(cfg.backend),
    )  # fmt: skip
    record["runs"].append(session)

    results = score(cfg, selected, out / PREDICTIONS_FILE)
    paths = write_report(results, out, charts=cfg.charts)
    table = markdown_report(results)
    print(table, end="", flush=True)
    if session["unreadable_answers"]:
        print(f"[run_humanref] note: {session['unreadable_answers']} of {session['generated']} new answers could not "
              "be read; they are written as [] (to the metric, a rejection)")  # fmt: skip
    written = [out / PREDICTIONS_FILE, *paths.values(), out / RUN_FILE]
    print("[run_humanref] wrote " + ", ".join(str(p) for p in written))
    record["metric"] = {r.name: _headline(r) for r in results}
    _write_record(out / RUN_FILE, record)
    return {**record, "results": results, "table": table}


def score(cfg: RunConfig, selected: Sequence[RefSample], predictions: Path):
    """The metric on the selected samples (their rows only, when ``--limit`` leaves others in the file)."""
    ids = {s.id for s in selected}
    loaded = load_predictions(predictions)
    rows = [(n, r) for n, r in loaded.rows if not isinstance(r, dict) or str(r.get("id")) in ids]
    gt = GroundTruth(selected, source=cfg.gt)
    name = cfg.name or Path(cfg.model.rstrip("/")).name
    modes = MODES if cfg.metric_mode == "both" else (cfg.metric_mode,)
    results = []
    for mode in modes:
        label = name + CORRECTED_SUFFIX if cfg.metric_mode == "both" and mode == "corrected" else name
        results.append(evaluate(gt, PredictionFile(loaded.source, rows, loaded.errors), mode=mode, name=label))
    return results


def _headline(result) -> dict:
    scores = result.all_data
    out = {"mode": result.mode, "rejection_score": result.rejection_score, "rejection_total": result.rejection_total,
           "acc_50": result.acc_50, "acc_50_samples": result.acc_50_samples}  # fmt: skip
    if scores is not None:
        out.update(samples=scores.samples, recall=scores.recall_50_95, precision=scores.precision_50_95,
                   densityf1=scores.densityf1_50_95)  # fmt: skip
    return out


def _read_record(path: Path, cfg: RunConfig) -> dict:
    settings = cfg.resume_settings()
    if not path.exists():
        if (path.parent / PREDICTIONS_FILE).exists():
            print(f"[run_humanref] {path.parent / PREDICTIONS_FILE} exists without {RUN_FILE}: resuming it, "
                  "its settings cannot be checked", flush=True)  # fmt: skip
        return {"settings": settings, "runs": []}
    record = json.loads(path.read_text(encoding="utf-8"))
    before = record.get("settings", {})
    changed = {k: (before.get(k), v) for k, v in settings.items() if before.get(k) != v}
    if changed and (path.parent / PREDICTIONS_FILE).exists():
        details = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise ValueError(f"{path.parent} holds predictions made with other settings ({details}); use another --out")
    record["settings"] = settings
    record.setdefault("runs", [])
    return record


def _write_record(path: Path, record: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="generate", unit="sample", dynamic_ncols=True)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)} (driver view)"
    return f"cpu ({os.cpu_count()} cores, {platform.machine()})"


def _versions(backend: str) -> dict:
    import torch
    import transformers

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    versions["transformers"] = transformers.__version__
    if backend == "vllm":
        import vllm

        versions["vllm"] = vllm.__version__
    return versions


# --------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None = None) -> RunConfig:
    d = RunConfig(model="", gt="", out="")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint folder or hub id")
    p.add_argument("--gt", required=True, help="HumanRef-format annotations.jsonl")
    p.add_argument("--out", required=True, help="output folder (predictions.jsonl, reports, run.json)")
    p.add_argument("--image-root", default=None, help="image folder (default: images/ beside --gt)")
    p.add_argument("--backend", choices=("vllm", "hf"), default=d.backend)
    p.add_argument("--family", choices=sorted(FAMILIES), default=None,
                   help="model family whose box frame the prompts use (default: the checkpoint's own)")  # fmt: skip
    p.add_argument("--template", choices=("humanref_eval", "train"), default=d.template, help="user text variant")
    p.add_argument("--instruction", choices=("system", "user_suffix", "none"), default=d.instruction,
                   help="where THINK_PROMPT goes (the released model: system)")  # fmt: skip
    p.add_argument("--min-pixels", type=int, default=d.min_pixels, help="default: 256 image tokens of the model's family")
    p.add_argument("--max-pixels", type=int, default=d.max_pixels, help="default: 1280 image tokens of the model's family")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="samples per chunk (one write each)")
    p.add_argument("--num-workers", type=int, default=None,
                   help="Ray actors (default: one per GPU, 1 on CPU); 0: in this process, no Ray")  # fmt: skip
    p.add_argument("--max-model-len", type=int, default=None, help="vLLM context length (default: the model's)")
    p.add_argument("--limit", type=int, default=None, help="only the first N samples")
    p.add_argument("--name", default=None, help="model name in the tables")
    p.add_argument("--metric-mode", choices=(*MODES, "both"), default=d.metric_mode)
    p.add_argument("--no-charts", dest="charts", action="store_false")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    if args.batch_size < 1 or (args.num_workers is not None and args.num_workers < 0):
        p.error("--batch-size must be >= 1 and --num-workers >= 0")
    return RunConfig(**vars(args))


def main(argv: Sequence[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
