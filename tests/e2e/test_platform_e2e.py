"""The whole platform on kind: install, pipeline, task logs, serving, mirroring, load, RBAC.

Tests run in file order and share module fixtures (`trained` -> `deployed` -> `mirrored`),
so each one can also be run alone (`-k rbac`, `-k graph`): it builds what it needs.
Skipped unless MLOPS_E2E=1 and Docker works (see conftest.py).
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import evidence
import httpx
import pytest
import yaml
from kube import wait_for

from airflow_project.serving.constants import SERVED_MODEL_NAME, graph_route_name
from airflow_project.wachttijden.schema import FEATURES, MODEL_NAME

REPO = Path(__file__).resolve().parents[2]
PIPELINE_DAGS = ("prepare_dataset", "train_model")
DEPLOY_DAGS = ("deploy_model", "deploy_traffic_mirroring")
ISVC = "wachttijden"
PRIMARY, SHADOW, GRAPH = "wachttijden-primary", "wachttijden-shadow", "wachttijden-graph"
RAW_ROWS = int(os.environ.get("MLOPS_E2E_ROWS") or 5000)
VALUES = yaml.safe_load((REPO / "helm" / "values.yaml").read_text())
TASK_LOG_INDICES = VALUES["airflow"]["config"]["elasticsearch"]["index_patterns"]
PREDICTION_INDICES = VALUES["mlops"]["logging"]["predictionIndexPrefix"] + "-*"
LOG_ID_TEMPLATE = VALUES["airflow"]["config"]["elasticsearch"]["log_id_template"]
PREDICTOR_CONTAINER = "kserve-container"


def _timeout(name: str, default: float) -> float:
    return float(os.environ.get(f"MLOPS_E2E_{name}_TIMEOUT") or default)


# ---------------------------------------------------------------------------- Airflow
def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _parse(stamp: str | None) -> dt.datetime | None:
    if not stamp:
        return None
    return dt.datetime.fromisoformat(stamp)


def wait_dags(client: Any, dag_ids: tuple[str, ...], timeout: float = 900) -> None:
    """Wait until the DAG processor has parsed them; fail early on import errors."""

    def parsed() -> bool:
        errors = client.import_errors()
        if errors:
            pytest.fail(
                "DAG import errors in the cluster: "
                + "; ".join(
                    f"{e.get('filename')}: {str(e.get('stack_trace', ''))[-500:]}" for e in errors
                )
            )
        return all(client.get_dag(d) is not None for d in dag_ids)

    wait_for(parsed, timeout=timeout, interval=10, what=f"DAGs {', '.join(dag_ids)} to be parsed")
    for dag_id in dag_ids:
        client.unpause(dag_id)


def trigger(client: Any, dag_id: str, conf: dict[str, Any] | None = None) -> str:
    body = {"logical_date": _now().isoformat().replace("+00:00", "Z"), "conf": conf or {}}
    response = client.request("POST", f"/api/v2/dags/{quote(dag_id)}/dagRuns", json=body)
    assert response.status_code in (200, 201), (
        f"trigger {dag_id}: HTTP {response.status_code} {response.text[:500]}"
    )
    return response.json()["dag_run_id"]


def run_report(client: Any, dag_id: str, run_id: str) -> str:
    lines = [f"{dag_id} run {run_id}:"]
    for ti in client.task_instances(dag_id, run_id):
        lines.append(f"  {ti.get('task_id')}: {ti.get('state')} (try {ti.get('try_number')})")
        if ti.get("state") in ("failed", "upstream_failed", "up_for_retry"):
            log = client.task_log(
                dag_id, run_id, ti["task_id"], max(int(ti.get("try_number") or 1), 1)
            )
            lines.append(textwrap.indent("\n".join(log.splitlines()[-40:]), "    | "))
    return "\n".join(lines)


def wait_run(client: Any, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
    """Wait for a terminal state; fail with task states and failed tasks' log tails."""

    def done() -> dict[str, Any] | None:
        run = client.get_run(dag_id, run_id)
        return run if run.get("state") in ("success", "failed") else None

    try:
        run = wait_for(
            done,
            timeout=timeout,
            interval=10,
            what=f"{dag_id} run {run_id}",
            describe=lambda: run_report(client, dag_id, run_id),
        )
    except TimeoutError as exc:
        pytest.fail(str(exc))
    if run["state"] != "success":
        pytest.fail(
            f"{dag_id} run {run_id} ended {run['state']}\n{run_report(client, dag_id, run_id)}"
        )
    return run


