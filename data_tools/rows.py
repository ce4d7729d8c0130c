"""One input row of the row-making job (``prepare``, ``refcocog``, ``reallod``): parsed and checked
into a :class:`RowSpec`, its boxes fitted to the image, its targets matched to the candidates.

A row that cannot be used raises :class:`RowProblem`, which the job (:mod:`data_tools.row_job`)
reports with the row's file and line. The input contract and the --no-match policies are described
in ``python -m data_tools prepare --help``.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from rexthinker.boxes import box_iou
from rexthinker.data.errors import as_boxes

if TYPE_CHECKING:
    from data_tools.row_job import Item

_OPTIONAL = ("id", "candidate_boxes", "domain", "sub_domain", "image_size")
_RESERVED = ("answer_boxes", "think")  # HumanRef keys this tool computes


@dataclass
class RowSpec:
    id: str
    image_name: str
    referring: str
    category: str
    targets: list[list[float]]
    candidates: list[list[float]] | None
    domain: str
    sub_domain: str
    image_size: tuple[int, int] | None
    extra: dict


class RowProblem(Exception):
    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


def _target_boxes(value: object) -> list[list[float]]:
    """``ans`` as a list of boxes: one box, a list of boxes, or [] (rejection)."""
    if isinstance(value, list) and len(value) == 4 and all(isinstance(v, (int, float)) for v in value):
        value = [value]
    boxes = as_boxes(value, "ans")
    if len({tuple(b) for b in boxes}) != len(boxes):
        raise ValueError("ans lists the same box twice")
    return boxes


def parse_row(item: Item, need_candidates: bool) -> RowSpec:
    """Check one input row; raises :class:`RowProblem`."""
    if item.problem is not None:
        raise RowProblem(*item.problem)
    if isinstance(item.payload, dict):
        row = item.payload
    else:
        try:
            row = json.loads(item.payload)
        except json.JSONDecodeError as exc:
            raise RowProblem("bad_json", f"not valid JSON: {exc}") from None
    if not isinstance(row, dict):
        raise RowProblem("bad_json", f"expected a JSON object, got {type(row).__name__}")
    missing = [k for k in ("image_name", "referring", "category", "ans") if k not in row]
    if need_candidates and "candidate_boxes" not in row:
        missing.append("candidate_boxes")
    if missing:
        raise RowProblem("missing_field", f"missing keys {missing}")
    reserved = sorted(set(row) & set(_RESERVED))
    if reserved:
        raise RowProblem("bad_field", f"keys {reserved} are made by this tool and cannot be given")
    for key in ("image_name", "referring", "category"):
        if not isinstance(row[key], str) or not row[key].strip():
            raise RowProblem("bad_field", f"{key} must be a non-empty string, got {row[key]!r:.60}")
    name = PurePosixPath(row["image_name"])
    if name.is_absolute() or ".." in name.parts:
        raise RowProblem(
            "bad_field", f"image_name must be a relative path inside the image root: {row['image_name']!r}"
        )
    try:
        targets = _target_boxes(row["ans"])
        candidates = as_boxes(row["candidate_boxes"], "candidate_boxes") if need_candidates else None
    except ValueError as exc:
        raise RowProblem("bad_box", str(exc)) from None
    size = row.get("image_size")
    if size is not None and not (
        isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)
    ):
        raise RowProblem("bad_field", f"image_size must be [width, height], got {size!r:.60}")
    return RowSpec(
        id=str(row.get("id", f"{Path(item.file).stem}-{item.line}")),
        image_name=row["image_name"],
        referring=row["referring"].strip(),
        category=row["category"].strip(),
        targets=targets,
        candidates=candidates,
        domain=str(row.get("domain", "rejection" if not targets else "")),
        sub_domain=str(row.get("sub_domain", "")),
        image_size=tuple(size) if size is not None else None,
        extra={
            k: v
            for k, v in row.items()
            if k not in _OPTIONAL and k not in ("image_name", "referring", "category", "ans")
        },
    )


# --------------------------------------------------------------------------------------------------
# Boxes: inside the image, targets matched to candidates


def fit_boxes(boxes: list[list[float]], size: tuple[int, int], what: str, clip: bool) -> tuple[list[list[float]], int]:
    """Boxes checked against the ``(width, height)`` image: degenerate ones and, unless ``clip``,
    ones reaching outside raise :class:`RowProblem`; with ``clip`` they are clipped (a box with no
    area left inside still raises). Returns the boxes and how many were clipped."""
    width, height = size
    out, clipped = [], 0
    for k, box in enumerate(boxes):
        x0, y0, x1, y1 = box
        if not (x1 > x0 and y1 > y0):
            raise RowProblem("bad_box", f"{what}[{k}] {box} has no area (need x0 < x1 and y0 < y1)")
        if x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height:
            out.append(list(box))
            continue
        inside = [max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)]
        if not clip or not (inside[2] > inside[0] and inside[3] > inside[1]):
            raise RowProblem("box_outside", f"{what}[{k}] {box} reaches outside the {width}x{height} image")
        out.append(inside)
        clipped += 1
    return out, clipped


def attach_targets(
    candidates: list[list[float]], targets: list[list[float]], no_match: str, match_iou: float = 0.5
) -> tuple[list[list[float]], list[list[float]], Counter]:
    """``(hints, answers, counts)``: each target matched one-to-one to a candidate with
    IoU >= ``match_iou`` (highest IoU first) and answered by that candidate's box; the others are
    handled by ``no_match`` (see ``prepare --help``). ``counts`` has ``matched``, ``appended`` and
    ``replaced``. Raises :class:`RowProblem` (kind ``no_match``) under ``"drop"``."""
    hints = [list(c) for c in candidates]
    pairs = sorted(
        ((box_iou(t, c), ti, ci) for ti, t in enumerate(targets) for ci, c in enumerate(hints)),
        key=lambda p: (-p[0], p[1], p[2]),
    )
    slot: dict[int, int] = {}  # target index -> hint index
    used: set[int] = set()
    for value, ti, ci in pairs:
        if value < match_iou:
            break
        if ti not in slot and ci not in used:
            slot[ti] = ci
            used.add(ci)
    counts = Counter(matched=len(slot), appended=0, replaced=0)
    for ti, target in enumerate(targets):
        if ti in slot:
            continue
        best, best_ci = max(
            ((box_iou(target, hints[ci]), ci) for ci in range(len(hints)) if ci not in used), default=(0.0, -1)
        )
        if no_match == "drop":
            raise RowProblem(
                "no_match", f"target {target} overlaps no candidate at IoU >= {match_iou} (best {best:.2f})"
            )
        if no_match == "replace" and best > 0:
            hints[best_ci] = list(target)
            slot[ti] = best_ci
            counts["replaced"] += 1
        else:
            hints.append(list(target))
            slot[ti] = len(hints) - 1
            counts["appended"] += 1
        used.add(slot[ti])
    answers = [list(hints[slot[ti]]) for ti in range(len(targets))]
    return hints, answers, counts


def shuffled_hints(hints: list[list[float]], row_id: str) -> list[list[float]]:
    """``hints`` in a shuffled order seeded by ``row_id``, so every run gives the same order."""
    seed = int.from_bytes(hashlib.blake2b(row_id.encode(), digest_size=8).digest(), "big")
    order = list(range(len(hints)))
    random.Random(seed).shuffle(order)
    return [hints[i] for i in order]
