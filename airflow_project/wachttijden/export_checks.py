"""Checks on one NZa export before anything trains on it, against a baseline: the data the
current champion was trained on (TFX's ExampleValidator, without TFX).

Measures (each a plain function, unit-tested on small frames):

- rows and drop reasons: the cleaning rules of `dataset.clean`, the one definition of a
  usable row; `usable_share` = usable rows / rows read;
- categories per feature never seen in the baseline (with their row counts), and
  categories of the baseline missing now (with their baseline row counts);
- the target's summary statistics, new and baseline, and the Kolmogorov-Smirnov statistic
  (scipy), reported;
- the drift statistic the gate uses: the population stability index (PSI) of the target
  (ten bins at the baseline's deciles) and of each feature (one bin per category), and
  `drift` = the largest of them, with the column it came from.

The gate fails when `usable_share < min_usable_share` or `drift > max_drift`. The defaults
and how they were chosen: README ("Data checks"), measured by `loadtest/drift_calibration.py`.

Why PSI and not KS for the gate: the target is whole weeks with many ties, where KS's
p-value means nothing at these sizes (every export "differs") and its statistic sees only
the largest gap between the two CDFs; PSI weighs every part of the distribution, has the
same scale for a numeric target and a categorical feature (so one threshold covers a
shifted waiting time, a renamed specialism and a vanished region), and its noise on
two samples of the same distribution is about (bins - 1) * (1/n_baseline + 1/n_new).

Why hand-written and not pandera: the row rules already live in `dataset.clean`, whose
masks give the drop counts directly; pandera's lazy validation collecting failure cases
took ~5 s per million rows here against ~1 s for the masks, and would have been a second
definition of a usable row. Category differences are set arithmetic on value counts, and
PSI is in neither scipy nor scikit-learn (KS is, and comes from scipy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .dataset import CleaningReport, DataValidationError, clean
from .schema import DEFAULT_MAX_DRIFT, DEFAULT_MIN_USABLE_SHARE, FEATURES, TARGET

DRIFT_STATISTIC = "psi"
PSI_BINS = 10
PSI_EPSILON = 1e-4
"""The share used for an empty bin (a category one side never has): PSI is infinite
without it. With 1e-4 a new category holding q of the rows adds about q * ln(q / 1e-4):
0.05 for 1% of the rows, 0.31 for 5%."""


class DataGateFailed(DataValidationError):
    """An export failed the data gate; the message names each measure, value and threshold."""


@dataclass(frozen=True)
class GateThresholds:
    min_usable_share: float = DEFAULT_MIN_USABLE_SHARE
    max_drift: float = DEFAULT_MAX_DRIFT

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_usable_share <= 1.0:
            raise ValueError(f"min_usable_share must be between 0 and 1, got {self.min_usable_share}")
        if not self.max_drift > 0.0:
            raise ValueError(f"max_drift must be above 0, got {self.max_drift}")

    @classmethod
    def from_optional(cls, min_usable_share: float | None, max_drift: float | None) -> GateThresholds:
        """Thresholds from optional values (an empty Param or flag): the defaults fill the gaps."""
        return cls(
            DEFAULT_MIN_USABLE_SHARE if min_usable_share is None else float(min_usable_share),
            DEFAULT_MAX_DRIFT if max_drift is None else float(max_drift),
        )


# --------------------------------------------------------------------------- measures
def _psi_from_counts(expected: np.ndarray, actual: np.ndarray) -> float:
    p = np.maximum(expected / expected.sum(), PSI_EPSILON)
    q = np.maximum(actual / actual.sum(), PSI_EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def psi(baseline: Any, new: Any, bins: int = PSI_BINS) -> float:
    """PSI of a numeric column: bins at the baseline's quantiles (ties merged, so whole
    weeks give fewer, wider bins), the outer bins open-ended."""
    expected = np.asarray(baseline, dtype="float64")
    actual = np.asarray(new, dtype="float64")
    if expected.size == 0 or actual.size == 0:
        raise ValueError("PSI needs at least one value on each side")
    edges = np.unique(np.quantile(expected, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    counts = [np.bincount(np.searchsorted(edges, side, side="right"), minlength=edges.size + 1)
              for side in (expected, actual)]
    return _psi_from_counts(*counts)


def categorical_psi(baseline: Mapping[str, int], new: Mapping[str, int]) -> float:
    """PSI of a categorical column from its value counts, one bin per category of either side."""
    categories = sorted(set(baseline) | set(new))
    if not categories or not sum(baseline.values()) or not sum(new.values()):
        raise ValueError("PSI needs at least one value on each side")
    expected = np.array([baseline.get(c, 0) for c in categories], dtype="float64")
    actual = np.array([new.get(c, 0) for c in categories], dtype="float64")
    return _psi_from_counts(expected, actual)


def psi_noise(bins: int, n_baseline: int, n_new: int) -> float:
    """The PSI two samples of one distribution show by chance, about (bins - 1) * (1/n + 1/m):
    a drift near it says nothing (README, "Why these thresholds")."""
    if n_baseline < 1 or n_new < 1:
        return math.inf
    return max(bins - 1, 0) * (1.0 / n_baseline + 1.0 / n_new)


def ks_statistic(baseline: Any, new: Any) -> float:
    """The two-sample Kolmogorov-Smirnov statistic (largest gap between the two CDFs)."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(np.asarray(baseline, dtype="float64"), np.asarray(new, dtype="float64")).statistic)


