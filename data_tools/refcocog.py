"""Make training rows from RefCOCO / RefCOCO+ / RefCOCOg annotations, one folder per split.

Input: the refs pickle of the standard release (``refs(umd).p`` for RefCOCOg, ``refs(unc).p`` for
RefCOCO/+) and the COCO instances file shipped beside it (``instances.json``), plus the COCO
``train2014`` images. Every sentence of every ref becomes one sample: the referring text is the
sentence's ``sent``, the target is the ref's annotation box and the category its COCO category.

Candidates (the hints):
  gt        every ground-truth box of the target's category in the image, in annotation order
            (crowd boxes left out); detector-free, and the target is always one of them
  detector  the detector's boxes for the category name (see ``prepare --help`` for the options and
            for --no-match, which decides what happens to a target no detection overlaps)

The refs pickle is read with a restricted unpickler that builds plain containers only (dict, list,
tuple, set, str, numbers); a pickle that asks for any other class is refused, so a tampered file
cannot run code. A ref that names a missing image or annotation is reported and skipped like any
bad row. Splits are kept: --out/<split>/ holds what ``prepare`` writes (grpo.parquet, humanref/,
problems.jsonl, prepare.json), ids are ``<name>-<ref_id>-<sent_id>``, domain is --name and
sub_domain the split.

Example:
  python -m data_tools refcocog --refs refcocog/refs(umd).p --instances refcocog/instances.json \\
      --image-root coco/train2014 --out data/refcocog --candidates gt
"""

from __future__ import annotations

import argparse
import json
import pickle
from collections import defaultdict
from pathlib import Path

from data_tools.row_args import add_common_arguments, checked_options
from data_tools.row_job import Item, format_summary, prepare
from rexthinker.coords import xywh_to_xyxy
from rexthinker.data.errors import DataError

HELP = "RefCOCO/+/g refs pickle + COCO instances -> GRPO parquet / HumanRef rows per split"

