"""What the HumanRef metric produces and the names its modules share.

The result dataclasses (:class:`Scores` per group of samples, :class:`SampleScores` per sample,
:class:`ModelResult` per prediction set), the two modes, the target-count buckets and
:func:`bucket_of`, the rejection domain's name and the suffix of corrected rows in a ``both`` table.
Scoring is in ``evaluation.metric``, reading inputs in ``evaluation.metric_inputs``, reports in
``evaluation.metric_report``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from rexthinker.data.errors import RowError

MODES = ("reference", "corrected")
BUCKETS = ("1", "2-5", "6-10", ">10")
REJECTION = "rejection"
CORRECTED_SUFFIX = " (corrected)"


# ------------------------------------------------------------------------------------------------
# Target-count buckets


def bucket_of(n_targets: int) -> str:
    """Target-count bucket of a sample (the official script puts 0 in ``>10``; it never gets there)."""
    if n_targets == 1:
        return "1"
    if 2 <= n_targets <= 5:
        return "2-5"
    if 6 <= n_targets <= 10:
        return "6-10"
    return ">10"


# ------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Scores:
    """Means over one group of samples. Box files fill the ``_50`` / ``_50_95`` fields, point files
    the ``_point`` ones; the others stay None."""

    samples: int
    recall_point: float | None = None
    precision_point: float | None = None
    densityf1_point: float | None = None
    recall_50: float | None = None
    recall_50_95: float | None = None
    precision_50: float | None = None
    precision_50_95: float | None = None
    densityf1_50: float | None = None
    densityf1_50_95: float | None = None

    @property
    def rank_key(self) -> float:
        """What rows are sorted by within a group: DensityF1@0.5:0.95, or DensityF1@Point."""
        return self.densityf1_point if self.densityf1_point is not None else self.densityf1_50_95


@dataclass
class SampleScores:
    """Per-sample values of the scored (non-rejection) samples, in ground-truth order. Box files
    have one column per threshold; point files one column."""

    ids: list[str]
    matches: np.ndarray  # (n, T) int
    n_gt: np.ndarray  # (n,)
    n_pred: np.ndarray  # (n,)
    recall: np.ndarray  # (n, T)
    precision: np.ndarray  # (n, T)
    densityf1: np.ndarray  # (n, T)


@dataclass
class ModelResult:
    """Everything the metric knows about one prediction set."""

    name: str
    mode: str
    kind: str  # "box" or "point"
    thresholds: tuple[float, ...]  # empty for point files
    domains: dict[str, Scores]  # sorted by name; rejection is not among them
    subdomains: dict[str, Scores]  # sorted by name
    subdomain_domain: dict[str, str]  # sub-domain -> the domain of its first ground-truth row
    buckets: dict[str, Scores]  # target-count buckets present, in BUCKETS order
    all_data: Scores | None  # every non-rejection sample, pooled domain by domain
    bucket_average: Scores | None  # the same samples pooled bucket by bucket (the box-count table's "Average")
    rejection_score: int
    rejection_total: int
    missing_ids: list[str] = field(default_factory=list)  # ground-truth ids the prediction file has no row for
    missing_rejection_ids: list[str] = field(default_factory=list)  # the rejection ones (counted as correct)
    malformed: list[RowError] = field(default_factory=list)  # rows scored as missing, with file and line
    duplicate_ids: list[str] = field(default_factory=list)  # ids predicted more than once (last row kept)
    unknown_ids: list[str] = field(default_factory=list)  # predicted ids absent from the ground truth
    per_sample: SampleScores | None = None
    acc_50: float | None = None  # RefCOCO-style top-1 Acc@0.5 over the single-target samples (box files; evaluation.metric)
    acc_50_samples: int = 0  # the samples Acc@0.5 scored: those with exactly one target box

    @property
    def is_point(self) -> bool:
        return self.kind == "point"

    def summary(self) -> dict:
        """The numbers of this result as plain data (what two implementations must agree on)."""

        def table(groups: Mapping[str, Scores]) -> dict:
            return {key: asdict(scores) for key, scores in groups.items()}

        return {
            "kind": self.kind,
            "domains": table(self.domains),
            "subdomains": table(self.subdomains),
            "buckets": table(self.buckets),
            "all_data": asdict(self.all_data) if self.all_data else None,
            "bucket_average": asdict(self.bucket_average) if self.bucket_average else None,
            "rejection_score": self.rejection_score,
            "rejection_total": self.rejection_total,
        }
