"""SFT on a corrupt HumanRef-CoT file: ``data.on_error=skip`` trains to the end on the good rows and
lists the bad ones; the default stops before the model takes a step, naming the file and line."""

from __future__ import annotations

import json
import re

import pytest

from rexthinker.data.errors import DataError
from rexthinker.data.synthref import generate
from rexthinker.sft.trainer import SFTTrainer
from tests.data.corrupt import corrupt_cot_tsv


@pytest.fixture(scope="module")
def corrupt_cot(tmp_path_factory):
    return corrupt_cot_tsv(generate(8, seed=5, split="train"), tmp_path_factory.mktemp("corrupt_cot") / "train")


def test_skip_trains_to_the_end_on_the_good_rows(make_cfg, corrupt_cot, capsys):
    run = SFTTrainer(make_cfg(f"data.train=[{corrupt_cot.path}]", "data.on_error=skip"))
    assert [run.dataset.samples[i].id for i in range(len(run.dataset))] == corrupt_cot.kept
    assert f"[sft] data.train: skipped {len(corrupt_cot.errors)} bad rows" in capsys.readouterr().out
    run.fit()
    losses = [json.loads(line)["loss"] for line in (run.out / "metrics.jsonl").read_text().splitlines()]
    assert run.step == 2 and len(losses) == 2
    rows = [json.loads(line) for line in (run.out / "data_errors.jsonl").read_text().splitlines()]
    assert [(r["line"], r["kind"]) for r in rows if r["action"] == "skipped"] == corrupt_cot.errors
    assert [(r["line"], r["kind"]) for r in rows if r["action"] == "kept"] == corrupt_cot.warnings
    assert {r["file"] for r in rows} == {str(corrupt_cot.report_file)}
    run.cleanup()


def test_raise_stops_before_the_first_step(make_cfg, corrupt_cot):
    line = corrupt_cot.errors[0][0]
    with pytest.raises(DataError, match=rf"^{re.escape(str(corrupt_cot.report_file))} line {line}: "):
        SFTTrainer(make_cfg(f"data.train=[{corrupt_cot.path}]"))
