"""The predictor as KServe runs it: the container `serving/manifests.py` puts into the
InferenceService (command = the predictor image's ENTRYPOINT, its args and env, built with
the chart's Airflow environment), run as a local process against the rendered MLflow, with
only the addresses remapped (the HTTP port, MLflow's Service to the local server). It loads
a version registered the way train_model registers it, answers its probes, a V1 and a V2
prediction, listens where the kubelet and the Service reach it, and writes prediction log
lines the Logstash pipeline keeps."""

from __future__ import annotations

import json
import re
import shlex

import httpx
import psutil
import pytest
from chart_helpers import (
    ROOT,
    airflow_env,
    e2e_module,
    logstash_config,
    logstash_indices,
    values,
    worker_serving_config,
)
from pods import PodProcess, replace_arg, started_mlflow

from airflow_project.host.net import free_port
from airflow_project.local import stack
from airflow_project.serving import manifests
from airflow_project.serving.constants import PREDICTOR_COMMAND

pytestmark = pytest.mark.integration

ROWS = [
    {"TYPE_WACHTTIJD": "Behandeling", "SPECIALISME": "Cardiologie", "ROAZ_REGIO": "Noord-Holland",
     "TYPE_ZORGINSTELLING": "Ziekenhuis"},
    {"TYPE_WACHTTIJD": "Diagnostiek", "SPECIALISME": "Dermatologie", "ROAZ_REGIO": "Limburg",
     "TYPE_ZORGINSTELLING": "Kliniek"},
]


def image_entrypoint() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    predictor = text[text.index("AS predictor"):]
    return json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", predictor, re.MULTILINE).group(1))


def listening_addresses(pid: int, port: int) -> set[str]:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return {c.laddr.ip for p in procs for c in p.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


@pytest.fixture(scope="module")
def registered_version(plan_render, tmp_path_factory, azurite_port, datalake):
    """The rendered MLflow, running, with one version registered as train_model does."""
    from airflow_project import registry
    from airflow_project.wachttijden import dataset, synthetic
    from airflow_project.wachttijden.training import TrainingConfig

    mlflow, base = started_mlflow(plan_render("kind", "platform"), tmp_path_factory.mktemp("mlflow"), azurite_port)
    try:
        raw = synthetic.to_raw_bytes(synthetic.generate(synthetic.SyntheticConfig(rows=2000, seed=3)))
        frame, _ = dataset.prepare(raw, "release-test")
        result = registry.train_and_register(frame, TrainingConfig(estimator="decision_tree"), tracking_uri=base)
        yield base, str(result.version)
    finally:
        mlflow.stop()


def test_the_inference_services_container_serves_a_registered_version(plan_render, registered_version, tmp_path):
    base, version = registered_version
    objs = plan_render("kind")
    config = worker_serving_config(objs)
    isvc = manifests.inference_service("wachttijden", f"models:/wachttijden/{version}", config)
    (container,) = isvc["spec"]["predictor"]["containers"]
    # the InferenceService runs the image's own entry point
    assert container["command"] == list(PREDICTOR_COMMAND) == image_entrypoint()
    rendered_port = container["ports"][0]["containerPort"]
    port = free_port()
    args = replace_arg(container["args"], "--http_port", str(port))
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"] == airflow_env(objs)["MLFLOW_TRACKING_URI"]  # the rendered Service...
    env["MLFLOW_TRACKING_URI"] = base  # ...remapped to the local server
    argv = [stack.venv_tool(container["command"][0]), *container["command"][1:], *args]
    with PodProcess("predictor", argv, env, tmp_path / "predictor.log") as predictor:
        probe = container["readinessProbe"]["httpGet"]
        assert probe["port"] == rendered_port

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}{probe['path']}", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        predictor.wait_until(ready, timeout=240)
        live = container["livenessProbe"]["httpGet"]["path"]
        assert httpx.get(f"http://127.0.0.1:{port}{live}", timeout=5).status_code == 200
        # reachable where the kubelet's probes and the Service send traffic: the pod IP
        assert listening_addresses(predictor.process.pid, port) & {"0.0.0.0", "::"}, (
            f"{shlex.join(argv)} listens only on {listening_addresses(predictor.process.pid, port)}")
        name = config.served_model_name
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            v1 = http.post(f"/v1/models/{name}:predict", json={"instances": ROWS},
                           headers={"x-request-id": "release-v1"})
            assert v1.status_code == 200, v1.text
            assert len(v1.json()["predictions"]) == len(ROWS)
            v2 = http.post(f"/v2/models/{name}/infer", headers={"x-request-id": "release-v2"}, json={
                "parameters": {"content_type": "pd"},
                "inputs": [{"name": f, "datatype": "BYTES", "shape": [len(ROWS)], "data": [r[f] for r in ROWS]}
                           for f in ROWS[0]],
            })
            assert v2.status_code == 200, v2.text
            assert len(v2.json()["outputs"][0]["data"]) == len(ROWS)
    # the prediction log lines carry what the Logstash pipeline keeps them by
    lines = [json.loads(line) for line in (tmp_path / "predictor.log").read_text().splitlines() if line.startswith("{")]
    predictions = {r.get("request_id"): r for r in lines if r.get("event") == "prediction"}
    assert {"release-v1", "release-v2"} <= set(predictions), lines[-5:]
    prefix = values(True)["mlops"]["logging"]["predictionIndexPrefix"]
    (condition,) = [c for c, index in logstash_indices(logstash_config(objs)).items() if index.startswith(prefix)]
    for field in re.findall(r"\[(\w+)\]", condition):
        assert predictions["release-v1"].get(field), (field, predictions["release-v1"])
    assert str(predictions["release-v1"]["model_version"]) == version
    # what the kind suite reads from a shadow's log finds these requests too
    evidence = e2e_module("evidence")
    records = evidence.prediction_records((tmp_path / "predictor.log").read_text())
    assert evidence.request_ids(records) >= {"release-v1", "release-v2"}
    assert evidence.received(records, [ROWS, ROWS[:1]]) == [0]
