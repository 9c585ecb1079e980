"""The MLflow side of the data checks: the baseline an export is compared with (the data the
current champion was trained on), one run per checked export in experiment
`wachttijden-data`, and finding that run again for a prepared dataset (the model card).

How the baseline is found, and why so: the champion's training run records its input as
the param `input` (`preprocessed/wachttijden/<date>/wachttijden.csv`, every version has
it) and, since the data checks, as its training dataset with a digest. The baseline is
read back from the data lake at that path, and its digest compared with the recorded one,
so a dataset rewritten since (another raw file for the same date) is not taken for the
champion's data. No champion, a champion trained outside the lake (`mlops train` from a
file), or data gone or changed: the baseline checks are marked not applicable, with that
reason, and only the usable share is gated.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_project import registry
from airflow_project.datalake import BlobNotFoundError, BlobRef, DataLake

if TYPE_CHECKING:
    import pandas as pd

    from airflow_project.wachttijden.export_checks import ExportReport

log = logging.getLogger(__name__)

DATA_EXPERIMENT = "wachttijden-data"
REPORT_ARTIFACT = "data_report.json"
PLOT_ARTIFACT = "plots/target_distribution.png"
PREPROCESSED_TAG = "preprocessed"
HEADLINE_TAG = "headline"


@dataclass
class Baseline:
    """The champion's training data, or why there is none to compare with."""

    frame: pd.DataFrame | None
    source: str | None
    note: str
    version: str | None = None


def _training_digest(run: Any) -> str | None:
    for dataset_input in run.inputs.dataset_inputs if run.inputs else []:
        if any(tag.key == "mlflow.data.context" and tag.value == "training" for tag in dataset_input.tags):
            return dataset_input.dataset.digest
    return None


def champion_baseline(lake: DataLake) -> Baseline:
    """The data the current champion was trained on, read from the data lake."""
    from mlflow import MlflowClient

    from airflow_project.data_steps import read_prepared

    client = MlflowClient()
    champion = registry.find_version(client, registry.CHAMPION)
    if champion is None:
        return Baseline(None, None, "no champion yet, the first model")
    version = str(champion.version)
    run = client.get_run(champion.run_id)
    trained_on = run.data.params.get("input", "")
    try:
        ref = BlobRef.parse(trained_on)
    except ValueError:
        return Baseline(None, None, f"champion v{version} was trained on {trained_on or '?'}, "
                        "which is not in the data lake", version)
    try:
        frame = read_prepared(lake, ref)
    except BlobNotFoundError:
        return Baseline(None, None, f"champion v{version}'s training data {ref} no longer "
                        "exists", version)
    recorded = _training_digest(run)
    if recorded is not None:
        from airflow_project.wachttijden.dataset import digest as data_digest

        digest = data_digest(frame)
        if digest != recorded and registry.legacy_dataset_digest(frame) != recorded:
            return Baseline(None, None, f"{ref} changed since champion v{version} was trained "
                            f"on it (digest {digest}, recorded {recorded})", version)
    return Baseline(frame, f"champion v{version}'s training data {ref}", "compared", version)


def data_run_name(export: str) -> str:
    """A data run is named after the export it checked: its export date (the chart view then
    tells exports apart), else its path (a file outside `wachttijden/<YYYY>/<MM>/<DD>/`)."""
    from airflow_project.lineage import export_date

    day = export_date(export)
    return export if day is None else f"export {day:%Y-%m-%d}"


def log_data_run(report: ExportReport, *, baseline: pd.DataFrame | None, preprocessed: str,
                 params: dict[str, Any] | None = None, tags: dict[str, str] | None = None) -> str:
    """One run in `wachttijden-data`, named by the export: the measures as metrics, the gate
    as tags, the full report as JSON, and a plot of the waiting-time distribution (against the
    baseline's when there is one). Its run id."""
    import mlflow

    from airflow_project.wachttijden.export_checks import target_distribution_plot
    from airflow_project.wachttijden.schema import TARGET

    registry.use_experiment(DATA_EXPERIMENT)
    t = report.thresholds
    with mlflow.start_run(run_name=data_run_name(report.source)) as run:
        mlflow.set_tags({
            "export": report.source, PREPROCESSED_TAG: preprocessed, "gate": report.gate,
            HEADLINE_TAG: report.headline(),
            "baseline": report.baseline_source or f"not applicable: {report.baseline_note}",
            **({"gate_override": report.override} if report.override else {}), **(tags or {}),
        })
        mlflow.log_params({"min_usable_share": t.min_usable_share, "max_drift": t.max_drift,
                           "drift_statistic": "psi", **(params or {})})
        mlflow.log_metrics(report.metrics())
        mlflow.log_dict(report.to_dict(), REPORT_ARTIFACT)
        with tempfile.TemporaryDirectory() as tmp:
            plot = Path(tmp) / Path(PLOT_ARTIFACT).name
            plot.write_bytes(target_distribution_plot(
                None if baseline is None else baseline[TARGET], report.usable_target,
                baseline_note=report.baseline_note))
            mlflow.log_artifact(str(plot), artifact_path=str(Path(PLOT_ARTIFACT).parent))
    return run.info.run_id  # the caller logs the headline with it, once


def find_data_report(preprocessed: str) -> tuple[dict[str, Any], str] | None:
    """The newest data-check report (and its run id) that let `preprocessed` be written:
    gate passed or overridden. None when there is none (e.g. a file trained by hand)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    run = newest_data_run(client, f"tags.{PREPROCESSED_TAG} = '{preprocessed}' and tags.gate != 'failed'")
    if run is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run.info.run_id, REPORT_ARTIFACT, tmp)
        return json.loads(Path(path).read_text()), run.info.run_id


def newest_data_run(client: Any, filter_string: str) -> Any | None:
    """The newest run of `wachttijden-data` matching an MLflow search filter, or None."""
    experiment = client.get_experiment_by_name(DATA_EXPERIMENT)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], filter_string=filter_string,
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None
