"""Files of every on-disk format holding one row of each corruption kind among good rows.

Each builder takes good samples (SynthRef, original pixels), writes them with the project's own
writers around the bad rows, and returns a :class:`Corrupt` saying what a reader must make of it:
the bad rows by (line, kind), the rows kept with a warning, the ids of every row kept, in order.
The trainer tests use them too.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from rexthinker.contracts.answer import answer_json
from rexthinker.contracts.hint import grpo_problem
from rexthinker.coords import model_frame_size
from rexthinker.data.cot_tsv import write_cot_tsv
from rexthinker.data.grpo_parquet import SCHEMA, grpo_row
from rexthinker.data.humanref import write_humanref
from rexthinker.data.sample import RefSample, encode_png

THIN_PNG = encode_png(Image.new("RGB", (600, 2), (200, 90, 40)))  # the prompt builder refuses 600x2


@dataclasses.dataclass
class Corrupt:
    path: Path  # what open_samples takes
    report_file: Path  # the file the report names
    errors: list[tuple[int, str]]  # (line or row, kind) of every bad row
    warnings: list[tuple[int, str]]  # rows kept with a warning
    kept: list[str]  # ids of the rows a skipping reader keeps, in order


def _with_box(base: RefSample, name: str, box: list[float]) -> RefSample:
    """``base`` with ``box`` as an extra first hint (its answers untouched); its own image file."""
    return dataclasses.replace(base, id=name, image_name=f"{name}.png", candidate_boxes=[box, *base.candidate_boxes])


def _box_rows(base: RefSample) -> list[tuple[RefSample, str | None]]:
    """The box corruptions every original-pixel format shares, as (sample, error kind or None)."""
    width, height = base.image_size
    return [
        (_with_box(base, "swapped_box", [50, 10, 20, 40]), "swapped_box"),
        (_with_box(base, "degenerate_box", [20, 10, 20, 40]), "degenerate_box"),
        (_with_box(base, "box_outside", [width + 10, 5, width + 40, 30]), "box_outside"),
        (_with_box(base, "box_clamped", [-5, 10, 40, 60]), None),  # kept, with a warning
    ]


def _rewrite_lines(path: Path, edits: dict[int, callable]) -> None:
    """Replace 1-based lines of a text file by ``edit(line)``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, edit in edits.items():
        lines[number - 1] = edit(lines[number - 1])
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def corrupt_cot_tsv(good: list[RefSample], prefix: Path) -> Corrupt:
    """A HumanRef-CoT trio: good rows, then every bad kind, then good rows again."""
    base = good[0]
    thin = dataclasses.replace(base, id="bad_image_size", image_name="thin.png", image_bytes=THIN_PNG,
                               candidate_boxes=[[0, 0, 10, 2]], answer_boxes=[])  # fmt: skip
    rows = [
        (good[0], None),
        (dataclasses.replace(base, id="bad_json"), "bad_json"),
        (dataclasses.replace(base, id="bad_base64", image_name="bad_base64.png"), "bad_base64"),
        (good[1], None),
        (dataclasses.replace(base, id="bad_image", image_name="truncated.png", image_bytes=base.image_bytes[:150]), "bad_image"),
        (thin, "bad_image_size"),
        (dataclasses.replace(base, id="bad_index"), "bad_index"),
        *_box_rows(base),
        *[(s, None) for s in good[2:]],
    ]
    images, annotations, lineidx = write_cot_tsv([s for s, _ in rows], prefix)
    lines = {s.id: n for n, (s, _) in enumerate(rows, 1)}

    def bad_index(line: str) -> str:
        offset, record = line.split("\t", 1)
        record = json.loads(record)
        record["region_map"] = {ref: [99] for ref in record["region_map"]}
        return f"{offset}\t{json.dumps(record)}"

    _rewrite_lines(annotations, {lines["bad_json"]: lambda line: line.split("\t")[0] + '\t{"gt_boxes": [[1, 2, 3, 4]',
                                 lines["bad_index"]: bad_index})  # fmt: skip
    lineidx.unlink()  # the annotation rows moved: the reader indexes them again
    blob = images.read_bytes()
    start = blob.index(b"bad_base64.png\t") + len(b"bad_base64.png\t")
    end = blob.index(b"\n", start)
    images.write_bytes(blob[:start] + b"!" * (end - start) + blob[end:])  # same length: offsets stay valid
    return _result(prefix, annotations, rows)


