"""``refcocog``: refs pickle + COCO instances (real schema, made here) -> rows per split; the
restricted unpickler refuses anything but plain containers."""

from __future__ import annotations

import json
import os
import pickle

import pytest

from data_tools.__main__ import main
from data_tools.refcocog import load_refs
from rexthinker.coords import xyxy_to_xywh
from rexthinker.data.errors import DataError
from rexthinker.data.grpo_parquet import read_grpo_parquet
from rexthinker.data.humanref import read_humanref

PERSON, DOG = 1, 18


@pytest.fixture(scope="module")
def refcoco(tmp_path_factory, synth_samples):
    """Three images; refs in train and val with two sentences each, one ref pointing at a missing
    annotation. Image 0 also has a dog box and a crowd box; both must stay out of the hints."""
    root = tmp_path_factory.mktemp("refcoco")
    (root / "train2014").mkdir()
    images, annotations, refs = [], [], []
    ann_id = 100
    for k, s in enumerate(synth_samples[:3]):
        image_id = 1000 + k
        name = f"COCO_train2014_{image_id:012d}.png"
        (root / "train2014" / name).write_bytes(s.image_bytes)
        images.append({"id": image_id, "file_name": name, "width": s.image_size[0], "height": s.image_size[1]})
        first = ann_id
        for box in s.candidate_boxes:
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": PERSON,
                    "bbox": xyxy_to_xywh(box),
                    "iscrowd": 0,
                    "area": 1.0,
                }
            )
            ann_id += 1
        if k == 0:
            annotations.append(
                {"id": ann_id, "image_id": image_id, "category_id": DOG, "bbox": [1, 1, 20, 20], "iscrowd": 0}
            )
            annotations.append(
                {"id": ann_id + 1, "image_id": image_id, "category_id": PERSON, "bbox": [0, 0, 50, 50], "iscrowd": 1}
            )
            ann_id += 2
        target = first + len(s.candidate_boxes) - 1
        refs.append(
            {
                "ref_id": 10 + k,
                "ann_id": target,
                "image_id": image_id,
                "split": "train" if k < 2 else "val",
                "category_id": PERSON,
                "file_name": f"COCO_train2014_{image_id:012d}_{target}.jpg",
                "sent_ids": [2 * k, 2 * k + 1],
                "sentences": [
                    {
                        "sent_id": 2 * k,
                        "sent": f"the last person {k}",
                        "raw": f"The last person {k}.",
                        "tokens": ["the", "last", "person"],
                    },
                    {
                        "sent_id": 2 * k + 1,
                        "sent": f"person number {k}",
                        "raw": f"Person number {k}",
                        "tokens": ["person", "number"],
                    },
                ],
            }
        )
    refs.append({**refs[0], "ref_id": 99, "ann_id": 999999})
    instances = {
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": PERSON, "name": "person", "supercategory": "person"},
            {"id": DOG, "name": "dog", "supercategory": "animal"},
        ],
    }
    (root / "instances.json").write_text(json.dumps(instances))
    with open(root / "refs(umd).p", "wb") as fh:
        pickle.dump(refs, fh, protocol=2)
    return root


def test_gt_candidates_per_split(tmp_path, refcoco, synth_samples, capsys):
    out = tmp_path / "out"
    argv = [
        "refcocog",
        "--refs",
        str(refcoco / "refs(umd).p"),
        "--instances",
        str(refcoco / "instances.json"),
        "--image-root",
        str(refcoco / "train2014"),
        "--out",
        str(out),
        "--workers",
        "1",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "== train" in printed and "== val" in printed and "bad_ref 1" in printed
    train = read_humanref(out / "train" / "humanref" / "annotations.jsonl")
    val = read_humanref(out / "val" / "humanref" / "annotations.jsonl")
    assert [s.id for s in train] == ["refcocog-10-0", "refcocog-10-1", "refcocog-11-2", "refcocog-11-3"]
    assert [s.id for s in val] == ["refcocog-12-4", "refcocog-12-5"]
    for s, source in zip(train[::2] + val[::2], synth_samples[:3]):
        assert s.candidate_boxes == [list(map(float, b)) for b in source.candidate_boxes]  # no dog, no crowd
        assert s.answer_boxes == [s.candidate_boxes[-1]]
        assert s.domain == "refcocog" and s.extra["ref_id"] in (10, 11, 12)
    assert train[0].referring == "the last person 0" and train[0].sub_domain == "train"
    assert len(read_grpo_parquet(out / "val" / "grpo.parquet")) == 2
    problem = json.loads((out / "train" / "problems.jsonl").read_text())
    assert problem["ref"] == 3 and problem["kind"] == "bad_ref" and "999999" in problem["reason"]
    assert main([*argv, "--splits", "val", "--formats", "parquet", "--out", str(tmp_path / "v")]) == 0
    assert not (tmp_path / "v" / "train").exists()
    with pytest.raises(SystemExit, match="not in"):
        main([*argv, "--splits", "testB"])


class _Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.makedirs, (self.path,)


class _Evaluator:
    def __reduce__(self):
        return eval, ("1 + 1",)


def test_a_pickle_that_asks_for_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "refs.p"
    bad.write_bytes(pickle.dumps([{"ref_id": 1, "x": _Exploit(str(marker))}], protocol=2))
    with pytest.raises(DataError, match=r"makedirs.*not a plain container"):
        load_refs(bad)
    assert not marker.exists()
    bad.write_bytes(pickle.dumps([_Evaluator()]))
    with pytest.raises(DataError, match="builtins.eval"):
        load_refs(bad)
    with pytest.raises(SystemExit, match="not a plain container"):
        main(
            [
                "refcocog",
                "--refs",
                str(bad),
                "--instances",
                str(bad),
                "--image-root",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
            ]
        )


def test_plain_pickles_load_including_python2_strings(tmp_path):
    path = tmp_path / "refs.p"
    refs = [{"ref_id": 1, "sentences": [{"sent": "caf\u00e9 man"}], "box": (1.5, 2), "ids": {3, 4}}]
    path.write_bytes(pickle.dumps(refs, protocol=2))
    assert load_refs(path) == refs
    # a Python 2 str is a byte string in the pickle (opcode SHORT_BINSTRING); UTF-8 text comes back intact
    raw = "caf\u00e9".encode()
    py2 = b"\x80\x02]q\x00U" + bytes([len(raw)]) + raw + b"q\x01a."
    path.write_bytes(py2)
    assert load_refs(path) == ["caf\u00e9"]
    path.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="not a readable refs pickle"):
        load_refs(path)
