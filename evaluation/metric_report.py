"""The HumanRef metric's reports: the official tables, ``comparison.md`` / ``.json``, ``details.json``, charts.

:func:`domain_rows` and :func:`bucket_rows` build the two tables in the official order (models
ranked by DensityF1 within each group), :func:`comparison_json` and :func:`markdown_report` render
them (the markdown adds the RefCOCO-style Acc@0.5 of :func:`top1_rows`; ``comparison.json`` keeps
the official layout), :func:`details_json` keeps full precision and every reported problem, :func:`write_charts` draws
the two PNG charts and :func:`write_report` writes all of these into one folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from evaluation.metric_results import BUCKETS, CORRECTED_SUFFIX, MODES, ModelResult, Scores

# (comparison.json key, markdown header, Scores field)
COLUMNS = (
    ("recall_@point", "Recall@Point", "recall_point"),
    ("precision_@point", "Precision@Point", "precision_point"),
    ("densityf1_@point", "DensityF1@Point", "densityf1_point"),
    ("recall_@0.5", "Recall@0.5", "recall_50"),
    ("recall_@0.5:0.95", "Recall@0.5:0.95", "recall_50_95"),
    ("precision_@0.5", "Precision@0.5", "precision_50"),
    ("precision_@0.5:0.95", "Precision@0.5:0.95", "precision_50_95"),
    ("densityf1_@0.5", "DensityF1@0.5", "densityf1_50"),
    ("densityf1_@0.5:0.95", "DensityF1@0.5:0.95", "densityf1_50_95"),
)
_SEPARATOR = None  # a rule between the groups and the averages, as in the official tables


def _as_list(results: ModelResult | Sequence[ModelResult]) -> list[ModelResult]:
    return [results] if isinstance(results, ModelResult) else list(results)


def _ranked(entries: list[tuple[ModelResult, Scores]]) -> list[tuple[ModelResult, Scores]]:
    return sorted(entries, key=lambda e: e[1].rank_key, reverse=True)  # stable: ties keep model order


def _metric_cells(scores: Scores | None) -> dict:
    cells = {}
    for key, _, attr in COLUMNS:
        value = getattr(scores, attr) if scores is not None else None
        cells[key] = "" if value is None else float(f"{value:.3f}")
    return cells


def domain_rows(results: ModelResult | Sequence[ModelResult]) -> list[dict | None]:
    """Rows of the domain / sub-domain table in the official order (None marks a rule). ``_shown``
    holds the name cells the printed table shows: a group's name appears on its first row only."""
    results = _as_list(results)
    rows: list[dict | None] = []

    def add(domain: str, subdomain: str, entries, shown_first: tuple[str, str], every_row: bool = False) -> None:
        for k, (result, scores) in enumerate(_ranked(entries)):
            rows.append({
                "domain": domain, "subdomain": subdomain, "model": result.name, **_metric_cells(scores),
                "rejection_score": "", "samples": scores.samples,
                "_shown": shown_first if (k == 0 or every_row) else ("", ""),
            })  # fmt: skip

    for domain in sorted({d for r in results for d in r.domains}):
        add(domain, "Overall", [(r, r.domains[domain]) for r in results if domain in r.domains], (domain, "Overall"))
        subs = sorted({s for r in results for s, d in r.subdomain_domain.items() if d == domain})
        for sub in subs:
            add(domain, sub, [(r, r.subdomains[sub]) for r in results if sub in r.subdomains], ("", sub))
    rows.append(_SEPARATOR)
    averages = [(r, r.all_data) for r in results if r.all_data is not None]
    add("Average", "All Data", averages, ("Average", "All Data"), every_row=True)
    rows.append(_SEPARATOR)
    for r in results:
        rows.append({
            "domain": "Rejection", "subdomain": "Overall", "model": r.name, **_metric_cells(None),
            "rejection_score": r.rejection_score, "samples": "", "_shown": ("Rejection", "Overall"),
        })  # fmt: skip
    return rows


def bucket_rows(results: ModelResult | Sequence[ModelResult]) -> list[dict | None]:
    """Rows of the target-count table (``box count`` is the official key)."""
    results = _as_list(results)
    rows: list[dict | None] = []

    def add(bucket: str, entries, every_row: bool = False) -> None:
        for k, (result, scores) in enumerate(_ranked(entries)):
            rows.append({
                "box count": bucket, "model": result.name, **_metric_cells(scores),
                "rejection_score": "", "samples": scores.samples,
                "_shown": (bucket,) if (k == 0 or every_row) else ("",),
            })  # fmt: skip

    for bucket in BUCKETS:
        entries = [(r, r.buckets[bucket]) for r in results if bucket in r.buckets]
        if entries:
            add(bucket, entries)
    rows.append(_SEPARATOR)
    add("Average", [(r, r.bucket_average) for r in results if r.bucket_average is not None], every_row=True)
    return rows


