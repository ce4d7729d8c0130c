"""The SFT tests' SynthRef files, shared with the reliability tests."""

from tests.sft.conftest import sft_data  # noqa: F401
