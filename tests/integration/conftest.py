"""Real local services for integration tests: Azurite and an MLflow server.

Each is started once per session on a free port with the same specs `mlops up`
uses (airflow_project.local.stack), and stopped at the end.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_project.host.net import free_port
from airflow_project.local import stack
from airflow_project.local.config import azurite_connection_string

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def services_home() -> Path:
    return Path(os.environ["MLOPS_TEST_HOME"]) / "services"


def _start(spec: stack.ServiceSpec, logs: Path) -> stack.ServiceProcess:
    return stack.ServiceProcess(spec, logs / f"{spec.name}.log").start()


@pytest.fixture(scope="session")
def azurite_port(services_home: Path) -> Iterator[int]:
    """Port of a running Azurite blob service (Node.js is a prerequisite, never skipped)."""
    port = free_port()
    process = _start(stack.azurite_spec(services_home / "azurite", port), services_home / "logs")
    try:
        process.wait_ready()
        yield port
    finally:
        process.stop()


@pytest.fixture(scope="session")
def azurite(azurite_port: int) -> str:
    """Connection string of the session's Azurite."""
    return azurite_connection_string(azurite_port)


@contextlib.contextmanager
def running_mlflow(folder: Path, azurite_port: int) -> Iterator[str]:
    """An MLflow server with its own SQLite store in `folder`, artifacts on Azurite."""
    port = free_port()
    process = _start(stack.mlflow_spec(folder, port, azurite_port), folder / "logs")
    try:
        process.wait_ready()
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


@pytest.fixture(scope="session")
def mlflow_server(services_home: Path, azurite_port: int, datalake) -> Iterator[str]:
    """URI of the session's MLflow tracking server (artifacts on Azurite).

    Depends on `datalake` so that the modelartifacts container exists.
    """
    with running_mlflow(services_home / "mlflow", azurite_port) as uri:
        yield uri


@pytest.fixture(scope="module")
def fresh_mlflow_server(tmp_path_factory, azurite_port: int, datalake) -> Iterator[str]:
    """An MLflow server with an empty registry, for tests that need a known registry state."""
    with running_mlflow(tmp_path_factory.mktemp("mlflow"), azurite_port) as uri:
        yield uri


@pytest.fixture(scope="session")
def datalake(azurite: str):
    from airflow_project.datalake import DataLake

    lake = DataLake.from_connection_string(azurite)
    lake.ensure_containers()
    return lake


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """The session's Airflow metadata database, migrated (AIRFLOW_HOME from tests/conftest.py)."""
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, timeout=300)


@pytest.fixture()
def airflow_services(monkeypatch: pytest.MonkeyPatch, azurite: str, mlflow_server: str, airflow_db):
    """Point Airflow's connection and MLflow URI at the session's services (by environment)."""
    import json

    from airflow_project.datalake import CONNECTION_ID

    connection = {"conn_type": "wasb", "extra": {"connection_string": azurite}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONNECTION_ID.upper()}", json.dumps(connection))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    return {"azurite": azurite, "mlflow": mlflow_server}
