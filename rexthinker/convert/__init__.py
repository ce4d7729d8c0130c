"""Checkpoint conversion to a verified Hugging Face folder (``scripts/convert_checkpoint.py``).

``layouts`` finds what a path holds, ``keys`` renames and checks tensor names (one table per
layout), ``reference`` merges the reference trainer's per-rank files, ``verify`` checks the written
folder, ``card`` writes its README, ``pipeline`` runs the whole conversion.
"""

from rexthinker.convert.keys import ConversionError
from rexthinker.convert.pipeline import DTYPES, ConversionReport, convert, export_adapter, push_to_hub

__all__ = ["DTYPES", "ConversionError", "ConversionReport", "convert", "export_adapter", "push_to_hub"]
