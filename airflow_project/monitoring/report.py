"""The monitoring report: per served version its traffic, input and prediction drift and
realised error against its thresholds, and the shadow's agreement with the primary.

`build_report(traffic, references, labels=..., thresholds=...)` is what `mlops monitor`
prints and `monitor_serving` logs. Thresholds apply to the versions that answer callers
(the primary, or a version served alone); a shadow's answers reach nobody, so its measures
are reported and never a reason to retrain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_project.monitoring import analysis
from airflow_project.monitoring.thresholds import MonitorThresholds
from airflow_project.serving.constants import SHADOW_SERVICE
from airflow_project.wachttijden import export_checks

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from airflow_project.monitoring.capture import ServedTraffic

PRIMARY = "primary"
SHADOW = "shadow"


@dataclass(frozen=True)
class Reference:
    """What a served version is compared with; a missing part says why in `note`."""

    version: str
    baseline: pd.DataFrame | None = None
    """The data it was trained on (prepared: WACHTTIJD and the features)."""
    baseline_source: str | None = None
    training_predictions: np.ndarray | None = None
    """Its own predictions on those rows (the reference of prediction drift)."""
    holdout_mae: float | None = None
    note: str = ""
    labels_note: str | None = None
    """Why the labelled export does not score this version (None: it does), e.g. it was
    trained on that export."""


@dataclass(frozen=True)
class Labels:
    """A labelled export (prepared) whose waiting times score the served predictions."""

    frame: pd.DataFrame
    source: str


@dataclass
class VersionReport:
    version: str
    role: str
    health: analysis.ServiceHealth
    input: analysis.InputDrift | None = None
    prediction: analysis.PredictionDrift | None = None
    realised: analysis.RealisedError | None = None
    holdout_mae: float | None = None
    baseline_source: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def mae_ratio(self) -> float | None:
        if self.realised is None or self.realised.mae is None or not self.holdout_mae:
            return None
        return self.realised.mae / self.holdout_mae

    def reasons(self, thresholds: MonitorThresholds) -> list[str]:
        """Why this version fails its thresholds (empty: it passes, or it is a shadow)."""
        if self.role == SHADOW:
            return []
        out = []
        largest = self.input.largest if self.input is not None else None
        if largest is not None and largest.psi > thresholds.max_drift:
            over = sorted(((d.psi, f) for f, d in self.input.features.items()
                           if d.gated and d.psi > thresholds.max_drift), reverse=True)
            out.append(f"input drift {largest.psi:.3f} is above max_drift {thresholds.max_drift:.3f} (PSI of "
                       f"served inputs against {self.baseline_source}: "
                       + ", ".join(f"{f} {v:.3f}" for v, f in over) + ")")
        drift = self.prediction.drift if self.prediction is not None else None
        if drift is not None and drift.gated and drift.psi > thresholds.max_drift:
            out.append(f"prediction drift {drift.psi:.3f} is above max_drift {thresholds.max_drift:.3f} (PSI of "
                       f"served predictions, mean {self.prediction.served_mean:.2f}, against the model's on its "
                       f"training rows, mean {self.prediction.reference_mean:.2f})")
        ratio = self.mae_ratio
        if ratio is not None and ratio > thresholds.max_mae_ratio:
            assert self.realised is not None and self.realised.mae is not None
            out.append(f"realised MAE {self.realised.mae:.3f} is {ratio:.2f}x the hold-out MAE "
                       f"{self.holdout_mae:.3f}, above max_mae_ratio {thresholds.max_mae_ratio:.2f} "
                       f"({self.realised.scored:,} served instances scored)")
        return out

    def metrics(self) -> dict[str, float]:
        out = {k: float(v) for k, v in self.health.to_dict().items() if v is not None}
        if self.input is not None:
            largest = self.input.largest
            if largest is not None:
                out["input_drift"] = largest.psi
            out.update({f"psi_{f}": d.psi for f, d in self.input.features.items()})
            out["new_categories"] = float(sum(map(len, self.input.new_categories.values())))
            out["new_category_instances"] = float(sum(sum(v.values()) for v in self.input.new_categories.values()))
            out["missing_categories"] = float(sum(map(len, self.input.missing_categories.values())))
        if self.prediction is not None:
            out["prediction_drift"] = self.prediction.drift.psi
        if self.realised is not None:
            out["labelled_share"] = self.realised.labelled_share
            if self.realised.mae is not None:
                out["realised_mae"] = self.realised.mae
        if self.holdout_mae is not None:
            out["holdout_mae"] = self.holdout_mae
        if self.mae_ratio is not None:
            out["mae_ratio"] = self.mae_ratio
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version, "role": self.role, **self.health.to_dict(),
            "baseline": self.baseline_source,
            "input_drift": None if self.input is None else self.input.to_dict(),
            "prediction_drift": None if self.prediction is None else self.prediction.to_dict(),
            "realised": None if self.realised is None else self.realised.to_dict(),
            "holdout_mae": self.holdout_mae, "mae_ratio": self.mae_ratio, "notes": self.notes,
        }

    def headline(self) -> str:
        parts = [f"v{self.version} ({self.role}) {self.health.requests:,} requests"]
        largest = self.input.largest if self.input is not None else None
        if largest is not None:
            parts.append(f"drift {largest.psi:.3f} ({largest.column})")
        elif self.input is not None:
            parts.append("drift not gated (too few requests)")
        if self.prediction is not None:
            parts.append(f"prediction drift {self.prediction.drift.psi:.3f}")
        if self.mae_ratio is not None:
            assert self.realised is not None and self.realised.mae is not None
            parts.append(f"realised MAE {self.realised.mae:.2f} vs hold-out {self.holdout_mae:.2f} "
                         f"({self.mae_ratio:.2f}x)")
        elif self.realised is not None and self.realised.mae is not None:
            parts.append(f"realised MAE {self.realised.mae:.2f}")
        else:
            parts.append("realised MAE not measured")
        return ", ".join(parts)


@dataclass
class MonitoringReport:
    """Everything `mlops monitor` and `monitor_serving` found; `to_dict()` is the JSON report."""

    source: str
    thresholds: MonitorThresholds
    traffic: dict[str, int]
    versions: list[VersionReport]
    agreement: analysis.ShadowAgreement | None = None
    window_start: str | None = None
    window_end: str | None = None
    labels_source: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        return [f"v{v.version}: {reason}" for v in self.versions for reason in v.reasons(self.thresholds)]

    @property
    def passed(self) -> bool:
        return not self.reasons

    def version(self, version: str) -> VersionReport | None:
        return next((v for v in self.versions if v.version == version), None)

    def headline(self) -> str:
        requests = self.traffic.get("requests", 0)
        if not self.versions:
            return f"no served requests in the window ({requests} read); passed"
        parts = [v.headline() for v in self.versions]
        if self.agreement is not None:
            parts.append(f"shadow v{self.agreement.shadow} vs primary v{self.agreement.primary} on "
                         f"{self.agreement.requests:,} mirrored requests: MAE between them "
                         f"{self.agreement.metrics['mae_primary_vs_shadow']:.2f} weeks")
        parts.append("passed" if self.passed else "thresholds crossed")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "window": {"start": self.window_start, "end": self.window_end},
            "traffic": self.traffic, "passed": self.passed, "reasons": self.reasons,
            "headline": self.headline(),
            "thresholds": {"max_drift": self.thresholds.max_drift, "max_mae_ratio": self.thresholds.max_mae_ratio},
            "labels": self.labels_source,
            "versions": {v.version: v.to_dict() for v in self.versions},
            "agreement": None if self.agreement is None else self.agreement.to_dict(),
            "notes": self.notes,
        }

    def metrics(self) -> dict[str, float]:
        """MLflow metrics: the traffic, each version's under `v<version>/`, the agreement under
        `agreement/`."""
        out = {k: float(v) for k, v in self.traffic.items()}
        out["passed"] = 1.0 if self.passed else 0.0
        for v in self.versions:
            out.update({f"v{v.version}/{k}": value for k, value in v.metrics().items()})
        if self.agreement is not None:
            out.update({f"agreement/{k}": float(value) for k, value in self.agreement.to_dict().items()
                        if isinstance(value, (int, float)) and not isinstance(value, bool)})
        return out


def version_roles(traffic: ServedTraffic) -> dict[str, str]:
    """Which version answered callers (primary) and which only received copies (shadow).

    By service: a version served only by the shadow InferenceService (SHADOW_SERVICE) is the
    shadow. Without service names (prediction-log lines) and two versions that answered the
    same requests: the one whose requests are a subset of the other's (a mirror copies a
    share of the primary's traffic), and with the same requests the newer version (the
    challenger, as `deploy_traffic_mirroring` shadows it)."""
    frame = traffic.frame
    versions = traffic.versions()
    roles = {v: PRIMARY for v in versions}
    services = {v: set(frame.loc[frame["version"] == v, "service"].astype(str)) - {""} for v in versions}
    if any(services.values()):
        for v in versions:
            if services[v] and services[v] <= {SHADOW_SERVICE}:
                roles[v] = SHADOW
        return roles
    if len(versions) == 2:
        a, b = (set(frame.loc[frame["version"] == v, "request_id"].astype(str)) for v in versions)
        if a & b:
            if a < b:
                roles[versions[0]] = SHADOW
            else:
                roles[versions[1]] = SHADOW  # a superset, or the same requests: the newer one
    return roles


def _version_report(version: str, role: str, rows: pd.DataFrame, reference: Reference | None,
                    labels: Labels | None, thresholds: MonitorThresholds, failed: int) -> VersionReport:
    report = VersionReport(version, role, analysis.service_health(rows, failed))
    if reference is None:
        report.notes.append(f"v{version}: nothing to compare with (no baseline, model or hold-out MAE)")
        return report
    if reference.note:
        report.notes.append(reference.note)
    report.holdout_mae = reference.holdout_mae
    report.baseline_source = reference.baseline_source
    if reference.baseline is not None and not reference.baseline.empty:
        report.input = analysis.input_drift(export_checks.category_counts(reference.baseline),
                                            analysis.served_counts(rows), thresholds.max_drift)
        ungated = [f for f, d in report.input.features.items() if not d.gated]
        if ungated:
            report.notes.append(
                f"v{version}: input drift of {', '.join(ungated)} not gated: {len(rows):,} served instances "
                f"give a PSI noise above {analysis.NOISE_SHARE:g} x max_drift "
                f"({', '.join(f'{f} {report.input.features[f].noise:.3f}' for f in ungated)})")
    if reference.training_predictions is not None and len(reference.training_predictions):
        report.prediction = analysis.prediction_drift(reference.training_predictions, rows["prediction"],
                                                      thresholds.max_drift)
        if not report.prediction.drift.gated:
            report.notes.append(f"v{version}: prediction drift not gated: PSI noise "
                                f"{report.prediction.drift.noise:.3f} at {len(rows):,} served instances")
    if labels is None:
        pass
    elif reference.labels_note:
        report.notes.append(f"v{version}: realised MAE not measured: {reference.labels_note}")
    else:
        report.realised = analysis.realised_error(rows, labels.frame)
        if report.realised.mae is None:
            report.notes.append(f"v{version}: realised MAE not measured: no served combination has a "
                                f"labelled row in {labels.source}")
    return report


def build_report(traffic: ServedTraffic, references: Mapping[str, Reference], *, source: str,
                 labels: Labels | None = None, thresholds: MonitorThresholds | None = None,
                 roles: Mapping[str, str] | None = None, window_start: str | None = None,
                 window_end: str | None = None) -> MonitoringReport:
    """The report for `traffic` (already cut to its window). `references`: per served version
    what it is compared with (a version without one is reported with its traffic only)."""
    thresholds = thresholds or MonitorThresholds()
    roles = dict(roles or version_roles(traffic))
    frame = traffic.frame
    report = MonitoringReport(source, thresholds, traffic.to_dict(), [], window_start=window_start,
                              window_end=window_end, labels_source=None if labels is None else labels.source)
    if labels is None:
        report.notes.append("realised MAE not measured: no labelled export given")
    # the versions that answer callers first
    ordered = sorted(traffic.versions(), key=lambda v: roles.get(v, PRIMARY) != PRIMARY)
    by_version = {v: frame[frame["version"] == v] for v in ordered}
    for version, rows in by_version.items():
        failed = traffic.failed if len(by_version) == 1 else 0
        report.versions.append(_version_report(version, roles.get(version, PRIMARY), rows,
                                               references.get(version), labels, thresholds, failed))
    primaries = [v for v in by_version if roles.get(v, PRIMARY) == PRIMARY]
    shadows = [v for v in by_version if roles.get(v) == SHADOW]
    if len(primaries) == 1 and len(shadows) == 1:
        p, s = primaries[0], shadows[0]
        report.agreement = analysis.shadow_agreement(by_version[p], by_version[s],
                                                     None if labels is None else labels.frame,
                                                     primary_version=p, shadow_version=s)
        if report.agreement is None:
            report.notes.append(f"shadow v{s} shares no request id with primary v{p}: no agreement measured")
    if traffic.failed and len(by_version) != 1:
        report.notes.append(f"{traffic.failed:,} requests had no answer (not attributed to a version)")
    return report

