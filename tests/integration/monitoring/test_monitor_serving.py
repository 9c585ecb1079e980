"""Watching what is served, for real: two exports through prepare_dataset and train_model
(dag.test(), Azurite, an MLflow server of this module's own), the champion and a second
version served as primary and shadow behind a mirror router by the local controller (real
predictor processes, the capture process beside them), real traffic through the router,
captured into Azurite, and monitor_serving run on it with dag.test().

Clean traffic passes, and its realised MAE is the one computed by hand from the answers the
primary gave and the second export's waiting times; drifted traffic fails the run with the
reason, and the retraining asset is emitted and queued for train_model."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from airflow_project.datalake import PREPROCESSED_CONTAINER, RAW_CONTAINER, BlobRef, dataset_path
from airflow_project.wachttijden import synthetic
from airflow_project.wachttijden.schema import FEATURES, MODEL_NAME, TARGET

pytestmark = pytest.mark.integration

NS = "monitoring-it"
TRAINED = dt.datetime(2031, 3, 1, tzinfo=dt.UTC)
LABELLED = dt.datetime(2031, 4, 1, tzinfo=dt.UTC)
REQUESTS, INSTANCES = 150, 4


def _dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag()
    assert not bag.import_errors
    return bag.get_dag(dag_id)


def _prepare(lake, day: dt.datetime, seed: int) -> str:
    lake.write(BlobRef(RAW_CONTAINER, dataset_path(day)),
               synthetic.to_raw_bytes(synthetic.generate(synthetic.SyntheticConfig(rows=4000, seed=seed))))
    assert _dag("prepare_dataset").test(logical_date=day).state == "success"
    return f"{PREPROCESSED_CONTAINER}/{dataset_path(day)}"


@pytest.fixture(scope="module")
def world(azurite: str, fresh_mlflow_server: str, airflow_db, datalake, tmp_path_factory) -> Iterator[dict]:
    import mlflow
    from mlflow import MlflowClient

    from airflow_project.datalake import CONNECTION_ID
    from airflow_project.deploy_steps import deploy_mirroring, deploy_predictor
    from airflow_project.host.net import free_port_range
    from airflow_project.monitoring.capture_process import CONNECTION_ENV
    from airflow_project.registry import model_uri
    from airflow_project.serving.constants import PRIMARY_SERVICE, SHADOW_SERVICE
    from airflow_project.serving.targets.local import LocalTarget, stop_local_serving

    home = tmp_path_factory.mktemp("monitoring-home")
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as env:
        env.setenv(f"AIRFLOW_CONN_{CONNECTION_ID.upper()}",
                   json.dumps({"conn_type": "wasb", "extra": {"connection_string": azurite}}))
        env.setenv("MLFLOW_TRACKING_URI", fresh_mlflow_server)
        env.setenv(CONNECTION_ENV, azurite)
        mlflow.set_tracking_uri(fresh_mlflow_server)
        try:
            trained = _prepare(datalake, TRAINED, seed=31)
            train = _dag("train_model")
            assert train.test(logical_date=TRAINED, run_conf={"input_path": trained}).state == "success"
            assert train.test(logical_date=TRAINED + dt.timedelta(hours=1),
                              run_conf={"input_path": trained, "estimator": "random_forest"}).state == "success"
            labelled = _prepare(datalake, LABELLED, seed=32)
            client = MlflowClient(fresh_mlflow_server)
            versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{MODEL_NAME}'"))
            primary, shadow = str(versions[0]), str(versions[1])
            target = LocalTarget(NS, home=home, base_port=free_port_range(10), capture=True)
            deploy_predictor(PRIMARY_SERVICE, model_uri(primary), target=target, timeout=300, cluster_local=True)
            deploy_predictor(SHADOW_SERVICE, model_uri(shadow), target=target, timeout=300, cluster_local=True)
            mirror = deploy_mirroring("unused", PRIMARY_SERVICE, SHADOW_SERVICE, mode="virtualservice",
                                      target=target, timeout=120)
            yield {"home": home, "mirror": mirror["entry_url"], "primary": primary, "shadow": shadow,
                   "labelled": labelled, "client": client, "lake": datalake}
        finally:
            mlflow.set_tracking_uri(previous)
            stop_local_serving(home)


def _send(url: str, rows: list[dict]) -> list[tuple[dict, float]]:
    """REQUESTS requests of INSTANCES rows each through the mirror router; the primary's answers."""
    answered = []
    with httpx.Client(trust_env=False, timeout=30) as http:
        for i in range(REQUESTS):
            chunk = rows[i * INSTANCES:(i + 1) * INSTANCES]
            response = http.post(f"{url}/v1/models/wachttijden:predict", json={"instances": chunk},
                                 headers={"x-request-id": str(uuid.uuid4())})
            assert response.status_code == 200, response.text
            answered += list(zip(chunk, response.json()["predictions"]))
    return answered


def _captured(home, at_least: int, timeout: float = 60.0) -> None:
    """Until the capture process has written `at_least` predictions (requests, primary and shadow)."""
    from airflow_project.serving.targets.local import read_capture_status

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = read_capture_status(home, NS) or {}
        if status.get("written", 0) >= at_least and not status.get("buffered"):
            return
        time.sleep(0.5)
    raise AssertionError(f"capture wrote {status} after {timeout:.0f}s, expected {at_least} predictions")


