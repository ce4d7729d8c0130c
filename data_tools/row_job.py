"""The row-making job shared by ``prepare``, ``refcocog`` and ``reallod``: input items in, GRPO
parquet and/or HumanRef rows out.

:func:`prepare` splits the :class:`Item` stream into chunks, has each chunk parsed, checked,
detected, matched and written by a worker process (:func:`process_chunk`), resumes from finished
chunks, merges the parts in input order and returns a :class:`Summary`; :func:`format_summary`
prints it. The behaviour (hints, --no-match, problems, resuming, output layout) is described in
``python -m data_tools prepare --help``; how one row is checked and matched is in
:mod:`data_tools.rows`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import multiprocessing
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from data_tools.rows import RowProblem, RowSpec, attach_targets, fit_boxes, parse_row, shuffled_hints
from rexthinker.coords import TRAIN_MAX_PIXELS, TRAIN_MIN_PIXELS
from rexthinker.data.errors import ImageCheckError, checked_image_size
from rexthinker.data.grpo_parquet import GrpoParquetWriter, _rgb_png, schema_for
from rexthinker.data.humanref import ANNOTATIONS_FILE, IMAGES_DIR, humanref_row
from rexthinker.data.sample import RefSample
from rexthinker.detect import DetectorSpec
from rexthinker.models.families import QWEN2_5_VL, get_family

FORMATS = ("parquet", "humanref")
NO_MATCH = ("append", "replace", "drop")
HINT_ORDERS = ("keep", "shuffle")
GRPO_FILE = "grpo.parquet"
HUMANREF_DIR = "humanref"
PROBLEMS_FILE = "problems.jsonl"
SUMMARY_FILE = "prepare.json"
WORK_DIR = ".prepare"


# --------------------------------------------------------------------------------------------------
# Options and input items


@dataclass(frozen=True)
class PrepareOptions:
    """Everything that decides the output (its digest guards resumed runs)."""

    candidates: str = "detector"  # or "supplied"
    detector: DetectorSpec | None = None
    no_match: str = "append"
    match_iou: float = 0.5
    clip_boxes: bool = False
    hint_order: str = "keep"
    formats: tuple[str, ...] = FORMATS
    min_pixels: int = TRAIN_MIN_PIXELS
    max_pixels: int = TRAIN_MAX_PIXELS
    family: str = QWEN2_5_VL.name  # the model family whose box frame the parquet rows are written in
    chunk_size: int = 256

    def __post_init__(self) -> None:
        if self.candidates not in ("detector", "supplied"):
            raise ValueError(f"candidates must be 'detector' or 'supplied', got {self.candidates!r}")
        if self.candidates == "detector" and self.detector is None:
            raise ValueError("candidates='detector' needs a DetectorSpec")
        if self.no_match not in NO_MATCH:
            raise ValueError(f"no_match must be one of {NO_MATCH}, got {self.no_match!r}")
        if self.hint_order not in HINT_ORDERS:
            raise ValueError(f"hint_order must be one of {HINT_ORDERS}, got {self.hint_order!r}")
        if not 0.0 < self.match_iou <= 1.0:
            raise ValueError(f"match_iou must be in (0, 1], got {self.match_iou}")
        if not self.formats or set(self.formats) - set(FORMATS):
            raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {self.formats}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        try:
            get_family(self.family)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None

    def digest(self) -> str:
        state = dataclasses.asdict(self)
        if self.candidates == "supplied":
            state["detector"] = None
        elif state["detector"] is not None:  # the device changes numerics only in the last bits
            state["detector"].pop("device")
        return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Item:
    """One input row before parsing: where it comes from and its JSON text or object. A converter
    that already found the source record unusable passes ``problem=(kind, reason)`` instead, so the
    record is reported and counted like any other bad row."""

    file: str
    line: int
    payload: str | dict | None
    unit: str = "line"
    problem: tuple[str, str] | None = None


def jsonl_items(path: str | os.PathLike) -> Iterator[Item]:
    """The non-blank lines of a JSONL file as items (1-based line numbers)."""
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if line.strip():
                yield Item(str(path), line_no, line)


# --------------------------------------------------------------------------------------------------
# One chunk (runs in a worker process)

_WORKER: dict = {}  # per process: the options and the detector, built once


def _init_worker(options: PrepareOptions) -> None:
    _WORKER.clear()
    _WORKER["options"] = options
    if options.candidates == "detector":
        from rexthinker.detect import load_detector

        _WORKER["detector"] = load_detector(options.detector)


@dataclass
class ChunkJob:
    index: int
    items: list[Item]
    digest: str
    image_root: Path
    out_dir: Path
    work_dir: Path


@dataclass
class ChunkResult:
    index: int
    digest: str
    rows: int
    written: int = 0
    stats: Counter = field(default_factory=Counter)
    problems: list[dict] = field(default_factory=list)


def _problem(item: Item, kind: str, reason: str, action: str = "dropped", row_id: str | None = None) -> dict:
    entry = {"file": item.file, item.unit: item.line, "kind": kind, "reason": reason, "action": action}
    if row_id is not None:
        entry["id"] = row_id
    return entry


def _part_paths(work_dir: Path, index: int) -> dict[str, Path]:
    stem = work_dir / "parts" / f"{index:06d}"
    return {
        "parquet": stem.with_suffix(".parquet"),
        "humanref": stem.with_suffix(".jsonl"),
        "done": stem.with_suffix(".done.json"),
    }


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class _Images:
    """Each image of a chunk read, checked, decoded and PNG-encoded at most once."""

    def __init__(self, root: Path):
        self.root = root
        self.cache: dict[str, tuple[bytes, tuple[int, int]] | RowProblem] = {}
        self.decoded: dict = {}
        self.png: dict[str, bytes] = {}

    def get(self, name: str) -> tuple[bytes, tuple[int, int]]:
        if name not in self.cache:
            path = self.root / name
            try:
                data = path.read_bytes()
                self.cache[name] = (data, checked_image_size(data))
            except OSError as exc:
                self.cache[name] = RowProblem("missing_image", f"cannot read image {path}: {exc.strerror or exc}")
            except ImageCheckError as exc:
                self.cache[name] = RowProblem("bad_image", f"image {path}: {exc}")
        found = self.cache[name]
        if isinstance(found, RowProblem):
            raise found
        return found

    def pil(self, name: str) -> Image.Image:
        if name not in self.decoded:
            data, _ = self.get(name)
            try:
                with Image.open(io.BytesIO(data)) as image:
                    self.decoded[name] = image.convert("RGB")
            except Exception as exc:  # a file that passed the cheap check but does not decode
                self.cache[name] = RowProblem("bad_image", f"image {self.root / name} does not decode: {exc}")
                raise self.cache[name] from None
        return self.decoded[name]

    def png_bytes(self, name: str) -> bytes:
        if name not in self.png:
            self.png[name] = _rgb_png(self.get(name)[0])
        return self.png[name]


def process_chunk(job: ChunkJob) -> ChunkResult:
    """Parse, check, detect, match and write one chunk's parts; the done file is written last."""
    options: PrepareOptions = _WORKER["options"]
    result = ChunkResult(job.index, job.digest, len(job.items))
    images = _Images(job.image_root)
    parsed: list[tuple[Item, RowSpec]] = []
    for item in job.items:
        try:
            spec = parse_row(item, need_candidates=options.candidates == "supplied")
            _, size = images.get(spec.image_name)
            if spec.image_size is not None and spec.image_size != size:
                raise RowProblem(
                    "size_mismatch", f"row says {spec.image_size[0]}x{spec.image_size[1]}, image is {size[0]}x{size[1]}"
                )
            spec.targets, clipped = fit_boxes(spec.targets, size, "ans", options.clip_boxes)
            if spec.candidates is not None:
                spec.candidates, more = fit_boxes(spec.candidates, size, "candidate_boxes", options.clip_boxes)
                clipped += more
        except RowProblem as problem:
            result.problems.append(_problem(item, problem.kind, problem.reason))
            result.stats[f"dropped:{problem.kind}"] += 1
            continue
        if clipped:
            result.problems.append(
                _problem(item, "clipped_box", f"{clipped} box(es) clipped to the image", "changed", spec.id)
            )
            result.stats["changed:clipped_box"] += clipped
        parsed.append((item, spec))

    if options.candidates == "detector":
        parsed = _detect(parsed, images, result)

    samples: list[RefSample] = []
    for item, spec in parsed:
        try:
            hints, answers, counts = attach_targets(spec.candidates, spec.targets, options.no_match, options.match_iou)
            if not hints:
                raise RowProblem(
                    "no_candidates", "no candidate box (the detector found nothing and there is no target)"
                )
        except RowProblem as problem:
            result.problems.append(_problem(item, problem.kind, problem.reason, row_id=spec.id))
            result.stats[f"dropped:{problem.kind}"] += 1
            continue
        result.stats.update({f"targets:{k}": v for k, v in counts.items()})
        if options.hint_order == "shuffle":
            hints = shuffled_hints(hints, spec.id)
        data, size = images.get(spec.image_name)
        samples.append(
            RefSample(
                id=spec.id, image_name=spec.image_name, referring=spec.referring, candidate_boxes=hints,
                answer_boxes=answers, category=spec.category, domain=spec.domain, sub_domain=spec.sub_domain,
                image_bytes=data, image_size=size, extra=spec.extra,
            )
        )  # fmt: skip
        result.stats["rejections" if not answers else "with_targets"] += 1
        result.stats["hints"] += len(hints)
    result.written = len(samples)
    _write_parts(job, samples, images, options)
    return result


