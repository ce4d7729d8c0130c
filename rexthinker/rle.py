"""COCO run-length masks: the one codec. SynthRef writes them, the visualiser draws them and the
metric tests points against them.

A mask is ``{"size": [h, w], "counts": ...}``; its runs are column-major and alternate background
and foreground, starting with background (possibly an empty run). ``counts`` is either the list of
run lengths (what :func:`encode` writes) or COCO's compressed string (:func:`compress`); every
reader takes both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain

import numpy as np


def encode(mask: np.ndarray) -> dict:
    """The uncompressed RLE of a binary ``(h, w)`` mask."""
    h, w = mask.shape
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs.insert(0, 0)
    return {"size": [h, w], "counts": runs}


def decode(rle: Mapping, exact: bool = True) -> np.ndarray:
    """The boolean ``(h, w)`` mask of an RLE. When its runs do not cover ``h * w`` pixels: a
    ValueError, or with ``exact=False`` what COCO's reader does (missing pixels are background,
    runs past the end are dropped), which the metric follows."""
    h, w = (int(v) for v in rle["size"])
    runs = counts(rle)
    flat = np.repeat(np.arange(runs.size) % 2 == 1, runs)
    if flat.size != h * w:
        if exact:
            raise ValueError(f"RLE covers {flat.size} pixels, expected {h}x{w}={h * w}")
        flat = np.concatenate((flat[: h * w], np.zeros(max(0, h * w - flat.size), dtype=bool)))
    return flat.reshape((w, h)).T


def counts(rle: Mapping) -> np.ndarray:
    """Run lengths of a COCO RLE dict, compressed string or uncompressed list ``counts`` alike.

    Runs are column-major and alternate background / foreground, starting with background.
    """
    field = rle["counts"]
    if isinstance(field, (str, bytes)):
        return decode_strings([field.encode("ascii") if isinstance(field, str) else field])[0]
    values = np.asarray(field, dtype=np.int64)
    if values.ndim != 1 or (values < 0).any():
        raise ValueError("RLE counts must be a flat list of non-negative integers")
    return values


def compress(counts: Sequence[int]) -> str:
    """The inverse of :func:`decode_strings` (COCO's ``counts`` string for a list of runs)."""
    out = []
    for m, count in enumerate(counts):
        value = int(count) - (int(counts[m - 2]) if m > 2 else 0)
        while True:
            group = value & 0x1F
            value >>= 5
            more = value != -1 if group & 0x10 else value != 0
            out.append(chr(48 + (group | 0x20 if more else group)))
            if not more:
                break
    return "".join(out)


def decode_strings(texts: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Run lengths of many COCO compact RLE strings at once: the runs of all strings end to end, and
    how many each string holds.

    The format: each count in 5-bit groups, least significant first, written as characters
    ``48 + group``; bit 0x20 says another group follows and bit 0x10 of the last group is the sign.
    From the fourth count on, a string stores the difference from the count two places back.
    """
    lengths = np.array([len(t) for t in texts], dtype=np.int64)
    if not lengths.sum():
        return np.zeros(0, dtype=np.int64), np.zeros(len(texts), dtype=np.int64)
    chars = np.frombuffer(b"".join(texts), dtype=np.uint8).astype(np.int64) - 48
    if ((chars < 0) | (chars > 63)).any():
        raise ValueError("RLE string holds characters outside '0'..'o'")
    last = (chars & 0x20) == 0  # the group that ends a number
    text_end = np.cumsum(lengths) - 1
    if not last[text_end[lengths > 0]].all():
        raise ValueError("RLE string ends inside a number")
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    groups = ends - starts + 1
    shift = 5 * (np.arange(chars.size) - np.repeat(starts, groups))
    values = np.add.reduceat((chars & 0x1F) << shift, starts)
    values -= np.where((chars[ends] & 0x10) != 0, np.left_shift(1, 5 * groups), 0)
    owner = np.searchsorted(text_end, ends)  # the string each number belongs to
    per_text = np.bincount(owner, minlength=len(texts))
    position = np.arange(values.size) - (np.cumsum(per_text) - per_text)[owner]
    # Undo the delta coding string by string: a running sum over odd positions from 1 and over even
    # positions from 2, restarted at each string.
    counts = values.copy()
    for parity, lowest in ((1, 1), (0, 2)):
        chosen = np.flatnonzero((position % 2 == parity) & (position >= lowest))
        if chosen.size:
            running = np.cumsum(values[chosen])
            segment = owner[chosen]
            first = np.flatnonzero(np.r_[True, segment[1:] != segment[:-1]])
            before = (running - values[chosen])[first]
            counts[chosen] = running - np.repeat(before, np.diff(np.r_[first, chosen.size]))
    if (counts < 0).any():
        raise ValueError("RLE string decodes to a negative run")
    return counts, per_text


def runs_of(rles: Sequence[Mapping]) -> tuple[np.ndarray, np.ndarray]:
    """Run lengths of many RLE dicts end to end, and how many runs each has."""
    fields = [rle["counts"] for rle in rles]
    compressed = [isinstance(c, (str, bytes)) for c in fields]
    if all(compressed):
        return decode_strings([c.encode("ascii") if isinstance(c, str) else c for c in fields])
    if not any(compressed):
        per_mask = np.array([len(c) for c in fields], dtype=np.int64)
        runs = np.fromiter(chain.from_iterable(fields), dtype=np.int64, count=int(per_mask.sum()))
        if (runs < 0).any():
            raise ValueError("RLE counts must be non-negative")
        return runs, per_mask
    pieces = [counts(rle) for rle in rles]  # both forms in one file: rare, mask by mask
    return np.concatenate(pieces + [np.zeros(0, dtype=np.int64)]), np.array([p.size for p in pieces], dtype=np.int64)
