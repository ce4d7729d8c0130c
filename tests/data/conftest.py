"""Small SynthRef sets shared by the data tests (generated once per session)."""

from __future__ import annotations

import pytest

from rexthinker.data.synthref import generate


@pytest.fixture(scope="session")
def samples():
    """A dozen mixed-domain samples: enough for round trips."""
    return generate(12, seed=7)


@pytest.fixture(scope="session")
def many_samples():
    """A few hundred samples for statistics (about 1.5 s to make)."""
    return generate(400, seed=11)
