"""The monitoring report in MLflow: one run per monitoring window in experiment
`wachttijden-monitoring`, metrics per served version (`v<version>/...`) with the export or
window date as step (YYYYMMDD, the metric's timestamp at the window's end), so the chart
view across runs plots drift and realised MAE over time; the report as JSON and two plots."""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from airflow_project.monitoring.report import MonitoringReport

log = logging.getLogger(__name__)

MONITORING_EXPERIMENT = "wachttijden-monitoring"
REPORT_ARTIFACT = "monitoring_report.json"
DISTRIBUTION_PLOT = "plots/served_vs_training.png"
ERROR_PLOT = "plots/realised_vs_holdout_mae.png"
WINDOW_END_TAG = "window_end"
HEADLINE_TAG = "headline"


def distribution_plot(served: Mapping[str, np.ndarray], training: Mapping[str, np.ndarray]) -> bytes:
    """Per version, the served predictions against the model's own on its training rows."""
    import numpy as np

    from airflow_project.wachttijden.plots import png

    def draw(ax: Any) -> None:
        values = [v for v in (*served.values(), *training.values()) if len(v)]
        top = max(1.0, float(np.quantile(np.concatenate(values), 0.995))) if values else 1.0
        bins = np.linspace(0.0, top, 40)
        for version, predictions in served.items():
            if version in training and len(training[version]):
                ax.hist(np.clip(training[version], 0, top), bins=bins, density=True, histtype="step",
                        linestyle="--", linewidth=1.2, label=f"v{version} on its training rows")
            ax.hist(np.clip(predictions, 0, top), bins=bins, density=True, histtype="step", linewidth=1.8,
                    label=f"v{version} served (n={len(predictions):,})")
        ax.set(xlabel="predicted waiting time (weeks)", ylabel="share", title="Served vs training predictions")
        ax.legend(loc="upper right", fontsize="small")

    return png(draw, (8, 4.5))


def error_plot(report: MonitoringReport) -> bytes:
    """Realised MAE (served traffic, labelled export) next to the hold-out MAE, per version."""
    from airflow_project.wachttijden.plots import png

    def draw(ax: Any) -> None:
        versions = [v for v in report.versions]
        x = range(len(versions))
        realised = [v.realised.mae if v.realised is not None and v.realised.mae is not None else 0.0 for v in versions]
        holdout = [v.holdout_mae or 0.0 for v in versions]
        ax.bar([i - 0.2 for i in x], holdout, width=0.4, label="hold-out MAE")
        ax.bar([i + 0.2 for i in x], realised, width=0.4, label="realised MAE (served)")
        ax.set_xticks(list(x), [f"v{v.version} ({v.role})" for v in versions])
        ax.set(ylabel="weeks", title=f"Realised vs hold-out MAE (labels: {report.labels_source or 'none'})")
        ax.legend(loc="upper right")

    return png(draw, (7, 4))


def step_of(day: dt.date) -> int:
    from airflow_project.registry import export_step

    return export_step(day)


def previous_window_end(client: Any, namespace: str) -> dt.datetime | None:
    """Where the newest monitoring run of the namespace's traffic ended (the next window starts there)."""
    experiment = client.get_experiment_by_name(MONITORING_EXPERIMENT)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.{WINDOW_END_TAG} != '' and tags.namespace = '{namespace}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    return dt.datetime.fromisoformat(runs[0].data.tags[WINDOW_END_TAG])


def log_report(report: MonitoringReport, *, step: int, window_end: dt.datetime, run_name: str | None = None,
               tags: Mapping[str, str] | None = None, extra_metrics: Mapping[str, float] | None = None,
               served: Mapping[str, np.ndarray] | None = None,
               training: Mapping[str, np.ndarray] | None = None) -> str:
    """One run of `wachttijden-monitoring`; its run id."""
    import mlflow

    from airflow_project.registry import mlflow_logs_at_their_level, use_experiment

    timestamp = int(window_end.timestamp() * 1000)
    metrics = {**report.metrics(), **dict(extra_metrics or {})}
    with mlflow_logs_at_their_level():
        use_experiment(MONITORING_EXPERIMENT)  # filed in the model-training view, like the others
        with mlflow.start_run(run_name=run_name) as run:
            mlflow.set_tags({
                "window_start": report.window_start or "", WINDOW_END_TAG: report.window_end or "",
                HEADLINE_TAG: report.headline()[:4900], "passed": str(report.passed).lower(),
                "served_versions": ",".join(v.version for v in report.versions),
                "labels": report.labels_source or "", **dict(tags or {}),
            })
            mlflow.log_params({"max_drift": report.thresholds.max_drift,
                               "max_mae_ratio": report.thresholds.max_mae_ratio})
            client = mlflow.MlflowClient()
            from mlflow.entities import Metric

            client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), timestamp, step)
                                                       for k, v in sorted(metrics.items())])
            mlflow.log_dict(report.to_dict(), REPORT_ARTIFACT)
            with tempfile.TemporaryDirectory() as tmp:
                plots = {ERROR_PLOT: error_plot(report)}
                if served:
                    plots[DISTRIBUTION_PLOT] = distribution_plot(served, training or {})
                for name, data in plots.items():
                    path = Path(tmp) / Path(name).name
                    path.write_bytes(data)
                    mlflow.log_artifact(str(path), artifact_path=str(Path(name).parent))
    log.info("monitoring: %s (MLflow run %s in %s)", report.headline(), run.info.run_id, MONITORING_EXPERIMENT)
    return run.info.run_id