def corrupt_humanref(good: list[RefSample], out_dir: Path) -> Corrupt:
    """A HumanRef ``annotations.jsonl`` with ``images/``: every bad kind among good rows."""
    base = good[0]
    thin = dataclasses.replace(base, id="bad_image_size", image_name="thin.png", image_bytes=THIN_PNG,
                               candidate_boxes=[[0, 0, 10, 2]], answer_boxes=[])  # fmt: skip
    rows = [
        (good[0], None),
        (dataclasses.replace(base, id="bad_json"), "bad_json"),
        (dataclasses.replace(base, id="missing_field"), "missing_field"),
        (dataclasses.replace(base, id="bad_box"), "bad_box"),
        (good[1], None),
        (dataclasses.replace(base, id="missing_image", image_name="missing.png"), "missing_image"),
        (dataclasses.replace(base, id="bad_image", image_name="truncated.png", image_bytes=base.image_bytes[:150]), "bad_image"),
        (thin, "bad_image_size"),
        *_box_rows(base),
        (dataclasses.replace(base, id="answer_not_in_hints", answer_boxes=[[1, 2, 30, 40]]), "answer_not_in_hints"),
        *[(s, None) for s in good[2:]],
    ]
    path = write_humanref([s for s, _ in rows], out_dir)
    lines = {s.id: n for n, (s, _) in enumerate(rows, 1)}

    def edit(key: str, value):
        def apply(line: str) -> str:
            row = json.loads(line)
            if value is None:
                del row[key]
            else:
                row[key] = value
            return json.dumps(row)

        return apply

    _rewrite_lines(path, {lines["bad_json"]: lambda line: line[: len(line) // 2], lines["missing_field"]: edit("referring", None),
                          lines["bad_box"]: edit("candidate_boxes", [[1, 2, 3]])})  # fmt: skip
    (out_dir / "images" / "missing.png").unlink()
    return _result(path, path, rows)


def corrupt_grpo_parquet(good: list[RefSample], path: Path, min_pixels: int, max_pixels: int) -> Corrupt:
    """A GRPO parquet (boxes in the model frame of these limits): every bad kind among good rows."""
    base = good[0]
    frame = model_frame_size(*base.image_size, min_pixels, max_pixels)
    good_row = grpo_row(base, min_pixels, max_pixels)
    hint = [10, 10, 40, 60]

    def row(name: str, hints: list, answers: list | None = None, image: bytes | None = None) -> tuple[dict, str]:
        cells = {"images": image or good_row["images"], "problem": grpo_problem(base.referring, "person", hints),
                 "answer": answer_json(hints[-1:] if answers is None else answers, base.referring)}  # fmt: skip
        return cells, name

    rows = [
        (good_row, None),
        row("bad_image", [hint], image=good_row["images"][:150]),
        row("bad_image_size", [[0, 0, 10, 1]], image=THIN_PNG),
        ({**good_row, "problem": "Find the person."}, "bad_problem"),
        ({**good_row, "answer": '```json\n[{"bbox_2d": [1, 2]}]\n```'}, "bad_answer"),
        (grpo_row(good[1], min_pixels, max_pixels), None),
        row("swapped_box", [[40, 10, 10, 60], hint]),
        row("degenerate_box", [[10, 10, 10, 60], hint]),
        row("box_outside", [[-3, 10, 40, 60], hint]),  # a negative coordinate: nothing clamps it here
        row("box_outside", [[10, 10, frame[0] + 5, 60], hint]),  # past the model frame
        row("answer_not_in_hints", [hint], answers=[[11, 10, 40, 60]]),
        *[(grpo_row(s, min_pixels, max_pixels), None) for s in good[2:]],
    ]
    pq.write_table(pa.table({c: [r[c] for r, _ in rows] for c in SCHEMA.names}, schema=SCHEMA), path)
    return Corrupt(path, path, [(n, kind) for n, (_, kind) in enumerate(rows) if kind], [],
                   [f"{path.stem}-{n}" for n, (_, kind) in enumerate(rows) if not kind])  # fmt: skip


def _result(path: Path, report_file: Path, rows: list[tuple[RefSample, str | None]]) -> Corrupt:
    numbered = list(enumerate(rows, 1))
    return Corrupt(
        path,
        report_file,
        [(n, kind) for n, (_, kind) in numbered if kind],
        [(n, "box_clamped") for n, (s, kind) in numbered if s.id == "box_clamped"],
        [s.id for _, (s, kind) in numbered if not kind],
    )