_PLAIN = {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float", "bool", "complex"}
ALLOWED_CLASSES = {(m, n) for m in ("builtins", "__builtin__") for n in _PLAIN} | {("collections", "OrderedDict")}


class RefusedClass(pickle.UnpicklingError):
    """The pickle asked for a class outside ``ALLOWED_CLASSES``."""


class PlainUnpickler(pickle.Unpickler):
    """Unpickler that can only build the classes in ``ALLOWED_CLASSES`` (plain containers)."""

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED_CLASSES:
            return super().find_class(module, name)
        raise RefusedClass(f"the pickle asks for {module}.{name}, which is not a plain container; refusing to load it")


def load_refs(path: str | Path) -> list:
    """The refs list of a RefCOCO-family pickle, read with :class:`PlainUnpickler`.

    Strings pickled by Python 2 are decoded as UTF-8 (Latin-1 if that fails). Raises
    :class:`DataError` for a refused or unreadable pickle."""
    path = Path(path)
    for encoding in ("utf-8", "latin1"):
        try:
            with open(path, "rb") as fh:
                refs = PlainUnpickler(fh, encoding=encoding).load()
            break
        except UnicodeDecodeError:
            continue
        except RefusedClass as exc:
            raise DataError(f"{path}: {exc}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
            raise DataError(f"{path}: not a readable refs pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(refs, list):
        raise DataError(f"{path}: expected a list of refs, got {type(refs).__name__}")
    return refs


class Instances:
    """The parts of a COCO instances file the conversion needs."""

    def __init__(self, path: str | Path):
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            self.images = {img["id"]: img for img in data["images"]}
            self.anns = {ann["id"]: ann for ann in data["annotations"]}
            self.categories = {cat["id"]: cat["name"] for cat in data["categories"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not a COCO instances file ({type(exc).__name__}: {exc})") from None
        self.by_image_category: dict[tuple, list[dict]] = defaultdict(list)
        for ann in sorted(self.anns.values(), key=lambda a: a["id"]):
            self.by_image_category[ann["image_id"], ann["category_id"]].append(ann)


def _box(ann: dict) -> list[float]:
    box = ann.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
        raise ValueError(f"annotation {ann.get('id')} has no [x, y, w, h] bbox")
    return xywh_to_xyxy(box)


def ref_items(
    refs: list, instances: Instances, refs_file: str, name: str, gt_candidates: bool
) -> dict[str, list[Item]]:
    """Items for ``prepare``, grouped by split (in the order splits first appear)."""
    by_split: dict[str, list[Item]] = {}
    for index, ref in enumerate(refs):
        split = ref.get("split", "unknown") if isinstance(ref, dict) else "unknown"
        items = by_split.setdefault(str(split), [])
        try:
            rows = _ref_rows(ref, instances, name, gt_candidates)
        except (KeyError, ValueError, TypeError) as exc:
            reason = exc.args[0] if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            items.append(Item(refs_file, index, None, unit="ref", problem=("bad_ref", str(reason))))
            continue
        items.extend(Item(refs_file, index, row, unit="ref") for row in rows)
    return by_split


def _ref_rows(ref: dict, instances: Instances, name: str, gt_candidates: bool) -> list[dict]:
    if not isinstance(ref, dict):
        raise ValueError(f"a ref must be a dict, got {type(ref).__name__}")
    ref_id, ann_id, image_id = ref["ref_id"], ref["ann_id"], ref["image_id"]
    image = instances.images.get(image_id)
    if image is None:
        raise ValueError(f"ref {ref_id}: image {image_id} is not in the instances file")
    ann = instances.anns.get(ann_id)
    if ann is None:
        raise ValueError(f"ref {ref_id}: annotation {ann_id} is not in the instances file")
    category_id = ref.get("category_id", ann["category_id"])
    category = instances.categories.get(category_id)
    if category is None:
        raise ValueError(f"ref {ref_id}: category {category_id} is not in the instances file")
    target = _box(ann)
    candidates = None
    if gt_candidates:
        same = instances.by_image_category[image_id, category_id]
        candidates = [_box(a) for a in same if not a.get("iscrowd") or a["id"] == ann_id]
    sentences = ref["sentences"]
    if not isinstance(sentences, list) or not sentences:
        raise ValueError(f"ref {ref_id}: no sentences")
    rows = []
    for k, sentence in enumerate(sentences):
        text = sentence.get("sent") if isinstance(sentence, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"ref {ref_id}: sentence {k} has no text")
        row = {
            "id": f"{name}-{ref_id}-{sentence.get('sent_id', k)}",
            "image_name": image["file_name"],
            "referring": text.strip(),
            "category": category,
            "ans": target,
            "domain": name,
            "sub_domain": str(ref.get("split", "")),
            "ref_id": ref_id,
            "ann_id": ann_id,
        }
        if candidates is not None:
            row["candidate_boxes"] = candidates
        if isinstance(image.get("width"), int) and isinstance(image.get("height"), int):
            row["image_size"] = [image["width"], image["height"]]
        rows.append(row)
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--refs", required=True, type=Path, help="refs pickle, e.g. refcocog/refs(umd).p")
    parser.add_argument("--instances", required=True, type=Path, help="COCO instances.json of the same release")
    parser.add_argument("--name", default="refcocog", help="dataset name for ids and domain (default refcocog)")
    parser.add_argument("--splits", help="comma-separated splits to make (default: every split in the refs)")
    add_common_arguments(parser, ("gt", "detector"), "gt")


def run(args: argparse.Namespace) -> int:
    options, workers = checked_options(args)
    try:
        refs = load_refs(args.refs)
        instances = Instances(args.instances)
    except DataError as exc:
        raise SystemExit(str(exc)) from None
    by_split = ref_items(refs, instances, str(args.refs), args.name, gt_candidates=args.candidates == "gt")
    wanted = [s.strip() for s in args.splits.split(",")] if args.splits else list(by_split)
    unknown = [s for s in wanted if s not in by_split]
    if unknown:
        raise SystemExit(f"splits {unknown} are not in {args.refs}; it has {sorted(by_split)}")
    for split in wanted:
        items = by_split[split]
        out = args.out / split
        summary = prepare(
            items, args.image_root, out, options, workers, args.overwrite, len(items), f"{args.name} {split}"
        )
        print(f"== {split}")
        print(format_summary(summary, out))
    return 0
