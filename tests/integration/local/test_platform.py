"""`mlops up` / `status` / `down` for real: Azurite, MLflow and Airflow as processes.

One `up` cycle for the whole module (a few minutes on 2 cores): a fresh
MLOPS_HOME and free ports, then the job must have run end to end; a second
`up` reuses everything; `down` stops exactly our processes and keeps the data.
"""

from __future__ import annotations

import datetime as dt
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from airflow_project.local import platform
from airflow_project.local.airflow_api import AirflowClient
from airflow_project.local.config import AIRFLOW_ADMIN_USER, LocalConfig
from airflow_project.local.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

ROWS = 3000


@dataclass
class UpResult:
    config: LocalConfig
    code: int
    out: str
    err: str
    seconds: float


def _run_up(config: LocalConfig) -> UpResult:
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    code = platform.up(config, rows=ROWS, timeout=1200, out=out, err=err)
    return UpResult(config, code, out.getvalue(), err.getvalue(), time.monotonic() - started)


@pytest.fixture(scope="module")
def first_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpResult]:
    home = tmp_path_factory.mktemp("mlops-home")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLOPS_HOME", str(home))
        env.setenv("MLOPS_AZURITE_PORT", str(free_port()))
        env.setenv("MLOPS_MLFLOW_PORT", str(free_port()))
        env.setenv("MLOPS_AIRFLOW_PORT", str(free_port()))
        config = LocalConfig()
        assert config.root == home
        try:
            result = _run_up(config)
            print(result.out, result.err)
            yield result
        finally:
            platform.down(config, purge=False, out=io.StringIO(), err=io.StringIO())


@pytest.fixture(scope="module")
def api(first_up: UpResult) -> Iterator[AirflowClient]:
    config = first_up.config
    with AirflowClient(config.airflow_url, AIRFLOW_ADMIN_USER, config.airflow_password()) as client:
        yield client


def _today_midnight() -> dt.datetime:
    return dt.datetime.combine(dt.datetime.now(dt.UTC).date(), dt.time(0), tzinfo=dt.UTC)


def _live_pids(config: LocalConfig) -> dict[str, int]:
    return {
        name: record.pid for name, record in platform.read_pid_records(config.run).items()
        if platform.record_alive(record)
    }


def _model_versions(config: LocalConfig) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=config.mlflow_uri, registry_uri=config.mlflow_uri)
    return sorted(v.version for v in client.search_model_versions("name='wachttijden'"))


def test_up_runs_the_whole_job(first_up: UpResult, api: AirflowClient) -> None:
    assert first_up.code == 0, first_up.err + first_up.out
    assert first_up.err == ""
    out = first_up.out
    config = first_up.config
    # progress as it goes, then the summary
    assert "prepare_dataset.select_features: success" in out
    assert "train_model.train_and_register: success" in out
    assert f"Airflow UI  {config.airflow_url}   user admin   password {config.airflow_password()}" in out
    assert f"MLflow UI   {config.mlflow_uri}" in out
    assert "Model       wachttijden version 1 (alias: challenger, champion)" in out
    for metric in ("r2=", "mae=", "rmse=", "baseline_mae="):
        assert metric in out
    assert str(config.logs) in out and "make down" in out

    prepare = api.runs_for_logical_date("prepare_dataset", _today_midnight())
    assert [r["state"] for r in prepare] == ["success"]
    train = api.runs("train_model", run_type="asset_triggered")
    assert [r["state"] for r in train] == ["success"]
    events = api.upstream_asset_events("train_model", train[0]["dag_run_id"])
    assert any(e["source_run_id"] == prepare[0]["dag_run_id"] for e in events)
    assert _model_versions(config) == ["1"]

    # services log under <root>/logs, task logs under <root>/logs/airflow
    for name in platform.SERVICE_NAMES:
        assert (config.logs / f"{name}.log").stat().st_size > 0
    assert list((config.logs / "airflow").rglob("*.log"))


def test_status_shows_every_service_running_and_ready(first_up: UpResult) -> None:
    out = io.StringIO()
    assert platform.status(first_up.config, out=out) == 0, out.getvalue()
    table = out.getvalue().split("\n\n")[0].splitlines()[1:]
    assert [line.split()[:2] for line in table] == [[n, "running"] for n in platform.SERVICE_NAMES]
    assert all(line.split()[4] == "yes" for line in table)
    assert first_up.config.airflow_url in out.getvalue()
    assert "have no pid file" not in out.getvalue()  # every process of the home is accounted for


def test_a_port_taken_by_another_process_gives_a_clear_message(first_up: UpResult, tmp_path: Path) -> None:
    """A second platform in another home on the first one's Azurite port must refuse to start."""
    taken = first_up.config.ports.azurite
    other = LocalConfig(root=tmp_path / "other", ports=type(first_up.config.ports)(
        azurite=taken, mlflow=free_port(), airflow=free_port()))
    out, err = io.StringIO(), io.StringIO()
    assert platform.up(other, out=out, err=err) == 2
    message = err.getvalue()
    assert f"port {taken} on 127.0.0.1, needed by azurite, is already in use" in message
    assert "MLOPS_AZURITE_PORT=" in message
    assert "Traceback" not in message
    assert platform.read_pid_records(other.run) == {}


def test_up_again_reuses_everything(first_up: UpResult, api: AirflowClient) -> None:
    config = first_up.config
    before = _live_pids(config)
    runs_before = (len(api.runs("prepare_dataset")), len(api.runs("train_model")))
    again = _run_up(config)
    assert again.code == 0, again.err + again.out
    for name in platform.SERVICE_NAMES:
        assert f"{name} already running (pid {before[name]}), reusing it" in again.out
    assert "already succeeded: reusing it (no new run)" in again.out
    assert "already in the data lake" in again.out
    assert _live_pids(config) == before
    assert (len(api.runs("prepare_dataset")), len(api.runs("train_model"))) == runs_before
    assert _model_versions(config) == ["1"]
    assert again.seconds < 60


def test_up_restarts_only_what_is_missing(first_up: UpResult) -> None:
    config = first_up.config
    before = _live_pids(config)
    record = platform.read_pid_records(config.run)[platform.TRIGGERER]
    platform.stop_records([record], timeout=15)
    again = _run_up(config)
    assert again.code == 0, again.err + again.out
    after = _live_pids(config)
    assert after[platform.TRIGGERER] != before[platform.TRIGGERER]
    assert f"started {platform.TRIGGERER}" in again.out
    assert {k: v for k, v in after.items() if k != platform.TRIGGERER} == {
        k: v for k, v in before.items() if k != platform.TRIGGERER}


def test_down_stops_our_processes_and_keeps_data(first_up: UpResult) -> None:
    config = first_up.config
    pids = _live_pids(config)
    assert set(pids) == set(platform.SERVICE_NAMES)
    descendants = [c for pid in pids.values() for c in psutil.Process(pid).children(recursive=True)]
    out, err = io.StringIO(), io.StringIO()
    assert platform.down(config, out=out, err=err) == 0
    assert err.getvalue() == ""
    for name, pid in pids.items():
        assert f"stopped {name} (pid {pid})" in out.getvalue()
    for pid in pids.values():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert all(not c.is_running() or c.status() == psutil.STATUS_ZOMBIE for c in descendants)
    assert platform.read_pid_records(config.run) == {}
    # data kept
    assert (config.mlflow_data / "mlflow.db").exists()
    assert (config.airflow_home / "airflow.db").exists()
    assert any(config.azurite_data.iterdir())
    status = io.StringIO()
    assert platform.status(config, out=status) == 1
    assert "not running" in status.getvalue()
