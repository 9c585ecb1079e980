"""What a served version is compared with, from the MLflow registry: its hold-out MAE (the
metric `mae` of its training run), the data it was trained on (the run's param `input`, a
data-lake path) and its own predictions on those rows."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow_project import registry
from airflow_project.monitoring.report import Reference
from airflow_project.wachttijden.schema import FEATURES, MODEL_NAME

if TYPE_CHECKING:
    import pandas as pd

    from airflow_project.datalake import DataLake

log = logging.getLogger(__name__)


def _predict(version: str, frame: pd.DataFrame) -> Any:
    import mlflow.sklearn
    import numpy as np

    model = mlflow.sklearn.load_model(registry.model_uri(version))
    return np.asarray(model.predict(frame.loc[:, list(FEATURES)]), dtype="float64")


def trained_on(client: Any, version: str) -> tuple[Any, str]:
    """(the version's training run, the input it names: a data-lake path or a file)."""
    run = client.get_run(registry.require_version(client, version, MODEL_NAME).run_id)
    return run, run.data.params.get("input", "")


def registry_reference(client: Any, version: str, *, baseline: pd.DataFrame | None = None,
                       baseline_source: str | None = None, lake: DataLake | None = None) -> Reference:
    """The reference of a registered version. `baseline` (e.g. `mlops monitor --baseline`) is
    the data compared with; without it, the data the version was trained on, read from `lake`.
    Anything that cannot be had is left out with the reason in `note`."""
    from airflow_project.datalake import BlobNotFoundError, BlobRef

    if not version.isdigit():
        return Reference(version, baseline, baseline_source,
                         note=f"v{version}: not a registry version number: no model or hold-out MAE")
    run, source = trained_on(client, version)
    holdout = run.data.metrics.get("mae")
    notes = []
    if baseline is None and lake is not None:
        try:
            ref = BlobRef.parse(source)
            from airflow_project.data_steps import read_prepared

            baseline, baseline_source = read_prepared(lake, ref), f"v{version}'s training data {ref}"
        except ValueError:
            notes.append(f"v{version} was trained on {source or '?'}, which is not in the data lake: no baseline")
        except BlobNotFoundError:
            notes.append(f"v{version}'s training data {source} no longer exists: no baseline")
    predictions = None
    if baseline is not None and not baseline.empty:
        predictions = _predict(version, baseline)
    return Reference(version, baseline, baseline_source, predictions, None if holdout is None else float(holdout),
                     note="; ".join(notes))


def references(versions: list[str], *, baseline: pd.DataFrame, baseline_source: str,
               tracking_uri: str | None) -> dict[str, Reference]:
    """`mlops monitor`'s references: the given baseline for every served version, with its
    model's predictions and hold-out MAE from the registry at `tracking_uri` when it has the
    version (a note says why not otherwise)."""
    out = {}
    client, why = _client(tracking_uri)
    for version in versions:
        if client is None:
            out[version] = Reference(version, baseline, baseline_source,
                                     note=f"v{version}: {why}: no prediction drift or hold-out MAE")
            continue
        try:
            out[version] = registry_reference(client, version, baseline=baseline, baseline_source=baseline_source)
        except registry.ModelVersionNotFound as exc:
            out[version] = Reference(version, baseline, baseline_source,
                                     note=f"v{version}: no prediction drift or hold-out MAE: {exc}")
    return out


def _client(tracking_uri: str | None) -> tuple[Any, str]:
    """An MLflow client, or None and why (an unreachable server would be retried for minutes)."""
    if not tracking_uri:
        return None, "no MLflow tracking URI"
    if tracking_uri.startswith(("http://", "https://")):
        import httpx

        try:
            httpx.get(tracking_uri.rstrip("/") + "/health", timeout=5.0, trust_env=False).raise_for_status()
        except httpx.HTTPError as exc:
            return None, f"the MLflow server at {tracking_uri} does not answer ({type(exc).__name__})"
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)  # the models are loaded through it
    return MlflowClient(tracking_uri), ""
