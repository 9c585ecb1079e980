"""deploy_model and deploy_traffic_mirroring through dag.test() on the local target: real
MLflow server (Azurite artifacts), real predictor and router processes over HTTP."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from airflow_project.host.processes import alive
from airflow_project.serving.targets import target_from_env
from airflow_project.wachttijden.schema import MODEL_NAME

pytestmark = pytest.mark.integration

NS = "serving"  # constants.DEFAULT_NAMESPACE: no MLOPS_SERVING_NAMESPACE locally
ROWS = [
    {"TYPE_WACHTTIJD": "Behandeling", "SPECIALISME": "Orthopedie (305)",
     "ROAZ_REGIO": "Acute Zorg Oost", "TYPE_ZORGINSTELLING": "Ziekenhuis"},
    {"TYPE_WACHTTIJD": "Diagnostiek", "SPECIALISME": "Cardiologie (320)",
     "ROAZ_REGIO": "Netwerk Acute Zorg West", "TYPE_ZORGINSTELLING": "Kliniek"},
]
V1 = "/v1/models/wachttijden:predict"
V2 = "/v2/models/wachttijden/infer"


def _dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag()
    assert not bag.import_errors
    return bag.dags[dag_id]


def _expected(mlflow_uri: str, version: str, rows) -> list[float]:
    import mlflow.sklearn
    import pandas as pd

    mlflow.set_tracking_uri(mlflow_uri)
    return mlflow.sklearn.load_model(f"models:/{MODEL_NAME}/{version}").predict(pd.DataFrame(rows)).tolist()


def _v2_version(url: str) -> str:
    body = {"parameters": {"content_type": "pd"},
            "inputs": [{"name": k, "datatype": "BYTES", "shape": [1], "data": [v]} for k, v in ROWS[0].items()]}
    r = httpx.post(url + V2, json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["model_version"]


def test_deploy_model_serves_the_champion_and_redeploys_another_version(local_deploy):
    versions, mlflow_uri = local_deploy["versions"], local_deploy["mlflow"]
    run = _dag("deploy_model").test(run_conf={"model": "champion", "service_name": "wachttijden"})
    assert run.state == "success"

    target = target_from_env(NS)
    record = target.state("InferenceService", "wachttijden")
    url = target.url("InferenceService", "wachttijden")
    assert record["argv"][4] == f"models:/{MODEL_NAME}/{versions['champion']}"  # pinned by number
    r = httpx.post(url + V1, json={"instances": ROWS}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": _expected(mlflow_uri, versions["champion"], ROWS)}
    assert _v2_version(url) == versions["champion"]
    assert alive(record["pid"])  # outlives the task

    # another version by number: same port, new process, new model
    run = _dag("deploy_model").test(run_conf={"model": versions["challenger"], "service_name": "wachttijden"})
    assert run.state == "success"
    again = target.state("InferenceService", "wachttijden")
    assert again["port"] == record["port"] and again["pid"] != record["pid"]
    assert not alive(record["pid"])
    assert _v2_version(url) == versions["challenger"]

    # the same again: nothing restarts
    assert _dag("deploy_model").test(
        run_conf={"model": versions["challenger"], "service_name": "wachttijden"}).state == "success"
    assert target.state("InferenceService", "wachttijden")["pid"] == again["pid"]


@pytest.mark.parametrize(("model", "message"), [
    ("999", "model 'wachttijden' has no version 999 in the MLflow registry"),
    ("no-such-alias", "model 'wachttijden' has no alias 'no-such-alias' in the MLflow registry"),
])
def test_deploy_model_fails_clearly_for_a_missing_version(local_deploy, capfd, model, message):
    run = _dag("deploy_model").test(run_conf={"model": model, "service_name": "wachttijden-missing"})
    assert run.state == "failed"
    log = "".join(capfd.readouterr())
    assert message in log
    assert "existing versions: " in log and f"champion -> {local_deploy['versions']['champion']}" in log
    assert target_from_env(NS).state("InferenceService", "wachttijden-missing") is None


def test_deploy_traffic_mirroring_graph_and_shadow_comparison(local_deploy):
    from mlflow import MlflowClient

    versions, mlflow_uri = local_deploy["versions"], local_deploy["mlflow"]
    run = _dag("deploy_traffic_mirroring").test(run_conf={"sample_size": 150})
    assert run.state == "success"

    target = target_from_env(NS)
    graph_url = target.url("InferenceGraph", "wachttijden-graph")
    shadow = target.state("InferenceService", "wachttijden-shadow")
    request_id = f"it-{uuid.uuid4().hex}"
    r = httpx.post(graph_url, json={"instances": ROWS}, headers={"x-request-id": request_id}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": _expected(mlflow_uri, versions["champion"], ROWS)}
    # the shadow got the same request (its prediction log line carries the request id)
    deadline = time.monotonic() + 5
    shadow_log = Path(shadow["log"])
    while request_id not in shadow_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    line = next(x for x in shadow_log.read_text().splitlines() if request_id in x and x.startswith("{"))
    record = json.loads(line)
    assert record["model_version"] == versions["challenger"]
    assert record["outputs"] == _expected(mlflow_uri, versions["challenger"], ROWS)

    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("wachttijden-shadow")
    [comparison] = client.search_runs([experiment.experiment_id],
                                      filter_string=f"tags.airflow_run_id = '{run.run_id}'")
    metrics, params = comparison.data.metrics, comparison.data.params
    assert metrics["rows"] == 150
    assert 0 <= metrics["share_within_1_week"] <= 1
    assert metrics["mae_primary_vs_shadow"] > 0  # tree vs linear: they differ
    assert {"mae_primary", "mae_shadow", "max_abs_diff_weeks"} <= set(metrics)
    assert params["primary_version"] == versions["champion"]
    assert params["shadow_version"] == versions["challenger"]
    assert params["dataset"] == local_deploy["dataset"]
    # filed with the model-training runs in the MLflow UI, and it says whether the shadow won
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    beat = metrics["mae_shadow"] < metrics["mae_primary"]
    assert comparison.data.tags["shadow_beat_primary"] == str(beat).lower()


def test_virtualservice_mode_uses_a_local_mirror_router(local_deploy):
    from mlflow import MlflowClient

    run = _dag("deploy_traffic_mirroring").test(run_conf={"mirror_mode": "virtualservice", "sample_size": 40})
    assert run.state == "success"
    target = target_from_env(NS)
    mirror_url = target.url("VirtualService", "wachttijden-primary-mirror")
    r = httpx.post(mirror_url + V1, json={"instances": ROWS}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": _expected(local_deploy["mlflow"], local_deploy["versions"]["champion"], ROWS)}
    client = MlflowClient(local_deploy["mlflow"])
    experiment = client.get_experiment_by_name("wachttijden-shadow")
    [comparison] = client.search_runs([experiment.experiment_id],
                                      filter_string=f"tags.airflow_run_id = '{run.run_id}'")
    assert comparison.data.tags["mirror_mode"] == "virtualservice"
    assert comparison.data.params["entry_url"] == mirror_url
    assert comparison.data.metrics["rows"] == 40


def test_redeploying_what_the_dag_deployed_restarts_nothing(local_deploy):
    """The steps of deploy_traffic_mirroring, run again without Airflow with the same
    versions, find everything serving and change nothing."""
    from airflow_project.deploy_steps import (
        deploy_mirroring,
        deploy_predictor,
        resolve_version,
        smoke_test,
    )
    from airflow_project.serving.targets.local import local_serving_objects

    target = target_from_env(NS)
    before = {r["name"]: r["pid"] for r in local_serving_objects(local_deploy["home"])}
    primary, shadow = resolve_version("champion"), resolve_version("challenger")
    predictor = deploy_predictor("wachttijden-primary", primary["model_uri"], timeout=300)
    deploy_predictor("wachttijden-shadow", shadow["model_uri"], timeout=300)
    graph = deploy_mirroring("wachttijden-graph", "wachttijden-primary", "wachttijden-shadow", timeout=300)
    smoke = smoke_test(graph["graph_url"], graph=True)
    assert graph["graph_url"] == target.url("InferenceGraph", "wachttijden-graph")
    assert predictor["url"] == target.url("InferenceService", "wachttijden-primary")
    assert (primary["version"], shadow["version"]) == (
        local_deploy["versions"]["champion"], local_deploy["versions"]["challenger"])
    assert smoke["request"]["instances"] and len(smoke["response"]["predictions"]) == 1
    after = {r["name"]: r["pid"] for r in local_serving_objects(local_deploy["home"])}
    assert after == before  # nothing changed: nothing restarted
    assert all(r["running"] for r in local_serving_objects(local_deploy["home"]))


def test_mirroring_one_version_with_itself_takes_the_newest_other_version(local_deploy):
    """Against the real registry: `champion` twice is not a comparison; the shadow becomes the
    newest other version (here the challenger, registered after the champion)."""
    from airflow_project.deploy_steps import resolve_mirror_versions

    versions = local_deploy["versions"]
    got = resolve_mirror_versions("champion", "champion", tracking_uri=local_deploy["mlflow"])
    assert got["primary"]["version"] == versions["champion"]
    assert got["shadow"]["version"] == versions["challenger"]
    assert "shadowing the newest other version" in got["shadow"]["note"]