def comparison_json(results: ModelResult | Sequence[ModelResult]) -> dict:
    """``comparison.json`` in the official layout (3-decimal values, ``""`` for empty cells)."""

    def clean(rows: list[dict | None]) -> list[dict]:
        return [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows if row is not None]

    return {"domain_subdomain_metrics": clean(domain_rows(results)), "box_count_metrics": clean(bucket_rows(results))}


def _markdown_table(rows: list[dict | None], name_headers: tuple[str, ...]) -> str:
    headers = [*name_headers, "Model", *(h for _, h, _ in COLUMNS), "Rejection Score", "Samples"]
    keys = ["model", *(k for k, _, _ in COLUMNS), "rejection_score", "samples"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        if row is None:
            lines.append("| " + " | ".join("---" for _ in headers) + " |")
            continue
        cells = [*row["_shown"], *(f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in keys)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(results: ModelResult | Sequence[ModelResult]) -> str:
    """``comparison.md``: both tables and the notes on missing and malformed predictions."""
    results = _as_list(results)
    modes = sorted({r.mode for r in results}, key=MODES.index)
    parts = [
        "# HumanRef evaluation",
        "",
        f"Mode: {', '.join(modes)}. " + _MODE_NOTE[modes[0] if len(modes) == 1 else "both"],
        "",
        "## Domains and sub-domains",
        "",
        _markdown_table(domain_rows(results), ("Domain", "Subdomain")),
        "",
        "## Target count (answer boxes per expression)",
        "",
        _markdown_table(bucket_rows(results), ("Box Count",)),
    ]
    top1 = top1_rows(results)
    if top1:
        parts += [
            "",
            "## Top-1 accuracy (RefCOCO-style Acc@0.5)",
            "",
            "Samples with exactly one target box: the first predicted box is correct when its IoU with the target is at "
            "least 0.5 (no box is wrong). Samples with zero or several targets are not scored.",
            "",
            "| Model | Acc@0.5 | Samples scored | Not scored (0 or 2+ targets) |",
            "|---|---|---|---|",
            *(f"| {r['model']} | {r['acc_50']} | {r['samples']} | {r['not_scored']} |" for r in top1),
        ]
    names = {r.name for r in results}
    notes = [
        line
        for r in results
        if not (r.name.endswith(CORRECTED_SUFFIX) and r.name[: -len(CORRECTED_SUFFIX)] in names)  # same file
        for line in _notes(r)
    ]
    if notes:
        parts += ["", "## Notes", "", *notes]
    return "\n".join(parts) + "\n"


def top1_rows(results: ModelResult | Sequence[ModelResult]) -> list[dict]:
    """One row per box result: Acc@0.5 as printed (``""`` when no sample has exactly one target),
    the samples it scored and the ground-truth samples it did not."""
    rows = []
    for r in _as_list(results):
        if r.kind != "box":
            continue
        total = r.rejection_total + (r.all_data.samples if r.all_data is not None else 0)
        acc = "" if r.acc_50 is None else f"{r.acc_50:.3f}"
        rows.append({"model": r.name, "acc_50": acc, "samples": r.acc_50_samples, "not_scored": total - r.acc_50_samples})
    return rows


_MODE_NOTE = {
    "reference": "Official algorithm: greedy matching in annotation order, numpy.arange thresholds.",
    "corrected": "Maximum one-to-one matching, exact thresholds 0.50..0.95, penalty min(1, |gt|/|pred|).",
    "both": "Rows suffixed '(corrected)' use maximum one-to-one matching and exact thresholds; "
    "the others the official algorithm.",
}


def _notes(result: ModelResult, limit: int = 10) -> list[str]:
    notes = []
    if result.missing_ids:
        shown = ", ".join(result.missing_ids[:limit]) + (", ..." if len(result.missing_ids) > limit else "")
        notes.append(
            f"- {result.name}: {len(result.missing_ids)} ground-truth ids have no prediction row "
            f"({len(result.missing_rejection_ids)} of them rejection samples, counted as correct rejections): {shown}"
        )
    if result.malformed:
        notes.append(f"- {result.name}: {len(result.malformed)} malformed prediction rows, scored as missing:")
        notes += [f"  - {error}" for error in result.malformed[:limit]]
        if len(result.malformed) > limit:
            notes.append(f"  - ... and {len(result.malformed) - limit} more (details.json)")
    if result.duplicate_ids:
        notes.append(f"- {result.name}: {len(result.duplicate_ids)} ids predicted more than once (last row kept)")
    if result.unknown_ids:
        notes.append(f"- {result.name}: {len(result.unknown_ids)} predicted ids are not in the ground truth (ignored)")
    return notes


def details_json(results: ModelResult | Sequence[ModelResult]) -> dict:
    """Full-precision numbers and every reported problem, per model."""
    return {
        "models": [
            {
                "name": r.name,
                "mode": r.mode,
                "kind": r.kind,
                "thresholds": list(r.thresholds),
                **r.summary(),
                "acc_50": r.acc_50,
                "acc_50_samples": r.acc_50_samples,
                "missing_ids": r.missing_ids,
                "missing_rejection_ids": r.missing_rejection_ids,
                "malformed_rows": [asdict(e) for e in r.malformed],
                "duplicate_ids": r.duplicate_ids,
                "unknown_ids": r.unknown_ids,
            }
            for r in _as_list(results)
        ]
    }


def write_report(
    results: ModelResult | Sequence[ModelResult], out_dir: str | os.PathLike, charts: bool = True
) -> dict[str, Path]:
    """Write ``comparison.md``, ``comparison.json``, ``details.json`` and (with ``charts``) the two
    PNG charts into ``out_dir``; return their paths by name."""
    results = _as_list(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": out / "comparison.md",
        "json": out / "comparison.json",
        "details": out / "details.json",
    }
    paths["markdown"].write_text(markdown_report(results), encoding="utf-8")
    paths["json"].write_text(json.dumps(comparison_json(results), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["details"].write_text(json.dumps(details_json(results), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if charts:
        paths.update(write_charts(results, out))
    return paths


def _headline(scores: Scores) -> tuple[float, float, float]:
    """Recall, precision, DensityF1 as the charts show them (@0.5:0.95, or @Point)."""
    if scores.densityf1_point is not None:
        return scores.recall_point, scores.precision_point, scores.densityf1_point
    return scores.recall_50_95, scores.precision_50_95, scores.densityf1_50_95


def write_charts(results: Sequence[ModelResult], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Grouped bars per domain (plus All Data and the rejection rate) and lines per target-count
    bucket, one series per model."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    out = Path(out_dir)
    results = _as_list(results)
    names = [r.name for r in results]
    width = 0.8 / max(len(results), 1)
    metric_names = ("Recall", "Precision", "DensityF1")

    domains = sorted({d for r in results for d in r.domains}) + ["All Data"]
    fig = Figure(figsize=(5 + 1.6 * len(domains), 10), layout="constrained")
    axes = fig.subplots(4, 1)
    for panel, metric in enumerate(metric_names):
        ax = axes[panel]
        for k, r in enumerate(results):
            values = []
            for d in domains:
                scores = r.all_data if d == "All Data" else r.domains.get(d)
                values.append(_headline(scores)[panel] if scores else np.nan)
            ax.bar(np.arange(len(domains)) + (k - (len(results) - 1) / 2) * width, values, width, label=r.name)
        ax.set_xticks(np.arange(len(domains)), domains)
        ax.set_ylim(0, 1)
        ax.set_ylabel(metric)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_title("HumanRef by domain (box models @0.5:0.95, point models @Point)")
    axes[0].legend(fontsize="small", ncols=min(len(results), 4))
    rates = [r.rejection_score / r.rejection_total if r.rejection_total else np.nan for r in results]
    axes[3].bar(np.arange(len(results)), rates, 0.6)
    axes[3].set_xticks(np.arange(len(results)), names)
    axes[3].set_ylim(0, 1)
    axes[3].set_ylabel("Rejection rate")
    axes[3].grid(axis="y", alpha=0.3)
    domains_png = out / "chart_domains.png"
    fig.savefig(domains_png, dpi=100)

    buckets = [b for b in BUCKETS if any(b in r.buckets for r in results)]
    fig = Figure(figsize=(12, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    for panel, metric in enumerate(metric_names):
        ax = axes[panel]
        for r in results:
            values = [_headline(r.buckets[b])[panel] if b in r.buckets else np.nan for b in buckets]
            ax.plot(buckets, values, marker="o", label=r.name)
        ax.set_ylim(0, 1)
        ax.set_xlabel("answer boxes per expression")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    buckets_png = out / "chart_target_count.png"
    fig.savefig(buckets_png, dpi=100)
    return {"chart_domains": domains_png, "chart_target_count": buckets_png}
