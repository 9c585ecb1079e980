"""The rendered MLflow Deployment, run: its command, args and environment (the chart's
ConfigMaps and Secrets, the cluster's Secrets as kind's development values), with the
Postgres backend remapped to SQLite and the Azure Blob artifact store to the test Azurite.
Every client URI the release renders (MLFLOW_TRACKING_URI of Airflow and of predictors) is
used as the Host header for a tracking call, a registry call and an artifact upload and
download through the proxy, as those clients send them to the MLflow Service."""

from __future__ import annotations

import json

import httpx
import pytest
from chart_helpers import (
    ENVS,
    host_headers,
    mlflow_tracking_uris,
    worker_serving_config,
)
from pods import arg_value, local_mlflow

from airflow_project.host.net import http_ok

pytestmark = pytest.mark.integration


def client_calls(base: str, host: str, tag: str) -> None:
    """Tracking, registry and artifact calls as a client of `host` makes them."""
    with httpx.Client(base_url=base, headers={"Host": host}, timeout=60, trust_env=False) as http:

        def ok(response: httpx.Response) -> dict:
            assert response.status_code == 200, f"Host {host}: {response.request.method} {response.request.url.path} -> {response.status_code} {response.text[:300]}"
            return response.json() if response.content else {}

        # tracking
        experiment = ok(http.post("/api/2.0/mlflow/experiments/create", json={"name": f"release-{tag}"}))["experiment_id"]
        run = ok(http.post("/api/2.0/mlflow/runs/create", json={"experiment_id": experiment}))["run"]["info"]
        ok(http.post("/api/2.0/mlflow/runs/log-metric", json={"run_id": run["run_id"], "key": "mae", "value": 1.5, "timestamp": 0}))
        # registry
        ok(http.post("/api/2.0/mlflow/registered-models/create", json={"name": f"model-{tag}"}))
        version = ok(http.post("/api/2.0/mlflow/model-versions/create",
                               json={"name": f"model-{tag}", "source": run["artifact_uri"], "run_id": run["run_id"]}))
        assert ok(http.get("/api/2.0/mlflow/registered-models/get", params={"name": f"model-{tag}"}))[
            "registered_model"]["name"] == f"model-{tag}", version
        # artifacts through the proxy (mlflow-artifacts:/<experiment>/<run>/artifacts)
        path = run["artifact_uri"].removeprefix("mlflow-artifacts:/").strip("/") + "/probe.json"
        body = json.dumps({"host": host}).encode()
        ok(http.put(f"/api/2.0/mlflow-artifacts/artifacts/{path}", content=body))
        download = http.get(f"/api/2.0/mlflow-artifacts/artifacts/{path}")
        assert download.status_code == 200 and download.content == body, (host, download.status_code, download.text[:300])


@pytest.mark.parametrize("env", ENVS)
def test_rendered_mlflow_serves_every_in_cluster_client(plan_render, env, tmp_path, azurite_port, datalake):
    objs = plan_render(env, "platform")
    airflow = plan_render(env, "airflow")  # the Airflow env and the predictors' tracking URI
    uris = mlflow_tracking_uris(airflow, worker_serving_config(airflow))
    assert uris, "the render has no MLFLOW_TRACKING_URI"
    with local_mlflow(objs, tmp_path, azurite_port) as mlflow:
        port = int(arg_value(mlflow.argv, "--port"))
        base = f"http://127.0.0.1:{port}"
        mlflow.wait_until(lambda: http_ok(base + "/health"), timeout=240)
        n = 0
        for uri in uris:
            for host in host_headers(uri):
                client_calls(base, host, f"{env}-{n}")
                n += 1
        assert n >= 2
        # and a Host no client uses is refused: the allow-list is in force
        refused = httpx.get(base + "/api/2.0/mlflow/experiments/search?max_results=1",
                            headers={"Host": "mlflow.attacker.example"}, trust_env=False, timeout=30)
        assert refused.status_code == 403, refused.text[:200]
