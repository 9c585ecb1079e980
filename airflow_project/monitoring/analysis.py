"""The measures of served traffic: plain inputs (value counts, arrays, frames) in, frozen
dataclasses out. Each is usable alone, for one served version or one time window (a later
canary analysis calls them per version and window):

- `input_drift(baseline_counts, served_counts)`: PSI per feature and the new and missing
  categories, with the gate's own functions (`wachttijden.export_checks`: one definition
  of PSI and of a category change);
- `prediction_drift(reference, served)`: PSI of the served predictions against the
  model's predictions on its training rows (the gate's numeric PSI);
- `realised_error(served, labels)`: the served predictions scored against the waiting
  times a later export published for the same feature combinations;
- `shadow_agreement(primary, shadow)`: the two versions' answers to the same requests,
  joined by request id (`deploy_steps.agreement`, the hold-out comparison's measures);
- `service_health(frame, failed)`: requests, latency percentiles, failure share.

A drift measured on few rows is mostly noise: PSI of two samples of one distribution is
about (bins - 1) * (1/n + 1/m) (`export_checks.psi_noise`). A drift is **gated** only when
that noise is at most half the threshold; otherwise it is reported with its noise and a
note, never a reason to retrain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_project.wachttijden import export_checks
from airflow_project.wachttijden.schema import DEFAULT_MAX_DRIFT, FEATURES, TARGET

if TYPE_CHECKING:
    import pandas as pd

NOISE_SHARE = 0.5
"""A drift is gated when its chance level (psi_noise) is at most this share of the threshold."""


def served_counts(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per feature {category: instances} of served rows (empty categories left out)."""
    counts = export_checks.category_counts(frame)
    return {f: {c: n for c, n in counts[f].items() if n} for f in FEATURES}


@dataclass(frozen=True)
class Drift:
    """One column's PSI against the baseline, and whether it is large enough a sample to gate."""

    column: str
    psi: float
    noise: float
    """What two samples of one distribution of these sizes show by chance."""
    gated: bool
    rows: int
    baseline_rows: int

    def to_dict(self) -> dict[str, Any]:
        return {"psi": self.psi, "noise": self.noise, "gated": self.gated, "rows": self.rows,
                "baseline_rows": self.baseline_rows}


def _drift(column: str, psi: float, bins: int, n_baseline: int, n_new: int, max_drift: float) -> Drift:
    noise = export_checks.psi_noise(bins, n_baseline, n_new)
    return Drift(column, psi, noise, noise <= NOISE_SHARE * max_drift, n_new, n_baseline)


@dataclass(frozen=True)
class InputDrift:
    """PSI per feature and category changes of served inputs against a baseline."""

    features: dict[str, Drift]
    new_categories: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per feature, values the baseline never had, with their served instances."""
    missing_categories: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per feature, values of the baseline never served, with their baseline rows."""

    @property
    def largest(self) -> Drift | None:
        """The largest gated drift (None when no feature is gated)."""
        gated = [d for d in self.features.values() if d.gated]
        return max(gated, key=lambda d: d.psi) if gated else None

    def to_dict(self) -> dict[str, Any]:
        largest = self.largest
        return {"drift": None if largest is None else largest.psi,
                "drift_column": None if largest is None else largest.column,
                "by_feature": {f: d.to_dict() for f, d in self.features.items()},
                "new_categories": self.new_categories, "missing_categories": self.missing_categories}


def input_drift(baseline_counts: Mapping[str, Mapping[str, int]], served: Mapping[str, Mapping[str, int]],
                max_drift: float = DEFAULT_MAX_DRIFT) -> InputDrift:
    """Served inputs against the baseline's, per feature (both as `{feature: {category: n}}`,
    e.g. `served_counts(frame)` and `export_checks.category_counts(training_frame)`)."""
    if not any(sum(served[f].values()) for f in FEATURES):
        raise ValueError("input drift needs at least one served instance")
    new, missing = export_checks.category_changes(baseline_counts, served)
    features = {}
    for f in FEATURES:
        bins = len(set(baseline_counts[f]) | set(served[f]))
        psi = export_checks.categorical_psi(baseline_counts[f], served[f])
        features[f] = _drift(f, psi, bins, sum(baseline_counts[f].values()), sum(served[f].values()), max_drift)
    return InputDrift(features, new, missing)


@dataclass(frozen=True)
class PredictionDrift:
    """Served predictions against the model's own predictions on its training rows."""

    drift: Drift
    served_mean: float
    reference_mean: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.drift.to_dict(), "served_mean": self.served_mean, "reference_mean": self.reference_mean}


def prediction_drift(reference: Any, served: Any, max_drift: float = DEFAULT_MAX_DRIFT
                     ) -> PredictionDrift:
    """PSI (ten bins at the reference's deciles, as for the waiting time at the gate)."""
    ref = np.asarray(reference, dtype="float64")
    new = np.asarray(served, dtype="float64")
    psi = export_checks.psi(ref, new)
    bins = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, export_checks.PSI_BINS + 1)[1:-1])).size + 1
    return PredictionDrift(_drift("prediction", psi, bins, ref.size, new.size, max_drift),
                           float(new.mean()), float(ref.mean()))


