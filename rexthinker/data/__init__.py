"""Dataset samples, the SynthRef generator and readers/writers for the three on-disk formats."""

from rexthinker.data.sample import RefSample

__all__ = ["RefSample"]