def target_summary(values: Any) -> dict[str, float]:
    """Count, mean, standard deviation and quantiles of the waiting time (weeks)."""
    x = np.asarray(values, dtype="float64")
    if x.size == 0:
        return {"rows": 0.0}
    q = np.quantile(x, [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
    return {"rows": float(x.size), "mean": float(x.mean()), "std": float(x.std()),
            "min": float(q[0]), "p10": float(q[1]), "p25": float(q[2]), "median": float(q[3]),
            "p75": float(q[4]), "p90": float(q[5]), "max": float(q[6])}


def category_counts(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per feature: {category: rows}, most frequent first."""
    return {f: {str(k): int(v) for k, v in frame[f].value_counts().items()} for f in FEATURES}


def category_changes(baseline: Mapping[str, Mapping[str, int]], new: Mapping[str, Mapping[str, int]]
                     ) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """(new categories with their rows now, missing categories with their rows in the
    baseline), per feature; features without a change are left out."""
    added = {f: {c: n for c, n in new[f].items() if c not in baseline[f]} for f in FEATURES}
    missing = {f: {c: n for c, n in baseline[f].items() if c not in new[f]} for f in FEATURES}
    return {f: v for f, v in added.items() if v}, {f: v for f, v in missing.items() if v}


def drift_by_column(baseline: pd.DataFrame, new: pd.DataFrame, baseline_counts: Mapping[str, Mapping[str, int]],
                    new_counts: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """PSI of the target and of each feature, baseline -> new (both prepared, non-empty; the
    counts are their `category_counts`)."""
    out = {TARGET: psi(baseline[TARGET], new[TARGET])}
    out.update({f: categorical_psi(baseline_counts[f], new_counts[f]) for f in FEATURES})
    return out


# --------------------------------------------------------------------------- the report
LISTED_CATEGORIES = 100


def _largest(categories: Mapping[str, Mapping[str, int]], n: int = LISTED_CATEGORIES) -> dict[str, dict[str, int]]:
    return {f: dict(sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))[:n]) for f, v in categories.items()}


@dataclass
class ExportReport:
    """Everything the checks found about one export; `to_dict()` is the JSON report."""

    source: str
    cleaning: CleaningReport
    thresholds: GateThresholds
    baseline_source: str | None
    baseline_note: str
    target: dict[str, dict[str, float]]
    new_categories: dict[str, dict[str, int]] = field(default_factory=dict)
    missing_categories: dict[str, dict[str, int]] = field(default_factory=dict)
    drift_by_column: dict[str, float] = field(default_factory=dict)
    ks_target: float | None = None
    override: str | None = None
    usable_target: np.ndarray | None = field(default=None, repr=False, compare=False)
    """The usable rows' waiting times (for the distribution plot; not part of the JSON)."""

    @property
    def usable_share(self) -> float:
        return self.cleaning.rows_out / self.cleaning.rows_in if self.cleaning.rows_in else 0.0

    @property
    def baseline_applicable(self) -> bool:
        return self.baseline_source is not None

    @property
    def drift_column(self) -> str | None:
        return max(self.drift_by_column, key=self.drift_by_column.__getitem__) if self.drift_by_column else None

    @property
    def drift(self) -> float | None:
        column = self.drift_column
        return None if column is None else self.drift_by_column[column]

    @property
    def reasons(self) -> list[str]:
        """Why the gate fails: one sentence per measure over its threshold (empty: it passes)."""
        out = []
        c, t = self.cleaning, self.thresholds
        if self.usable_share < t.min_usable_share:
            out.append(
                f"usable_share {self.usable_share:.3f} is below min_usable_share {t.min_usable_share:.3f} "
                f"({c.rows_out:,} of {c.rows_in:,} rows usable; dropped: {c.dropped_empty_target:,} empty "
                f"{TARGET}, {c.dropped_target_not_a_number:,} not a number, {c.dropped_negative_target:,} "
                f"negative, {c.dropped_missing_feature:,} with an empty feature)"
            )
        over = sorted(((v, k) for k, v in self.drift_by_column.items() if v > t.max_drift), reverse=True)
        if over:
            columns = ", ".join(f"{column} {value:.3f}" for value, column in over)
            out.append(
                f"drift {over[0][0]:.3f} is above max_drift {t.max_drift:.3f} ({DRIFT_STATISTIC.upper()} "
                f"against {self.baseline_source}: {columns})"
            )
        return out

    @property
    def passed(self) -> bool:
        return not self.reasons

    @property
    def gate(self) -> str:
        """passed, failed, or overridden (failed, and a person let this run through)."""
        if self.passed:
            return "passed"
        return "overridden" if self.override else "failed"

    def headline(self) -> str:
        """One line: usable rows, drift, category changes, the gate."""
        c = self.cleaning
        drift = ("drift not measured (" + self.baseline_note + ")" if self.drift is None else
                 f"drift {DRIFT_STATISTIC.upper()} {self.drift:.3f} ({self.drift_column}; max "
                 f"{self.thresholds.max_drift:g})")
        categories = (f"new categories {sum(map(len, self.new_categories.values()))}, missing "
                      f"{sum(map(len, self.missing_categories.values()))}") if self.baseline_applicable else ""
        return "; ".join(part for part in (
            (f"{c.rows_out:,} of {c.rows_in:,} rows usable ({self.usable_share:.1%}, min "
            f"{self.thresholds.min_usable_share:.0%})"), drift, categories, f"gate {self.gate}") if part)

    def to_dict(self) -> dict[str, Any]:
        """The JSON report. Category lists keep the LISTED_CATEGORIES largest per feature (a
        garbled export can bring thousands of values); `*_total` count them all."""
        c = self.cleaning
        return {
            "source": self.source,
            "usable_share": self.usable_share,
            "drift": self.drift,
            "new_categories": _largest(self.new_categories),
            "missing_categories": _largest(self.missing_categories),
            "new_categories_total": {f: len(v) for f, v in self.new_categories.items()},
            "missing_categories_total": {f: len(v) for f, v in self.missing_categories.items()},
            "passed": self.passed,
            "reasons": self.reasons,
            "gate": self.gate,
            "override": self.override,
            "drift_statistic": DRIFT_STATISTIC,
            "drift_column": self.drift_column,
            "drift_by_column": self.drift_by_column,
            "ks_target": self.ks_target,
            "thresholds": {"min_usable_share": self.thresholds.min_usable_share,
                           "max_drift": self.thresholds.max_drift},
            "baseline": {"source": self.baseline_source, "applicable": self.baseline_applicable,
                         "note": self.baseline_note},
            "rows": {
                "read": c.rows_in, "usable": c.rows_out,
                "dropped": {"empty_target": c.dropped_empty_target,
                            "target_not_a_number": c.dropped_target_not_a_number,
                            "negative_target": c.dropped_negative_target,
                            "empty_feature": c.dropped_missing_feature},
                "filled_type_zorginstelling": c.filled_type_zorginstelling,
            },
            "target": self.target,
        }

    def metrics(self) -> dict[str, float]:
        """The numbers worth a chart across exports (MLflow metrics of the data run)."""
        c = self.cleaning
        out = {
            "rows_read": float(c.rows_in), "rows_usable": float(c.rows_out), "usable_share": self.usable_share,
            "dropped_empty_target": float(c.dropped_empty_target),
            "dropped_target_not_a_number": float(c.dropped_target_not_a_number),
            "dropped_negative_target": float(c.dropped_negative_target),
            "dropped_empty_feature": float(c.dropped_missing_feature),
            "new_categories": float(sum(map(len, self.new_categories.values()))),
            "new_category_rows": float(sum(sum(v.values()) for v in self.new_categories.values())),
            "missing_categories": float(sum(map(len, self.missing_categories.values()))),
        }
        if self.drift is not None:
            out["drift"] = self.drift
            out.update({f"psi_{column}": value for column, value in self.drift_by_column.items()})
        if self.ks_target is not None:
            out["ks_target"] = self.ks_target
        for side, summary in self.target.items():
            out.update({f"target_{k}_{side}": v for k, v in summary.items() if k in ("mean", "median", "p90")})
        return out


def check_export(frame: pd.DataFrame, baseline: pd.DataFrame | None, *, source: str,
                 thresholds: GateThresholds = GateThresholds(), baseline_source: str | None = None,
                 baseline_note: str = "", override: str | None = None) -> ExportReport:
    """Check an export (the raw columns as strings, as `select_features` leaves them)
    against a prepared baseline, or alone when there is none (the baseline checks are then
    marked not applicable, with `baseline_note` saying why)."""
    cleaned, cleaning = clean(frame, source)
    report = ExportReport(
        source=source, cleaning=cleaning, thresholds=thresholds,
        baseline_source=None if baseline is None else (baseline_source or "baseline"),
        baseline_note=baseline_note or ("no baseline" if baseline is None else "compared"),
        target={"new": target_summary(cleaned[TARGET])}, override=(override or "").strip() or None,
        usable_target=cleaned[TARGET].to_numpy(),
    )
    if baseline is None:
        return report
    if baseline.empty:
        raise DataValidationError(f"{baseline_source}: the baseline has no rows")
    report.target["baseline"] = target_summary(baseline[TARGET])
    old_counts = category_counts(baseline)
    new_counts = category_counts(cleaned)
    report.new_categories, report.missing_categories = category_changes(old_counts, new_counts)
    if not cleaned.empty:
        report.drift_by_column = drift_by_column(baseline, cleaned, old_counts, new_counts)
        report.ks_target = ks_statistic(baseline[TARGET], cleaned[TARGET])
    return report


def weekly_shares(values: np.ndarray, top: float) -> tuple[np.ndarray, int]:
    """Share of all rows per whole week 0..top (bins centred on the weeks), and how many rows
    lie above `top`: those are left out, not piled into the last bin."""
    edges = np.arange(0.0, top + 2.0) - 0.5
    counts, _ = np.histogram(values, bins=edges)
    return counts / max(values.size, 1), int(np.count_nonzero(values >= edges[-1]))


def distribution_title(has_baseline: bool, baseline_note: str = "") -> str:
    if has_baseline:
        return f"{TARGET}: baseline vs new export"
    return f"{TARGET} of the new export (no baseline{': ' + baseline_note if baseline_note else ''})"


def target_distribution_plot(baseline: Any | None, new: Any, *, baseline_note: str = "") -> bytes:
    """A PNG of the waiting-time distribution (share of rows per whole week) of the new
    export, over the baseline's when there is one. Weeks above the 99.5th percentile are left
    out (and counted in the legend); the legend sits below the axes, off the peaks."""
    from .plots import png

    sides = [("new export", np.asarray(new, dtype="float64"))]
    if baseline is not None:
        sides.insert(0, ("baseline (champion's training data)", np.asarray(baseline, dtype="float64")))
    values = np.concatenate([v for _, v in sides])
    top = max(1.0, math.ceil(float(np.quantile(values, 0.995)))) if values.size else 1.0

    def draw(ax: Any) -> None:
        for label, v in sides:
            if not v.size:
                continue
            shares, hidden = weekly_shares(v, top)
            beyond = f"; {hidden:,} above {top:g} weeks not shown" if hidden else ""
            ax.stairs(shares, np.arange(0.0, top + 2.0) - 0.5, linewidth=1.5,
                      label=f"{label} (n={v.size:,}, median {np.median(v):g}{beyond})")
        ax.set(xlabel="waiting time (weeks)", ylabel="share of rows",
               title=distribution_title(baseline is not None, baseline_note))
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)

    return png(draw, (8, 5))
