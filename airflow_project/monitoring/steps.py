"""What the `monitor_serving` DAG's tasks do, without Airflow: read the traffic captured
since the last monitoring window, compare each served version with what it was trained on
and with the newest labelled export, log the report to MLflow, and say whether to retrain.

- Window: the capture batches written since the previous monitoring run's window ended
  (its MLflow tag `window_end`), else `lookback` before the end; the end is the run's time.
  Windows by write time split the batches without a gap or an overlap.
- Labels: the export that triggered the run (its asset event), else the newest
  preprocessed export. A version is scored on it only when it was trained on an earlier
  export (`backtest.not_unseen`, the backtest's rule): its own training data is no test.
- Roles: the shadow InferenceService's version is the shadow (`report.version_roles`);
  the primary's and the shadow's answers to one request are joined by its request id.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from airflow_project.datalake import DataLake
    from airflow_project.monitoring.report import Labels, MonitoringReport, Reference
    from airflow_project.monitoring.thresholds import MonitorThresholds

log = logging.getLogger(__name__)


class MonitoringResult(TypedDict):
    """The monitor task's XCom."""

    passed: bool
    headline: str
    reasons: list[str]
    run_id: str
    experiment: str
    window_start: str
    window_end: str
    labels: str | None
    """The labelled export (a preprocessed path): what retraining trains on."""
    requests: int


def window_start(client: Any, namespace: str, end: dt.datetime, lookback: dt.timedelta) -> dt.datetime:
    from airflow_project.monitoring.tracking import previous_window_end

    previous = previous_window_end(client, namespace)
    if previous is not None and previous < end:
        return previous
    return end - lookback


def labelled_export(lake: DataLake, event_path: str | None) -> Labels | None:
    """The labels: the triggering export, else the newest preprocessed one (None when the lake has none)."""
    from airflow_project.data_steps import latest_preprocessed, read_prepared
    from airflow_project.datalake import BlobRef
    from airflow_project.monitoring.report import Labels

    try:
        ref = BlobRef.parse(event_path) if event_path else latest_preprocessed(lake)
    except FileNotFoundError:
        return None
    return Labels(read_prepared(lake, ref), str(ref))


def references(client: Any, lake: DataLake, versions: list[str], labels: Labels | None) -> dict[str, Reference]:
    """Each served version's training data, predictions on it and hold-out MAE; whether the
    labels may score it."""
    from dataclasses import replace

    from airflow_project.backtest import not_unseen
    from airflow_project.datalake import dataset_day
    from airflow_project.monitoring import models
    from airflow_project.monitoring.report import Reference
    from airflow_project.registry import ModelVersionNotFound

    out = {}
    for version in versions:
        try:
            ref = models.registry_reference(client, version, lake=lake)
        except ModelVersionNotFound as exc:
            out[version] = Reference(version, note=f"v{version}: {exc}")
            continue
        if labels is not None and version.isdigit():
            _, trained_on = models.trained_on(client, version)
            day = dataset_day(labels.source)
            why = (f"{labels.source} has no export date" if day is None
                   else not_unseen(trained_on, labels.source, day))
            if why:
                ref = replace(ref, labels_note=f"{labels.source}: {why}")
        out[version] = ref
    return out


def capture_counts(lake: DataLake, namespace: str) -> dict[str, float]:
    """The local capture process's counts (its status blob; none on Kubernetes, where
    KServe's agent keeps none): predictions written and dropped."""
    import json

    from airflow_project.datalake import BlobRef
    from airflow_project.monitoring.capture import CAPTURE_CONTAINER
    from airflow_project.monitoring.capture_process import STATUS_BLOB

    ref = BlobRef(CAPTURE_CONTAINER, f"{namespace}/{STATUS_BLOB}")
    if not lake.exists(ref):
        return {}
    status = json.loads(lake.read(ref))
    return {f"capture_{key}": float(status.get(key, 0)) for key in ("written", "dropped", "upload_errors")}


def monitor(lake: DataLake, thresholds: MonitorThresholds, *, end: dt.datetime, lookback: dt.timedelta,
            namespace: str, event_path: str | None = None, run_name: str | None = None,
            tags: Mapping[str, str] | None = None) -> tuple[MonitoringResult, MonitoringReport]:
    """The report on the serving namespace's traffic in the window ending at `end`, logged to MLflow."""
    from mlflow import MlflowClient

    from airflow_project.datalake import dataset_day
    from airflow_project.monitoring import capture, tracking
    from airflow_project.monitoring.report import build_report
    from airflow_project.registry import mlflow_logs_at_their_level

    with mlflow_logs_at_their_level():
        client = MlflowClient()
        start = window_start(client, namespace, end, lookback)
        traffic = capture.read_lake(lake, prefix=f"{namespace}/", since=start, until=end)
        labels = labelled_export(lake, event_path)
        refs = references(client, lake, traffic.versions(), labels)
        report = build_report(traffic, refs, source=f"{capture.CAPTURE_CONTAINER}/{namespace}/", labels=labels,
                              thresholds=thresholds, window_start=start.isoformat(), window_end=end.isoformat())
        day = (dataset_day(event_path) if event_path else None) or end.date()
        frame = traffic.frame
        served = {v: frame.loc[frame["version"] == v, "prediction"].to_numpy() for v in traffic.versions()}
        training = {v: r.training_predictions for v, r in refs.items() if r.training_predictions is not None}
        run_id = tracking.log_report(report, step=tracking.step_of(day), window_end=end, run_name=run_name,
                                     tags={"namespace": namespace, **dict(tags or {})},
                                     extra_metrics=capture_counts(lake, namespace), served=served, training=training)
    result = MonitoringResult(passed=report.passed, headline=report.headline(), reasons=report.reasons,
                              run_id=run_id, experiment=tracking.MONITORING_EXPERIMENT,
                              window_start=report.window_start or "", window_end=report.window_end or "",
                              labels=report.labels_source, requests=traffic.requests)
    return result, report


class ThresholdsCrossed(ValueError):
    """The served model slipped: the message names each measure, value and threshold."""


def retraining_request(result: MonitoringResult) -> dict[str, Any] | None:
    """The asset event's extra that starts retraining (`train_model` reads `path`), or None
    when every threshold holds."""
    if result["passed"]:
        return None
    return {"path": result["labels"], "reasons": result["reasons"], "monitoring_run": result["run_id"]}


def check(result: MonitoringResult) -> None:
    """Raise ThresholdsCrossed with the reasons (so the run shows red)."""
    if not result["passed"]:
        raise ThresholdsCrossed(
            f"served traffic crossed its thresholds ({result['requests']:,} requests, window "
            f"{result['window_start']} - {result['window_end']}): {'; '.join(result['reasons'])}. Retraining "
            f"was requested; report: MLflow experiment {result['experiment']}, run {result['run_id']}")
