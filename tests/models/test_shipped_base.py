"""The base committed in models/demo-base (what `make demo` starts from): it loads, it is the build its
model card describes, and it has the skills the card reports, re-measured on a fixed handful of
held-out chats."""

from __future__ import annotations

import json

import pytest

from rexthinker.models import base

pytestmark = pytest.mark.skipif(not (base.SHIPPED / base.MARKER).exists(), reason="no shipped base in this checkout")

# The shipped build (build 7, the GPU-mode build) on the first 16 chats of its held-out split, bf16
# weights and fp32 compute, when it was shipped: box_exact 1.000 and colour_acc 1.000 (1.000 and 0.999
# on 512 chats, `python -m rexthinker.models.base --measure models/demo-base --chats 512`). Chance for
# colours is 0.17, and about 0.35 for a model that only knows which colours a scene has; the floors are
# the bars (0.95 box, 0.80 colour) with room for a rebuild's noise on 16 chats above the colour one.
FLOORS = {"box_exact": 0.95, "colour_acc": 0.90}


def test_shipped_base_is_the_build_its_card_describes():
    path = base.shipped()
    chain = base.lineage(path)
    card = (path / "README.md").read_text()
    for build in chain:
        assert base.command(build["recipe"]) in card
    info = json.loads((path / base.MARKER).read_text())
    assert info["dtype"] == "bfloat16" and info["recipe"] == chain[-1]["recipe"]
    assert (path / "model.safetensors").stat().st_size < 30e6


def test_shipped_base_has_its_skills():
    probes = base.measure(base.shipped(), chats=16)
    for name, floor in FLOORS.items():
        assert probes[name] >= floor, (name, probes)