@dataclass(frozen=True)
class RealisedError:
    """Served predictions scored against the labelled export.

    A served instance is scored against every labelled row of its feature combination and
    its error is the mean absolute difference to them: a combination stands for several
    locations (one row each), and so the realised MAE weighs rows the way the hold-out MAE
    does, weighted by what was served. A combination without a labelled row is not scored;
    its instances are counted (`unlabelled`)."""

    mae: float | None
    scored: int
    """Served instances whose combination has labelled rows."""
    unlabelled: int
    combinations: int
    """Distinct combinations scored."""
    unlabelled_combinations: int
    label_rows: int
    """Labelled rows of the scored combinations."""

    @property
    def labelled_share(self) -> float:
        total = self.scored + self.unlabelled
        return self.scored / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"mae": self.mae, "scored": self.scored, "unlabelled": self.unlabelled,
                "labelled_share": self.labelled_share, "combinations": self.combinations,
                "unlabelled_combinations": self.unlabelled_combinations, "label_rows": self.label_rows}


def realised_error(served: pd.DataFrame, labels: pd.DataFrame) -> RealisedError:
    """`served`: the four features and `prediction` (one row per served instance);
    `labels`: a prepared export (the features and WACHTTIJD)."""

    keys = list(FEATURES)
    cast = {f: "string" for f in keys}
    # The model answers a combination with one value: score each (combination, prediction) once.
    asked = (served.loc[:, [*keys, "prediction"]].astype({**cast, "prediction": "float64"})
             .value_counts(sort=False).rename("instances").reset_index())
    truth = labels.loc[:, [*keys, TARGET]].astype({**cast, TARGET: "float64"})
    per_combination = truth.groupby(keys, observed=True)[TARGET].size().rename("label_rows").reset_index()
    asked = asked.merge(per_combination, on=keys, how="left")
    labelled = asked[asked["label_rows"].notna()]
    unlabelled = asked[asked["label_rows"].isna()]
    if labelled.empty:
        return RealisedError(None, 0, int(unlabelled["instances"].sum()), 0,
                             len(unlabelled.drop_duplicates(keys)), 0)
    pairs = labelled.loc[:, [*keys, "prediction", "instances"]].merge(truth, on=keys, how="inner")
    pairs["abs_error"] = (pairs["prediction"] - pairs[TARGET]).abs()
    per_answer = pairs.groupby([*keys, "prediction"], observed=True).agg(
        error=("abs_error", "mean"), instances=("instances", "first")).reset_index()
    scored = int(per_answer["instances"].sum())
    mae = float((per_answer["error"] * per_answer["instances"]).sum() / scored)
    combos = labelled.drop_duplicates(keys)
    return RealisedError(mae, scored, int(unlabelled["instances"].sum()), len(combos),
                         len(unlabelled.drop_duplicates(keys)), int(combos["label_rows"].sum()))


def instance_keys(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with `instance`: the row's position within its request (a request id's rows
    in order), so two versions' answers to one request line up row by row."""
    out = frame.copy()
    out["instance"] = out.groupby("request_id", observed=True).cumcount()
    return out


@dataclass(frozen=True)
class ShadowAgreement:
    """The primary's and the shadow's answers to the same requests (joined by request id)."""

    primary: str
    shadow: str
    requests: int
    """Requests both answered."""
    metrics: dict[str, float]
    """`deploy_steps.agreement`: rows, mae_primary_vs_shadow, share_within_1_week,
    max_abs_diff_weeks."""
    realised_primary: RealisedError | None = None
    realised_shadow: RealisedError | None = None
    """Each one's realised error on the same instances (with labels)."""

    def to_dict(self) -> dict[str, Any]:
        return {"primary": self.primary, "shadow": self.shadow, "requests": self.requests,
                **self.metrics,
                "realised_mae_primary": None if self.realised_primary is None else self.realised_primary.mae,
                "realised_mae_shadow": None if self.realised_shadow is None else self.realised_shadow.mae}


def shadow_agreement(primary: pd.DataFrame, shadow: pd.DataFrame, labels: pd.DataFrame | None = None, *,
                     primary_version: str = "", shadow_version: str = "") -> ShadowAgreement | None:
    """Both versions' served rows (COLUMNS of `capture`), joined on request id and instance;
    None when they share no request."""
    from airflow_project.deploy_steps import agreement

    keys = ["request_id", "instance"]
    left = instance_keys(primary).astype({"request_id": "string"})
    right = instance_keys(shadow).astype({"request_id": "string"})
    joined = left.merge(right.loc[:, [*keys, "prediction"]], on=keys, suffixes=("", "_shadow"))
    if joined.empty:
        return None
    metrics = agreement(joined["prediction"].to_numpy(), joined["prediction_shadow"].to_numpy())
    realised_p = realised_s = None
    if labels is not None:
        realised_p = realised_error(joined, labels)
        realised_s = realised_error(joined.assign(prediction=joined["prediction_shadow"]), labels)
    return ShadowAgreement(primary_version, shadow_version, int(joined["request_id"].nunique()), metrics,
                           realised_p, realised_s)


@dataclass(frozen=True)
class ServiceHealth:
    """How a version served: requests, instances, latency as captured (the answer's time
    minus the request's), and the share of requests without an answer."""

    requests: int
    instances: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    failed: int = 0

    @property
    def failed_share(self) -> float:
        total = self.requests + self.failed
        return self.failed / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "instances": self.instances, "latency_p50_ms": self.latency_p50_ms,
                "latency_p99_ms": self.latency_p99_ms, "failed": self.failed, "failed_share": self.failed_share}


def service_health(frame: pd.DataFrame, failed: int = 0) -> ServiceHealth:
    """`frame`: served rows (COLUMNS of `capture`); latency counted once per request."""
    per_request = frame.drop_duplicates("request_id")["latency_ms"].to_numpy(dtype="float64")
    p50 = p99 = None
    if per_request.size:
        p50, p99 = (float(v) for v in np.quantile(per_request, [0.5, 0.99]))
    return ServiceHealth(int(per_request.size), len(frame), p50, p99, int(failed))