def asset_triggered_run(client: Any, dag_id: str, since: dt.datetime) -> dict[str, Any] | None:
    for run in client.runs(dag_id):
        queued = _parse(run.get("queued_at") or run.get("run_after"))
        if run.get("run_type") == "asset_triggered" and queued and queued >= since:
            return run
    return None


# ---------------------------------------------------------------------------- requests
def sample_rows() -> list[dict[str, str]]:
    from airflow_project.wachttijden.categories import (
        ROAZ_REGIOS,
        SPECIALISMEN,
        TYPES_WACHTTIJD,
        TYPES_ZORGINSTELLING,
    )

    return [
        {
            "TYPE_WACHTTIJD": TYPES_WACHTTIJD[i % len(TYPES_WACHTTIJD)],
            "SPECIALISME": SPECIALISMEN[(3 * i) % len(SPECIALISMEN)],
            "ROAZ_REGIO": ROAZ_REGIOS[(5 * i) % len(ROAZ_REGIOS)],
            "TYPE_ZORGINSTELLING": TYPES_ZORGINSTELLING[i % len(TYPES_ZORGINSTELLING)],
        }
        for i in range(3)
    ]


def distinct_requests(n: int) -> list[list[dict[str, str]]]:
    """`n` one-row requests that differ from each other (so a log shows which arrived)."""
    from airflow_project.wachttijden.categories import ROAZ_REGIOS, SPECIALISMEN

    base = sample_rows()[0]
    return [[{**base, "SPECIALISME": SPECIALISMEN[i % len(SPECIALISMEN)],
              "ROAZ_REGIO": ROAZ_REGIOS[(i // len(SPECIALISMEN)) % len(ROAZ_REGIOS)]}] for i in range(n)]


def predictor_log(platform: Any, service: str) -> str:
    """Everything the InferenceService's predictor pods printed (its prediction log)."""
    return platform.kube.out(
        "logs", "-n", platform.serving_namespace, "-l", f"serving.kserve.io/inferenceservice={service}",
        "-c", PREDICTOR_CONTAINER, "--tail=-1", "--max-log-requests=10", check=False,
    )


def wait_received(platform: Any, service: str, requests: list[list[dict[str, str]]], since: float) -> list[dict]:
    """Wait until `service`'s prediction log shows every one of `requests`; its records."""
    found: list[dict] = []

    def all_there() -> bool:
        found[:] = evidence.prediction_records(predictor_log(platform, service), since)
        return len(evidence.received(found, requests)) == len(requests)

    try:
        wait_for(all_there, timeout=120, interval=5, what=f"{service}'s prediction log to show {len(requests)} requests")
    except TimeoutError as exc:
        got = evidence.received(found, requests)
        pytest.fail(f"{exc}: it shows {len(got)} of {len(requests)} ({len(found)} prediction lines since then)")
    return found


def es_search(es: Any, index: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = es.post(f"/{index}/_search", json=body)
    if response.status_code == 404:  # no index yet
        return []
    assert response.status_code == 200, f"Elasticsearch {index}: {response.status_code} {response.text[:300]}"
    return [hit["_source"] for hit in response.json()["hits"]["hits"]]


def v1_body(rows: list[dict[str, str]]) -> dict[str, Any]:
    return {"instances": rows}


def v2_body(rows: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": f, "datatype": "BYTES", "shape": [len(rows)], "data": [r[f] for r in rows]}
            for f in FEATURES
        ],
    }


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def post_until_ok(
    url: str, body: dict[str, Any], host: str = "", timeout: float = 180
) -> httpx.Response:
    """POST until 200: right after Ready, Istio may still be pushing the route (404/503)."""
    headers = {"Host": host} if host else {}
    last: list[httpx.Response] = []

    def attempt() -> httpx.Response | None:
        with httpx.Client(timeout=30, trust_env=False) as http:
            response = http.post(url, json=body, headers=headers)
        last[:] = [response]
        return response if response.status_code == 200 else None

    try:
        return wait_for(
            attempt, timeout=timeout, interval=3, what=f"HTTP 200 from {url} (Host {host or '-'})"
        )
    except TimeoutError as exc:
        detail = f"; last answer HTTP {last[0].status_code}: {last[0].text[:300]}" if last else ""
        pytest.fail(f"{exc}{detail}")


def host_of(obj: dict[str, Any]) -> str:
    url = (obj.get("status") or {}).get("url") or ""
    host = urlparse(url).netloc
    assert host, (
        f"{obj.get('kind')} {obj['metadata']['name']} has no status.url: {obj.get('status')}"
    )
    return host


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def trained(airflow: Any, datalake: Any, mlflow_url: str) -> dict[str, Any]:
    """A generated raw export in Azurite, prepare_dataset triggered, train_model run from
    the asset event, the registered model in MLflow."""
    from airflow_project.datalake import BlobRef, dataset_path
    from airflow_project.wachttijden import synthetic

    wait_dags(airflow, PIPELINE_DAGS)
    data = synthetic.to_raw_bytes(
        synthetic.generate(synthetic.SyntheticConfig(rows=RAW_ROWS, seed=7))
    )
    today = _now().date()
    raw_path = dataset_path(today)
    # Unpausing the @daily DAG may also start a scheduled run for a neighbouring day: give it
    # data too, so it succeeds instead of retrying in front of ours (max_active_runs=1).
    for offset in (-1, 0, 1):
        datalake.write(BlobRef("raw", dataset_path(today + dt.timedelta(days=offset))), data)
    since = _now() - dt.timedelta(seconds=5)
    run_id = trigger(airflow, "prepare_dataset", {"raw_path": raw_path})
    prepare = wait_run(airflow, "prepare_dataset", run_id, _timeout("PIPELINE", 1800))
    train = wait_for(
        lambda: asset_triggered_run(airflow, "train_model", since),
        timeout=600,
        interval=10,
        what="train_model run triggered by the asset event",
    )
    train = wait_run(airflow, "train_model", train["dag_run_id"], _timeout("PIPELINE", 1800))
    with httpx.Client(base_url=mlflow_url, timeout=30, trust_env=False) as http:
        response = http.get("/api/2.0/mlflow/registered-models/get", params={"name": MODEL_NAME})
    assert response.status_code == 200, f"MLflow: {response.status_code} {response.text[:300]}"
    model = response.json()["registered_model"]
    return {"prepare": prepare, "train": train, "model": model, "raw_path": raw_path}


@pytest.fixture(scope="module")
def deployed(trained: dict[str, Any], airflow: Any, platform: Any) -> dict[str, Any]:
    """deploy_model run (champion) and its InferenceService Ready."""
    wait_dags(airflow, DEPLOY_DAGS)
    run_id = trigger(airflow, "deploy_model", {"model": "champion", "service_name": ISVC})
    run = wait_run(airflow, "deploy_model", run_id, _timeout("DEPLOY_DAG", 2400))
    isvc = platform.kube.wait_condition(
        "inferenceservice", ISVC, platform.serving_namespace, timeout=600
    )
    return {"run": run, "isvc": isvc, "host": host_of(isvc)}


@pytest.fixture(scope="module")
def mirrored(deployed: dict[str, Any], trained: dict[str, Any], airflow: Any, platform: Any) -> dict[str, Any]:
    """A second registered version (another estimator on the same dataset: mirroring never
    compares a version with itself), then the deploy_traffic_mirroring run (graph mode) and
    its InferenceGraph Ready."""
    second = trigger(airflow, "train_model", {"estimator": "linear", "input_path": trained["raw_path"]})
    wait_run(airflow, "train_model", second, _timeout("PIPELINE", 1800))
    run_id = trigger(
        airflow, "deploy_traffic_mirroring", {"mirror_mode": "graph", "sample_size": 50}
    )
    run = wait_run(airflow, "deploy_traffic_mirroring", run_id, _timeout("DEPLOY_DAG", 2400))
    ns = platform.serving_namespace
    graph = platform.kube.wait_condition("inferencegraph", GRAPH, ns, timeout=600)
    primary = platform.kube.wait_condition("inferenceservice", PRIMARY, ns, timeout=600)
    route = platform.kube.get("virtualservice", graph_route_name(GRAPH), ns)
    assert route and route["spec"]["hosts"] == [host_of(graph)], route
    return {
        "run": run,
        "graph": graph,
        "primary": primary,
        "graph_host": host_of(graph),
        "primary_host": host_of(primary),
    }


@pytest.fixture(scope="module")
def graph_endpoint(mirrored: dict[str, Any], ingress: str) -> tuple[str, str]:
    """(base URL, Host header) of the InferenceGraph through the Istio ingress: its status.url
    host, which KServe gives no Ingress in Standard mode and the deploy DAG's route serves
    (manifests.graph_ingress_route)."""
    return ingress, mirrored["graph_host"]


@pytest.fixture(scope="module")
def mirrored_by_istio(mirrored: dict[str, Any], airflow: Any, platform: Any) -> dict[str, Any]:
    """deploy_traffic_mirroring in mode `virtualservice`: the primary cluster-local, its
    external host served by the mirror VirtualService on the gateway."""
    run_id = trigger(airflow, "deploy_traffic_mirroring", {"mirror_mode": "virtualservice", "sample_size": 50})
    run = wait_run(airflow, "deploy_traffic_mirroring", run_id, _timeout("DEPLOY_DAG", 2400))
    ns = platform.serving_namespace
    vs = wait_for(lambda: platform.kube.get("virtualservice", f"{PRIMARY}-mirror", ns), timeout=300,
                  interval=5, what=f"VirtualService {PRIMARY}-mirror")
    primary = platform.kube.wait_condition("inferenceservice", PRIMARY, ns, timeout=600)
    assert primary["metadata"]["labels"].get("networking.kserve.io/visibility") == "cluster-local"
    external = [h for h in vs["spec"]["hosts"] if not h.endswith(".svc.cluster.local")]
    assert external, vs["spec"]
    return {"run": run, "virtual_service": vs, "host": external[0]}


# ---------------------------------------------------------------------------- tests
def test_platform_installed_and_ready(platform: Any) -> None:
    """(1) Every stage of the release is installed; Airflow and MLflow pods are Ready."""
    from airflow_project.release.plan import STAGES

    kube, ns, release = platform.kube, platform.namespace, platform.release
    revisions = kube.json("get", "secret", "-n", ns, "-l", f"owner=helm,name={release}")["items"]
    by_version = sorted(revisions, key=lambda s: int(s["metadata"]["labels"]["version"]))
    assert by_version, f"no helm release {release} in namespace {ns}"
    assert by_version[-1]["metadata"]["labels"]["status"] == "deployed", (
        f"latest revision of {release}: {by_version[-1]['metadata']['labels']}"
    )
    assert len(by_version) >= len(STAGES), (
        f"expected >= {len(STAGES)} revisions (one per stage), got {len(by_version)}"
    )
    info = kube.json("get", "configmap", f"{release}-release-info", "-n", ns)["data"]
    assert info["stages"].split(",") == ["crds", "controllers", "kserve", "platform", "airflow"], (
        info
    )
    assert info["imageTag"] == platform.settings.image_tag, (
        f"installed image tag {info['imageTag']!r} != {platform.settings.image_tag!r} "
        "(with MLOPS_E2E_SKIP_DEPLOY=1 set MLOPS_E2E_IMAGE_TAG to the deployed tag)"
    )

    for component in ("scheduler", "api-server", "dag-processor", "triggerer"):
        selector = f"tier=airflow,component={component},release={release}"
        wait_for(
            lambda sel=selector: kube.ready_pods(ns, sel),
            timeout=600,
            interval=10,
            what=f"a Ready Airflow {component} pod ({selector})",
            describe=lambda: kube.out("get", "pods", "-n", ns, "-o", "wide", check=False),
        )
    mlflow_selector = os.environ.get("MLOPS_E2E_MLFLOW_SELECTOR") or "app.kubernetes.io/name=mlflow"
    wait_for(
        lambda: kube.ready_pods(ns, mlflow_selector),
        timeout=600,
        interval=10,
        what=f"a Ready MLflow pod ({mlflow_selector})",
    )


def test_pipeline_prepare_then_train_registers_model(trained: dict[str, Any]) -> None:
    """(2) raw export -> prepare_dataset -> (asset) train_model -> MLflow registry."""
    assert trained["prepare"]["state"] == "success"
    assert trained["train"]["state"] == "success"
    assert trained["train"]["run_type"] == "asset_triggered"
    model = trained["model"]
    assert model.get("latest_versions"), f"no version of {MODEL_NAME} registered: {model}"
    aliases = {a["alias"]: a["version"] for a in model.get("aliases", [])}
    assert "champion" in aliases and "challenger" in aliases, f"aliases: {aliases}"


def test_deploy_model_v1_and_v2_through_ingress(deployed: dict[str, Any], ingress: str) -> None:
    """(3) deploy_model -> InferenceService Ready; V1 and V2 through the Istio ingress."""
    rows = sample_rows()
    v1 = post_until_ok(
        f"{ingress}/v1/models/{SERVED_MODEL_NAME}:predict", v1_body(rows), deployed["host"]
    )
    predictions = v1.json()["predictions"]
    assert len(predictions) == len(rows) and all(is_number(p) for p in predictions), v1.text

    v2 = post_until_ok(
        f"{ingress}/v2/models/{SERVED_MODEL_NAME}/infer", v2_body(rows), deployed["host"]
    )
    outputs = v2.json()["outputs"]
    data = outputs[0]["data"]
    assert len(data) == len(rows) and all(is_number(p) for p in data), v2.text


def test_traffic_mirroring_graph_answers_like_primary_and_the_shadow_gets_every_request(
    mirrored: dict[str, Any], graph_endpoint: tuple[str, str], ingress: str, platform: Any
) -> None:
    """(4) deploy_traffic_mirroring -> InferenceGraph Ready and reachable through the gateway
    by its own host; its answer is the primary's, and the shadow's prediction log shows each
    request (the graph passes on the body, not the caller's x-request-id: KServe's router
    propagates only configured headers, and kserve-resources v0.20 configures none)."""
    path = f"/v1/models/{SERVED_MODEL_NAME}:predict"
    base, host = graph_endpoint
    assert host and host == mirrored["graph"]["status"]["url"].split("://", 1)[1]
    since = time.time() - 5
    requests = distinct_requests(5)
    for rows in requests:
        through_graph = post_until_ok(base + path, v1_body(rows), host).json()
        from_primary = post_until_ok(ingress + path, v1_body(rows), mirrored["primary_host"]).json()
        assert through_graph["predictions"] == pytest.approx(from_primary["predictions"]), (
            f"graph {through_graph} != primary {from_primary}"
        )
    wait_received(platform, SHADOW, requests, since)


def _stats_ok(folder: Path) -> tuple[int, int]:
    """(requests, failures) of the Aggregated row of the newest Locust *_stats.csv."""
    files = sorted(folder.glob("*_stats.csv"), key=lambda p: p.stat().st_mtime)
    assert files, f"no Locust stats CSV in {folder}"
    with files[-1].open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("Name") == "Aggregated":
                return int(row["Request Count"]), int(row["Failure Count"])
    raise AssertionError(f"{files[-1]} has no Aggregated row")


FALLBACK_LOCUSTFILE = """
import json, os
from locust import HttpUser, constant, task

HOST = os.environ["E2E_HOST_HEADER"]
PATH = os.environ["E2E_PATH"]
BODY = os.environ["E2E_BODY"]

class Predictor(HttpUser):
    wait_time = constant(0.2)

    @task
    def predict(self):
        self.client.post(PATH, data=BODY, name="v1 predict",
                         headers={"Host": HOST, "Content-Type": "application/json"})
"""


def test_short_locust_run_has_no_failures(
    deployed: dict[str, Any], graph_endpoint: tuple[str, str], ingress: str, platform: Any
) -> None:
    """(5) A short headless Locust run against the ingress: zero failed requests."""
    out = platform.log_dir() / "locust"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*_stats*.csv"):
        old.unlink()
    run_time = os.environ.get("MLOPS_E2E_LOCUST_RUN_TIME") or "20s"
    graph_base, graph_host = graph_endpoint
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost"}
    if (REPO / "loadtest" / "run.py").exists():
        argv = [
            sys.executable,
            "-m",
            "loadtest.run",
            "ci",
            "--target",
            "both",
            "--predictor-url",
            ingress,
            "--graph-url",
            graph_base,
            "--host-header",
            deployed["host"],
            "--model-name",
            SERVED_MODEL_NAME,
            "--users",
            "2",
            "--spawn-rate",
            "2",
            "--run-time",
            run_time,
            "--p95-ms",
            os.environ.get("MLOPS_E2E_LOCUST_P95_MS") or "10000",
            "--reports-dir",
            str(out),
        ]
        if graph_host:
            argv += ["--graph-host-header", graph_host]
    else:  # the project's runner is absent: plain Locust as a subprocess (never imported)
        locustfile = out / "e2e_locustfile.py"
        locustfile.write_text(FALLBACK_LOCUSTFILE)
        locust = Path(sys.executable).parent / "locust"
        argv = [
            str(locust if locust.exists() else "locust"),
            "-f",
            str(locustfile),
            "--headless",
            "--host",
            ingress,
            "--users",
            "2",
            "--spawn-rate",
            "2",
            "--run-time",
            run_time,
            "--csv",
            str(out / "e2e"),
            "--only-summary",
            "--exit-code-on-error",
            "1",
        ]
        import json

        env |= {
            "E2E_HOST_HEADER": deployed["host"],
            "E2E_PATH": f"/v1/models/{SERVED_MODEL_NAME}:predict",
            "E2E_BODY": json.dumps(v1_body(sample_rows())),
        }
    proc = subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    output = (proc.stdout + proc.stderr)[-3000:]
    assert list(out.glob("*_stats.csv")), (
        f"Locust wrote no stats (exit {proc.returncode}):\n{output}"
    )
    requests, failures = _stats_ok(out)
    assert failures == 0, f"{failures} of {requests} requests failed (reports in {out}):\n{output}"
    assert proc.returncode == 0, f"locust run failed (exit {proc.returncode}):\n{output}"
    assert requests > 0, "Locust sent no requests"


def test_task_logs_reach_elasticsearch_and_airflow_reads_them_back(
    trained: dict[str, Any], airflow: Any, elasticsearch: Any
) -> None:
    """(7) A task's stdout JSON lines: Filebeat -> Logstash (log_id added) -> the task-log index
    ECK's Logstash user may write; the api-server reads them back by log_id (the pod is gone)."""
    run = trained["prepare"]
    (ti, *_) = [t for t in airflow.task_instances("prepare_dataset", run["dag_run_id"]) if t.get("state") == "success"]
    ti = {**ti, "dag_id": "prepare_dataset", "dag_run_id": run["dag_run_id"]}
    wanted = evidence.log_id(LOG_ID_TEMPLATE, ti)
    hits: list[dict[str, Any]] = []

    def indexed() -> bool:
        hits[:] = es_search(elasticsearch, TASK_LOG_INDICES, evidence.log_search(wanted))
        return bool(hits)

    wait_for(indexed, timeout=300, interval=10, what=f"task log lines with log_id {wanted} in {TASK_LOG_INDICES}")
    assert all(h.get("log_id") == wanted for h in hits), hits[:3]
    text = airflow.task_log("prepare_dataset", run["dag_run_id"], ti["task_id"], int(ti["try_number"]))
    messages = [str(h.get("event") or h.get("message") or "") for h in hits]
    assert any(m and m in text for m in messages), (
        f"Airflow's log endpoint does not show the lines Elasticsearch has:\n{text[-2000:]}\n--- ES: {messages[:5]}"
    )


ISTIO_MIRRORED: dict[str, Any] = {}


def test_virtualservice_mirror_copies_each_request_to_the_shadow(
    mirrored_by_istio: dict[str, Any], ingress: str, platform: Any
) -> None:
    """(8) mirror_mode virtualservice: requests to the primary's external host answer from the
    primary, and Istio copies each (with its x-request-id) to the shadow."""
    path = f"/v1/models/{SERVED_MODEL_NAME}:predict"
    since = time.time() - 5
    requests = distinct_requests(5)
    ids = [f"e2e-mirror-{int(since)}-{i}" for i in range(len(requests))]
    for rows, request_id in zip(requests, ids, strict=True):
        with httpx.Client(timeout=30, trust_env=False) as http:
            wait_for(lambda r=rows, i=request_id: http.post(
                ingress + path, json=v1_body(r), headers={"Host": mirrored_by_istio["host"], "x-request-id": i}
            ).status_code == 200, timeout=180, interval=3, what=f"HTTP 200 from {mirrored_by_istio['host']}")
    records = wait_received(platform, SHADOW, requests, since)
    assert set(ids) <= evidence.request_ids(records), sorted(evidence.request_ids(records))
    ISTIO_MIRRORED.update(ids=ids, since=since)


def test_prediction_lines_reach_their_own_index(elasticsearch: Any) -> None:
    """(9) The predictors' prediction lines go to their own index (not the task logs')."""
    if not ISTIO_MIRRORED:
        pytest.skip("needs the requests of test_virtualservice_mirror_copies_each_request_to_the_shadow")
    query = {"size": 100, "query": {"terms": {"request_id.keyword": ISTIO_MIRRORED["ids"]}}}
    found: list[dict[str, Any]] = []

    def indexed() -> bool:
        found[:] = es_search(elasticsearch, PREDICTION_INDICES, query)
        return set(ISTIO_MIRRORED["ids"]) <= {h.get("request_id") for h in found}

    wait_for(indexed, timeout=300, interval=10, what=f"the mirrored requests in {PREDICTION_INDICES}")
    assert not es_search(elasticsearch, TASK_LOG_INDICES, query)


def test_rbac_worker_may_deploy_only_in_serving_namespace(platform: Any) -> None:
    """(10) The worker's service account manages InferenceServices in `serving` only."""
    sa = platform.settings.worker_service_account
    kube = platform.kube
    assert kube.can_i(
        "create", "inferenceservices.serving.kserve.io", platform.serving_namespace, sa
    )
    assert kube.can_i("create", "inferencegraphs.serving.kserve.io", platform.serving_namespace, sa)
    assert not kube.can_i("create", "inferenceservices.serving.kserve.io", "default", sa)
    assert not kube.can_i("create", "inferenceservices.serving.kserve.io", platform.namespace, sa)
