"""Fixtures for the deploy DAGs on the local target: two registered versions, a
preprocessed dataset in the lake, and a private MLOPS_HOME whose serving processes are all
stopped at the end of the session (and checked to be gone)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from airflow_project.host.net import free_port_range

DATASET_DAY = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)  # newest in the lake


@pytest.fixture(scope="session")
def deploy_frame():
    from airflow_project.wachttijden import dataset, synthetic

    raw = synthetic.to_raw_bytes(synthetic.generate(synthetic.SyntheticConfig(rows=3000, seed=11)))
    frame, _ = dataset.prepare(raw, "t")
    return frame


@pytest.fixture(scope="session")
def registered_versions(mlflow_server, deploy_frame):
    """v_a (decision tree) = champion, v_b (linear) = challenger, set explicitly (the promotion
    rule alone might make both the same version)."""
    from mlflow import MlflowClient

    from airflow_project.registry import CHALLENGER, CHAMPION, train_and_register
    from airflow_project.wachttijden.schema import MODEL_NAME
    from airflow_project.wachttijden.training import TrainingConfig

    champion = train_and_register(deploy_frame, TrainingConfig(estimator="decision_tree"),
                                  tracking_uri=mlflow_server, source="deploy-tests", run_name="deploy-champion")
    challenger = train_and_register(deploy_frame, TrainingConfig(estimator="linear"),
                                    tracking_uri=mlflow_server, source="deploy-tests", run_name="deploy-challenger")
    client = MlflowClient(mlflow_server)
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, champion.version)
    client.set_registered_model_alias(MODEL_NAME, CHALLENGER, challenger.version)
    return {"champion": champion.version, "challenger": challenger.version}


@pytest.fixture(scope="session")
def preprocessed_in_lake(datalake, deploy_frame) -> str:
    from airflow_project.datalake import PREPROCESSED_CONTAINER, BlobRef, dataset_path
    from airflow_project.wachttijden.dataset import to_prepared_bytes

    ref = BlobRef(PREPROCESSED_CONTAINER, dataset_path(DATASET_DAY))
    datalake.write(ref, to_prepared_bytes(deploy_frame))
    return str(ref)


@pytest.fixture(scope="session")
def serving_home(tmp_path_factory):
    """MLOPS_HOME of the local serving controller; every process it started is stopped at the end."""
    home = tmp_path_factory.mktemp("mlops-home")
    yield home
    import time

    from airflow_project.host.processes import alive
    from airflow_project.serving.targets.local import local_serving_objects, stop_local_serving

    pids = [record["pid"] for record in local_serving_objects(home) if record["running"]]
    started = time.monotonic()
    stopped = stop_local_serving(home)  # as `mlops down`: the records stay
    assert len(stopped) == len(pids)
    assert not any(record["running"] for record in local_serving_objects(home))
    print(f"stopped {len(pids)} serving processes in {time.monotonic() - started:.1f}s")
    assert not [pid for pid in pids if alive(pid)], "serving processes left running"


@pytest.fixture(scope="session")
def serving_base_port() -> int:
    return free_port_range(20)


@pytest.fixture()
def local_deploy(monkeypatch, airflow_services, serving_home: Path, serving_base_port: int,
                 registered_versions, preprocessed_in_lake):
    """Environment the deploy DAGs see on the local platform (as LocalConfig.airflow_env sets it)."""
    monkeypatch.setenv("MLOPS_DEPLOY_TARGET", "local")
    monkeypatch.setenv("MLOPS_HOME", str(serving_home))
    monkeypatch.setenv("MLOPS_SERVING_PORT", str(serving_base_port))
    monkeypatch.delenv("MLOPS_SERVING_NAMESPACE", raising=False)
    return {"home": serving_home, "versions": registered_versions, "dataset": preprocessed_in_lake,
            **airflow_services}
