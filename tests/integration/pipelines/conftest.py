"""Airflow and MLflow pointed at Azurite and a module's own, empty MLflow registry, for the
pipeline modules that need a known registry state."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def services(azurite: str, fresh_mlflow_server: str, airflow_db, datalake) -> Iterator[str]:
    """Airflow's connection and MLflow (by environment and MLflow's process-wide URI, which
    other in-process tests may have set) pointing at Azurite and this module's MLflow.

    MLflow's process-wide URI is put back as it was, unset included: `set_tracking_uri` of
    what `get_tracking_uri()` answered would pin MLflow's default (`sqlite:///mlflow.db` in
    the working folder) over the MLFLOW_TRACKING_URI of every later test."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from airflow_project.datalake import CONNECTION_ID

    with pytest.MonkeyPatch.context() as env, _use_tracking_uri(fresh_mlflow_server):
        env.setenv(f"AIRFLOW_CONN_{CONNECTION_ID.upper()}",
                   json.dumps({"conn_type": "wasb", "extra": {"connection_string": azurite}}))
        env.setenv("MLFLOW_TRACKING_URI", fresh_mlflow_server)
        yield fresh_mlflow_server


@pytest.fixture(scope="module")
def client(services: str):
    from mlflow import MlflowClient

    return MlflowClient(services)
