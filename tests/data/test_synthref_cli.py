"""The ``python -m data_tools synthref`` command: layout, manifest, readable outputs, overrides."""

from __future__ import annotations

import json

import pytest

from data_tools.__main__ import main
from rexthinker.data.cot_tsv import CotTsvReader
from rexthinker.data.grpo_parquet import read_grpo_parquet
from rexthinker.data.humanref import read_humanref
from rexthinker.data.synthref import generate


def test_cli_writes_every_split_in_every_format(tmp_path, capsys):
    out = tmp_path / "sr"
    argv = ["synthref", "--out", str(out), "--train", "5", "--val", "3", "--test", "2", "--seed", "4", "--workers", "1"]
    assert main([*argv, "persons=[3,5]"]) == 0
    printed = capsys.readouterr().out
    assert "mean targets" in printed and "rejection %" in printed
    manifest = json.loads((out / "synthref.json").read_text())
    assert manifest["counts"] == {"train": 5, "val": 3, "test": 2} and manifest["config"]["persons"] == [3, 5]
    for split, n in manifest["counts"].items():
        humanref = read_humanref(out / split / "humanref" / "annotations.jsonl")
        cot = list(CotTsvReader.from_prefix(out / split / "cot" / "synthref"))
        grpo = read_grpo_parquet(out / split / "grpo" / "synthref.parquet")
        assert len(humanref) == len(cot) == len(grpo) == n
        assert humanref == cot
        assert all(3 <= len(s.candidate_boxes) <= 5 for s in humanref)
    assert read_humanref(out / "val" / "humanref" / "annotations.jsonl")[0].id == "synthref-val-000000"


def test_cli_matches_the_library(tmp_path):
    out = tmp_path / "sr"
    main(["synthref", "--out", str(out), "--train", "4", "--val", "0", "--test", "0", "--formats", "humanref"])
    assert read_humanref(out / "train" / "humanref" / "annotations.jsonl") == generate(4, seed=0)
    assert not (out / "train" / "cot").exists()


def test_cli_help_and_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["synthref", "--help"])
    assert exit_info.value.code == 0 and "--formats" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown formats"):
        main(["synthref", "--out", str(tmp_path), "--formats", "csv"])
    with pytest.raises(SystemExit, match="unknown SynthRef setting"):
        main(["synthref", "--out", str(tmp_path), "nonsense=1"])