def _detect(parsed: list[tuple[Item, RowSpec]], images: _Images, result: ChunkResult) -> list[tuple[Item, RowSpec]]:
    """Fill ``candidates`` from the detector, once per distinct (image, category) of the chunk."""
    from rexthinker.detect import run_detector

    options: PrepareOptions = _WORKER["options"]
    keys: dict[tuple[str, str], None] = {}  # distinct (image, category) pairs, in first-seen order
    kept = []
    for item, spec in parsed:
        try:
            images.pil(spec.image_name)
        except RowProblem as problem:
            result.problems.append(_problem(item, problem.kind, problem.reason))
            result.stats[f"dropped:{problem.kind}"] += 1
            continue
        kept.append((item, spec))
        keys[spec.image_name, spec.category] = None
    found = run_detector(_WORKER["detector"], options.detector, [images.pil(n) for n, _ in keys], [c for _, c in keys])
    boxes = {key: det.boxes for key, det in zip(keys, found)}
    for _, spec in kept:
        spec.candidates = [list(b) for b in boxes[spec.image_name, spec.category]]
    result.stats["detector_calls"] += len(keys)
    return kept


def _write_parts(job: ChunkJob, samples: list[RefSample], images: _Images, options: PrepareOptions) -> None:
    parts = _part_paths(job.work_dir, job.index)
    if "parquet" in options.formats:
        tmp = parts["parquet"].with_name(f".{parts['parquet'].name}.tmp")
        with GrpoParquetWriter(tmp, options.min_pixels, options.max_pixels, family=get_family(options.family)) as writer:
            for s in samples:
                writer.write(dataclasses.replace(s, image_bytes=images.png_bytes(s.image_name)))
        os.replace(tmp, parts["parquet"])
    if "humanref" in options.formats:
        image_dir = job.out_dir / HUMANREF_DIR / IMAGES_DIR
        for name in dict.fromkeys(s.image_name for s in samples):
            target = image_dir / name
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                _write_atomic(target, images.get(name)[0])
        lines = "".join(json.dumps(humanref_row(s), ensure_ascii=False) + "\n" for s in samples)
        _write_atomic(parts["humanref"], lines.encode("utf-8"))