def _rows(frame, n: int, seed: int) -> list[dict]:
    return frame.loc[:, list(FEATURES)].astype(str).sample(n, random_state=seed).to_dict(orient="records")


def _monitor(world: dict):
    return _dag("monitor_serving").test(run_conf={"namespace": NS, "labels_path": world["labelled"]})


def _latest_report(world: dict) -> tuple[object, dict]:
    from airflow_project.monitoring.tracking import MONITORING_EXPERIMENT, REPORT_ARTIFACT

    client = world["client"]
    experiment = client.get_experiment_by_name(MONITORING_EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    with tempfile.TemporaryDirectory() as tmp:
        return run, json.loads(Path(client.download_artifacts(run.info.run_id, REPORT_ARTIFACT, tmp)).read_text())


def test_clean_traffic_passes_and_its_realised_mae_is_the_hand_computed_one(world):
    from airflow_project.data_steps import read_prepared

    labels = read_prepared(world["lake"], BlobRef.parse(world["labelled"]))
    answered = _send(world["mirror"], _rows(labels, REQUESTS * INSTANCES, seed=1))
    _captured(world["home"], 2 * REQUESTS)
    run = _monitor(world)
    assert run.state == "success"

    truth: dict[tuple[str, ...], list[float]] = {}
    for row in labels.itertuples(index=False):
        truth.setdefault(tuple(str(getattr(row, f)) for f in FEATURES), []).append(float(getattr(row, TARGET)))
    errors = [sum(abs(p - y) for y in truth[key]) / len(truth[key])
              for instance, p in answered for key in [tuple(instance[f] for f in FEATURES)]]
    expected = sum(errors) / len(errors)

    mlflow_run, report = _latest_report(world)
    v = world["primary"]
    assert report["passed"] and mlflow_run.data.tags["passed"] == "true"
    assert report["traffic"]["requests"] == 2 * REQUESTS  # each request seen by primary and shadow
    assert report["versions"][v]["role"] == "primary" and report["versions"][world["shadow"]]["role"] == "shadow"
    assert report["versions"][v]["realised"]["mae"] == pytest.approx(expected, rel=1e-9)
    assert report["versions"][v]["realised"]["scored"] == REQUESTS * INSTANCES
    assert mlflow_run.data.metrics[f"v{v}/realised_mae"] == pytest.approx(expected, rel=1e-9)
    assert mlflow_run.data.metrics[f"v{v}/holdout_mae"] > 0
    assert report["versions"][v]["input_drift"]["drift"] < 0.2
    assert report["agreement"]["requests"] == REQUESTS and report["agreement"]["rows"] == REQUESTS * INSTANCES
    assert mlflow_run.data.metrics["capture_dropped"] == 0
    artifacts = {a.path for a in world["client"].list_artifacts(mlflow_run.info.run_id, "plots")}
    assert artifacts == {"plots/served_vs_training.png", "plots/realised_vs_holdout_mae.png"}
    history = world["client"].get_metric_history(mlflow_run.info.run_id, f"v{v}/realised_mae")
    assert [m.step for m in history] == [int(f"{LABELLED:%Y%m%d}")]


def test_drifted_traffic_fails_the_run_and_requests_retraining_through_the_asset(world, capfd):
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.utils.session import create_session

    from airflow_project.assets import RETRAINING_REQUESTED
    from airflow_project.wachttijden import dataset

    drifted, _ = dataset.prepare(synthetic.to_raw_bytes(synthetic.generate(
        synthetic.SyntheticConfig(rows=2000, seed=33, renamed_specialisms=3))), "drifted")
    before = _captured_written(world)
    _send(world["mirror"], _rows(drifted, REQUESTS * INSTANCES, seed=2))
    _captured(world["home"], before + 2 * REQUESTS)
    with _unpaused("train_model"):  # as on the platform: a paused DAG is not queued by an asset event
        run = _monitor(world)
        with create_session() as session:
            asset = session.query(AssetModel).filter_by(name=RETRAINING_REQUESTED.name).one()
            queued = {q.target_dag_id for q in session.query(AssetDagRunQueue).filter_by(asset_id=asset.id)}
            session.query(AssetDagRunQueue).filter_by(asset_id=asset.id).delete()
    assert queued == {"train_model"}  # the scheduler starts train_model from this queue
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"monitor": "success", "request_retraining": "success", "check_thresholds": "failed"}
    log = "".join(capfd.readouterr())
    assert f"served traffic crossed its thresholds ({2 * REQUESTS:,} requests" in log
    assert f"v{world['primary']}: input drift" in log and "SPECIALISME" in log

    _, report = _latest_report(world)
    assert not report["passed"] and report["traffic"]["requests"] == 2 * REQUESTS  # only this window's
    with create_session() as session:
        (event,) = session.query(AssetEvent).filter_by(asset_id=asset.id).all()
        assert event.extra["path"] == world["labelled"] and event.source_dag_id == "monitor_serving"
        assert any("input drift" in reason for reason in event.extra["reasons"])


@contextlib.contextmanager
def _unpaused(dag_id: str) -> Iterator[None]:
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        model = session.query(DagModel).filter_by(dag_id=dag_id).one()
        paused, model.is_paused = model.is_paused, False
    try:
        yield
    finally:
        with create_session() as session:
            session.query(DagModel).filter_by(dag_id=dag_id).one().is_paused = paused


def _captured_written(world: dict) -> int:
    from airflow_project.serving.targets.local import read_capture_status

    return (read_capture_status(world["home"], NS) or {}).get("written", 0)