# --------------------------------------------------------------------------------------------------
# The whole job (parent process)


@dataclass
class Summary:
    rows: int = 0
    written: int = 0
    chunks: int = 0
    resumed_chunks: int = 0
    seconds: float = 0.0
    stats: Counter = field(default_factory=Counter)
    problems: int = 0
    outputs: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        state = dataclasses.asdict(self)
        state["stats"] = dict(sorted(self.stats.items()))
        return state


def _chunks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _chunk_digest(options_digest: str, items: list[Item]) -> str:
    h = hashlib.blake2b(options_digest.encode(), digest_size=16)
    for item in items:
        h.update(
            json.dumps(
                [item.file, item.unit, item.line, item.payload, item.problem], sort_keys=True, ensure_ascii=False
            ).encode()
        )
    return h.hexdigest()


def _ordered(pool, fn: Callable, jobs: Iterable, window: int) -> Iterator:
    """``pool.imap`` with at most ``window`` jobs in flight, so a huge input is never queued whole."""
    pending: deque = deque()
    for job in jobs:
        pending.append(pool.apply_async(fn, (job,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def _open_work_dir(out_dir: Path, options: PrepareOptions, overwrite: bool) -> Path:
    work_dir = out_dir / WORK_DIR
    manifest = work_dir / "manifest.json"
    state = {"digest": options.digest(), "options": json.loads(json.dumps(dataclasses.asdict(options)))}
    if manifest.exists():
        previous = json.loads(manifest.read_text())
        if previous.get("digest") != state["digest"] and not overwrite:
            raise SystemExit(
                f"{out_dir} was prepared with other options ({previous.get('options')}); "
                "use --overwrite to start again, or another --out"
            )
    if overwrite:
        shutil.rmtree(work_dir, ignore_errors=True)
        shutil.rmtree(out_dir / HUMANREF_DIR, ignore_errors=True)
        for name in (GRPO_FILE, PROBLEMS_FILE, SUMMARY_FILE):
            (out_dir / name).unlink(missing_ok=True)
    (work_dir / "parts").mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(state, indent=2) + "\n")
    return work_dir


def prepare(
    items: Iterable[Item],
    image_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: PrepareOptions,
    workers: int = 1,
    overwrite: bool = False,
    total: int | None = None,
    desc: str = "prepare",
) -> Summary:
    """Run the whole job (see ``prepare --help``) and return its summary."""
    start = time.perf_counter()
    out_dir, image_root = Path(out_dir), Path(image_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir = _open_work_dir(out_dir, options, overwrite)
    options_digest = options.digest()
    summary = Summary()
    done: dict[int, dict] = {}
    bar = tqdm(total=total, unit="row", desc=desc, dynamic_ncols=True)

    def jobs() -> Iterator[ChunkJob]:
        for index, chunk in enumerate(_chunks(items, options.chunk_size)):
            summary.chunks += 1
            digest = _chunk_digest(options_digest, chunk)
            done_path = _part_paths(work_dir, index)["done"]
            if done_path.exists():
                record = json.loads(done_path.read_text())
                if record.get("digest") == digest:
                    done[index] = record
                    summary.resumed_chunks += 1
                    bar.update(len(chunk))
                    continue
            yield ChunkJob(index, chunk, digest, image_root, out_dir, work_dir)

    def finish(result: ChunkResult) -> None:
        record = {
            "digest": result.digest, "rows": result.rows, "written": result.written,
            "stats": dict(result.stats), "problems": result.problems,
        }  # fmt: skip
        _write_atomic(_part_paths(work_dir, result.index)["done"], json.dumps(record).encode())
        done[result.index] = record
        bar.update(result.rows)

    try:
        if workers <= 1:
            _init_worker(options)
            for job in jobs():
                finish(process_chunk(job))
        else:
            context = multiprocessing.get_context("spawn")
            with context.Pool(workers, initializer=_init_worker, initargs=(options,)) as pool:
                for result in _ordered(pool, process_chunk, jobs(), window=2 * workers):
                    finish(result)
    finally:
        bar.close()
        _WORKER.clear()

    _merge(out_dir, work_dir, options, done, summary)
    summary.seconds = time.perf_counter() - start
    report = {"options": json.loads(json.dumps(dataclasses.asdict(options))), "summary": summary.to_json()}
    (out_dir / SUMMARY_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return summary


def _merge(out_dir: Path, work_dir: Path, options: PrepareOptions, done: dict[int, dict], summary: Summary) -> None:
    """Concatenate the parts in chunk order into the final files (written under temporary names,
    then renamed, so an interrupted merge leaves no half file)."""
    indices = range(summary.chunks)
    missing = [i for i in indices if i not in done]
    if missing:
        raise RuntimeError(f"chunks {missing[:5]} did not finish")
    with open(out_dir / f".{PROBLEMS_FILE}.tmp", "w", encoding="utf-8") as fh:
        for i in indices:
            record = done[i]
            summary.rows += record["rows"]
            summary.written += record["written"]
            summary.stats.update(record["stats"])
            summary.problems += len(record["problems"])
            for problem in record["problems"]:
                fh.write(json.dumps(problem, ensure_ascii=False) + "\n")
    os.replace(out_dir / f".{PROBLEMS_FILE}.tmp", out_dir / PROBLEMS_FILE)
    if "parquet" in options.formats:
        tmp = out_dir / f".{GRPO_FILE}.tmp"
        schema = schema_for(get_family(options.family), options.min_pixels, options.max_pixels)
        with pq.ParquetWriter(tmp, schema) as writer:
            for i in indices:
                table = pq.read_table(_part_paths(work_dir, i)["parquet"], schema=schema)
                if table.num_rows:
                    writer.write_table(table)
        os.replace(tmp, out_dir / GRPO_FILE)
        summary.outputs.append(str(out_dir / GRPO_FILE))
    if "humanref" in options.formats:
        folder = out_dir / HUMANREF_DIR
        (folder / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{ANNOTATIONS_FILE}.tmp"
        with open(tmp, "wb") as fh:
            for i in indices:
                with open(_part_paths(work_dir, i)["humanref"], "rb") as part:
                    shutil.copyfileobj(part, fh)
        os.replace(tmp, folder / ANNOTATIONS_FILE)
        summary.outputs.append(str(folder / ANNOTATIONS_FILE))


def format_summary(summary: Summary, out_dir: Path, max_problems: int = 10) -> str:
    """The end-of-job report: counts, what happened to targets, problems by kind, first problems."""
    stats = summary.stats
    rate = summary.rows / summary.seconds if summary.seconds > 0 else math.inf
    lines = [
        f"{summary.rows:,} rows read, {summary.written:,} written in {summary.seconds:.1f} s ({rate:,.0f} rows/s); "
        f"{summary.chunks} chunks, {summary.resumed_chunks} resumed from an earlier run",
        f"  samples: {stats['with_targets']:,} with targets, {stats['rejections']:,} rejections, "
        f"{stats['hints'] / max(1, summary.written):.1f} hints per sample",
        f"  targets: {stats['targets:matched']:,} matched a candidate, {stats['targets:appended']:,} appended, "
        f"{stats['targets:replaced']:,} replaced a candidate",
    ]
    for label, prefix in (("dropped", "dropped:"), ("changed", "changed:")):
        kinds = {k[len(prefix) :]: v for k, v in stats.items() if k.startswith(prefix) and v}
        text = ", ".join(f"{k} {v:,}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])) or "none"
        lines.append(f"  {label}: {text}")
    for output in summary.outputs:
        lines.append(f"  wrote {output}")
    if summary.problems:
        lines.append(f"  {summary.problems:,} problems listed in {out_dir / PROBLEMS_FILE}; first ones:")
        with open(out_dir / PROBLEMS_FILE, encoding="utf-8") as fh:
            for _, line in zip(range(max_problems), fh):
                p = json.loads(line)
                unit = next(k for k in p if k not in ("file", "kind", "reason", "action", "id"))
                lines.append(f"    {p['file']} {unit} {p[unit]}: [{p['kind']}, {p['action']}] {p['reason']}")
    return "\n".join(lines)
