"""Deploy targets without a cluster.

KubernetesTarget: a fake `CustomObjectsApi` records the calls (there is no cluster here):
server-side apply call shape, Ready wait (current generation), timeout message with
conditions, delete. LocalTarget: the real controller with a stand-in "python" that serves
HTTP 200 on --port, so ports, pid records, restart on change and removal are exercised
with real detached processes in milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from airflow_project.host.net import free_port_range
from airflow_project.host.processes import alive
from airflow_project.serving import manifests, targets
from airflow_project.serving.targets import DeployError, DeployTimeout, target_from_env
from airflow_project.serving.targets import kubernetes as k8s_target
from airflow_project.serving.targets.kubernetes import KubernetesTarget
from airflow_project.serving.targets.local import LocalTarget

NS = "serving"


class ApiException(Exception):
    def __init__(self, status: int, reason: str = "", body: str = "") -> None:
        super().__init__(f"({status}) {reason}")
        self.status, self.reason, self.body = status, reason, body


class FakeCustomObjectsApi:
    """Records calls; `objects[(plural, name)]` is what GET returns."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.objects: dict[tuple[str, str], dict] = {}
        self.statuses: dict[tuple[str, str], list[dict]] = {}

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body, **kwargs):
        self.calls.append(("patch", dict(group=group, version=version, namespace=namespace, plural=plural,
                                         name=name, body=body, **kwargs)))
        obj = json.loads(json.dumps(body))
        previous = self.objects.get((plural, name), {}).get("metadata", {}).get("generation", 0)
        obj["metadata"]["generation"] = previous + 1
        self.objects[(plural, name)] = obj
        return obj

    def get_namespaced_custom_object(self, group, version, namespace, plural, name, **kwargs):
        self.calls.append(("get", {"group": group, "version": version, "namespace": namespace, "plural": plural, "name": name}))
        if (plural, name) not in self.objects:
            raise ApiException(404, "Not Found")
        queue = self.statuses.get((plural, name))
        if queue:
            self.objects[(plural, name)]["status"] = queue.pop(0)
        return self.objects[(plural, name)]

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, **kwargs):
        self.calls.append(("delete", {"group": group, "version": version, "namespace": namespace, "plural": plural, "name": name}))
        if self.objects.pop((plural, name), None) is None:
            raise ApiException(404, "Not Found")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def k8s(api: FakeCustomObjectsApi, clock: FakeClock | None = None) -> KubernetesTarget:
    clock = clock or FakeClock()
    return KubernetesTarget(NS, api, poll_interval=5, clock=clock, sleep=clock.sleep)


def config() -> manifests.ServingConfig:
    return manifests.ServingConfig(namespace=NS)


ISVC = manifests.inference_service("wachttijden-primary", "models:/wachttijden/3", config())
GRAPH = manifests.inference_graph("wachttijden-graph", "wachttijden-primary", "wachttijden-shadow", config())
VS = manifests.virtual_service_mirror("wachttijden-primary", "wachttijden-shadow", config(), percentage=50)


# --------------------------------------------------------------------------- Kubernetes
@pytest.mark.parametrize(
    ("manifest", "group", "version", "plural"),
    [
        (ISVC, "serving.kserve.io", "v1beta1", "inferenceservices"),
        (GRAPH, "serving.kserve.io", "v1alpha1", "inferencegraphs"),
        (VS, "networking.istio.io", "v1", "virtualservices"),
    ],
    ids=["InferenceService", "InferenceGraph", "VirtualService"],
)
def test_apply_is_namespaced_server_side_apply(manifest, group, version, plural):
    api = FakeCustomObjectsApi()
    k8s(api).apply(manifest)
    [(method, call)] = api.calls
    assert method == "patch"
    assert call == {
        "group": group, "version": version, "namespace": NS, "plural": plural,
        "name": manifest["metadata"]["name"], "body": manifest,
        "field_manager": "airflow-mlops", "force": True,
        "_content_type": "application/apply-patch+yaml",
    }


def test_apply_refuses_a_manifest_for_another_namespace():
    other = manifests.inference_service("x", "models:/wachttijden/1", manifests.ServingConfig(namespace="prod"))
    with pytest.raises(ValueError, match="namespace 'prod' but this target deploys to 'serving'"):
        k8s(FakeCustomObjectsApi()).apply(other)


def test_apply_error_names_object_and_status():
    class Refusing(FakeCustomObjectsApi):
        def patch_namespaced_custom_object(self, *a, **k):
            raise ApiException(403, "Forbidden", '{"message":"cannot patch inferenceservices"}')

    with pytest.raises(DeployError, match=r"InferenceService serving/wachttijden-primary failed with HTTP 403: "
                                          r"Forbidden .*cannot patch"):
        k8s(Refusing()).apply(ISVC)


def _ready(status: str, generation: int = 1, url: str | None = None, **extra) -> dict:
    out = {"observedGeneration": generation,
           "conditions": [{"type": "PredictorReady", "status": status},
                          {"type": "Ready", "status": status, **extra}]}
    if url:
        out["address"] = {"url": url}
    return out


def test_wait_ready_polls_until_ready_condition_and_returns_address_url():
    api = FakeCustomObjectsApi()
    target = k8s(api)
    target.apply(ISVC)
    url = "http://wachttijden-primary-predictor.serving.svc.cluster.local"
    api.statuses[("inferenceservices", "wachttijden-primary")] = [
        {}, _ready("False", reason="Progressing"), _ready("True", url=url)]
    assert target.wait_ready("InferenceService", "wachttijden-primary", timeout=60) == url
    gets = [c for m, c in api.calls if m == "get"]
    assert len(gets) == 3
    assert gets[0] == {"group": "serving.kserve.io", "version": "v1beta1", "namespace": NS,
                       "plural": "inferenceservices", "name": "wachttijden-primary"}


def test_wait_ready_ignores_ready_of_an_older_generation():
    api = FakeCustomObjectsApi()
    target = k8s(api)
    target.apply(GRAPH)
    target.apply(GRAPH)  # generation 2
    api.statuses[("inferencegraphs", "wachttijden-graph")] = [
        _ready("True", generation=1, url="http://old"), _ready("True", generation=2, url="http://new")]
    assert target.wait_ready("InferenceGraph", "wachttijden-graph", timeout=60) == "http://new"


def test_wait_ready_timeout_lists_the_conditions():
    api = FakeCustomObjectsApi()
    clock = FakeClock()
    target = k8s(api, clock)
    target.apply(ISVC)
    api.objects[("inferenceservices", "wachttijden-primary")]["status"] = {
        "observedGeneration": 1,
        "conditions": [
            {"type": "IngressReady", "status": "True"},
            {"type": "PredictorReady", "status": "False", "reason": "ImagePullBackOff",
             "message": "Back-off pulling image airflow-project/predictor:latest"},
            {"type": "Ready", "status": "False", "reason": "PredictorNotReady"},
        ],
    }
    with pytest.raises(DeployTimeout) as err:
        target.wait_ready("InferenceService", "wachttijden-primary", timeout=30)
    message = str(err.value)
    assert message.startswith("InferenceService serving/wachttijden-primary not Ready after 30s")
    assert ("conditions: IngressReady=True; PredictorReady=False (ImagePullBackOff: Back-off pulling image "
            "airflow-project/predictor:latest); Ready=False (PredictorNotReady)") in message
    assert isinstance(err.value, TimeoutError)
    assert clock.now == pytest.approx(30)


def test_wait_ready_timeout_when_object_never_appears():
    clock = FakeClock()
    with pytest.raises(DeployTimeout, match="InferenceGraph serving/nope not found after 10s"):
        k8s(FakeCustomObjectsApi(), clock).wait_ready("InferenceGraph", "nope", timeout=10)


def test_virtual_service_is_ready_once_it_exists_and_url_is_its_host():
    api = FakeCustomObjectsApi()
    target = k8s(api)
    target.apply(VS)
    assert target.wait_ready("VirtualService", "wachttijden-primary-mirror", timeout=5) == (
        "http://wachttijden-primary-predictor.serving.svc.cluster.local")


def test_delete_is_namespaced_and_tolerates_missing_objects():
    api = FakeCustomObjectsApi()
    target = k8s(api)
    target.apply(ISVC)
    target.delete("InferenceService", "wachttijden-primary")
    target.delete("InferenceService", "wachttijden-primary")  # 404: fine
    deletes = [c for m, c in api.calls if m == "delete"]
    assert deletes[0] == {"group": "serving.kserve.io", "version": "v1beta1", "namespace": NS,
                          "plural": "inferenceservices", "name": "wachttijden-primary"}
    assert target.url("InferenceService", "wachttijden-primary") is None


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unsupported kind 'Deployment'"):
        k8s(FakeCustomObjectsApi()).wait_ready("Deployment", "x", 1)


def test_api_comes_from_the_airflow_connection(monkeypatch):
    """The `kubernetes_serving` connection (as the chart defines it) goes through the provider hook."""
    from kubernetes import client

    seen = {}

    class Hook:
        def __init__(self, conn_id):
            seen["conn_id"] = conn_id

        def get_connection(self, conn_id):
            return object()

        @property
        def api_client(self):
            return client.ApiClient()

    import airflow.providers.cncf.kubernetes.hooks.kubernetes as hooks

    monkeypatch.setattr(hooks, "KubernetesHook", Hook)
    monkeypatch.delenv("MLOPS_KUBERNETES_CONN_ID", raising=False)
    api = k8s_target.kubernetes_api()
    assert isinstance(api, client.CustomObjectsApi)
    assert seen == {"conn_id": "kubernetes_serving"}


# --------------------------------------------------------------------------- choosing
def test_target_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.delenv("MLOPS_DEPLOY_TARGET", raising=False)
    monkeypatch.setenv("MLOPS_SERVING_NAMESPACE", "serving")
    local = target_from_env()
    assert isinstance(local, LocalTarget) and local.namespace == "serving" and local.home == tmp_path
    monkeypatch.setenv("MLOPS_DEPLOY_TARGET", "kubernetes")
    remote = target_from_env("other")
    assert isinstance(remote, KubernetesTarget) and remote.namespace == "other"
    monkeypatch.setenv("MLOPS_DEPLOY_TARGET", "docker")
    with pytest.raises(ValueError, match="MLOPS_DEPLOY_TARGET must be 'local' or 'kubernetes'"):
        target_from_env()


def test_serving_config_from_chart_environment(monkeypatch):
    monkeypatch.setenv("MLOPS_PREDICTOR_IMAGE", "registry.local:5000/mlops/predictor:1.2.3")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlops-mlflow.mlops.svc:5000")
    cfg = targets.serving_config_from_env("serving")
    assert (cfg.image, cfg.image_tag, cfg.namespace) == ("registry.local:5000/mlops/predictor", "1.2.3", "serving")
    assert cfg.tracking_uri == "http://mlops-mlflow.mlops.svc:5000"
    assert (cfg.gateway, cfg.ingress_domain) == (None, None)  # local: no gateway
    monkeypatch.setenv("MLOPS_SERVING_GATEWAY", "serving/serving-gateway")
    monkeypatch.setenv("MLOPS_INGRESS_DOMAIN", "models.wachttijden.nl")
    cfg = targets.serving_config_from_env("serving")
    assert (cfg.gateway, cfg.ingress_domain) == ("serving/serving-gateway", "models.wachttijden.nl")


# --------------------------------------------------------------------------- local controller
FAKE_PYTHON = textwrap.dedent(
    f"""\
    #!{sys.executable}
    # Stand-in for `python -m airflow_project.serving[.router] ... --port P`: 200 on every GET,
    # {{"predictions": [1.0]}} on POST. FAKE_EXIT=1 makes it exit at once.
    import http.server, os, sys
    if os.environ.get("FAKE_EXIT"):
        print("boom: model not found"); sys.exit(3)
    port = int(sys.argv[sys.argv.index("--port") + 1])
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b"{{}}")
        def do_POST(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b'{{"predictions": [1.0]}}')
        def log_message(self, *a): pass
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
    """
)


@pytest.fixture()
def local(tmp_path, monkeypatch):
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.delenv("FAKE_EXIT", raising=False)
    base = free_port_range(20)
    target = LocalTarget(NS, home=tmp_path / "home", base_port=base, python=str(fake), poll_interval=0.05)
    yield target
    pids = [record["pid"] for record in target.objects()]
    target.stop_all()
    assert not [pid for pid in pids if alive(pid)], "processes left running"


def _alive(pid: int) -> bool:
    return alive(pid)


def test_local_apply_starts_detached_process_with_state_and_stable_port(local):
    local.apply(ISVC)
    url = local.wait_ready("InferenceService", "wachttijden-primary", timeout=20)
    record = local.state("InferenceService", "wachttijden-primary")
    assert url == f"http://127.0.0.1:{record['port']}" == local.url("InferenceService", "wachttijden-primary")
    assert record["port"] >= local.base_port
    assert record["argv"][1:] == ["-m", "airflow_project.serving", "--model-uri", "models:/wachttijden/3",
                                  "--name", "wachttijden", "--host", "127.0.0.1", "--port", str(record["port"]),
                                  "--tracking-uri", manifests.ServingConfig().tracking_uri]
    assert os.getsid(record["pid"]) == record["pid"]  # own session: survives the task process
    assert Path(record["log"]).parent == local.home / "logs" / "serving"
    ports = json.loads((local.home / "serving" / "ports.json").read_text())
    assert ports == {f"{NS}/InferenceService/wachttijden-primary": record["port"]}

    local.apply(ISVC)  # unchanged: no restart
    assert local.state("InferenceService", "wachttijden-primary")["pid"] == record["pid"]


def test_local_restart_on_change_keeps_port_and_delete_removes(local):
    local.apply(ISVC)
    first = local.state("InferenceService", "wachttijden-primary")
    changed = manifests.inference_service("wachttijden-primary", "models:/wachttijden/4", config())
    local.apply(changed)
    second = local.state("InferenceService", "wachttijden-primary")
    assert second["pid"] != first["pid"] and second["port"] == first["port"]
    assert second["spec_hash"] != first["spec_hash"]
    assert not _alive(first["pid"])
    local.wait_ready("InferenceService", "wachttijden-primary", timeout=20)

    local.delete("InferenceService", "wachttijden-primary")
    assert not _alive(second["pid"])
    assert local.state("InferenceService", "wachttijden-primary") is None
    assert local.url("InferenceService", "wachttijden-primary") is None

    local.apply(ISVC)  # same name, same port after delete
    assert local.state("InferenceService", "wachttijden-primary")["port"] == first["port"]


def test_local_restarts_a_dead_process_with_unchanged_spec(local):
    local.apply(ISVC)
    record = local.state("InferenceService", "wachttijden-primary")
    local._stop(record)
    local.apply(ISVC)
    assert local.state("InferenceService", "wachttijden-primary")["pid"] != record["pid"]


def test_local_graph_and_mirror_routers_get_service_urls(local):
    shadow = manifests.inference_service("wachttijden-shadow", "models:/wachttijden/2", config())
    local.apply(ISVC)
    local.apply(shadow)
    local.apply(GRAPH)
    local.apply(VS)
    graph_url = local.wait_ready("InferenceGraph", "wachttijden-graph", timeout=20)
    graph_file = json.loads((local.home / "serving" / NS / "InferenceGraph-wachttijden-graph.graph.json").read_text())
    assert graph_file["mode"] == "graph" and graph_file["graph"] == GRAPH
    assert graph_file["services"] == {
        "wachttijden-primary": local.url("InferenceService", "wachttijden-primary"),
        "wachttijden-shadow": local.url("InferenceService", "wachttijden-shadow"),
    }
    mirror = json.loads((local.home / "serving" / NS / "VirtualService-wachttijden-primary-mirror.graph.json").read_text())
    assert mirror["mode"] == "mirror"
    assert mirror["mirror"] == {"primary": "wachttijden-primary", "shadow": "wachttijden-shadow", "percentage": 50.0}
    ports = {r["port"] for r in local.objects()}
    assert len(ports) == 4
    with urllib.request.urlopen(graph_url + "/readyz", timeout=5) as r:
        assert r.status == 200


def test_stopped_objects_keep_their_records_and_are_restored_on_their_ports(local):
    """`mlops down` stops the processes but keeps the records; `mlops up` starts them again
    (predictors before the routers that point at them), on the same ports."""
    from airflow_project.serving.targets.local import restore_local_serving, stop_local_serving

    shadow = manifests.inference_service("wachttijden-shadow", "models:/wachttijden/2", config())
    for manifest in (ISVC, shadow, GRAPH, VS):
        local.apply(manifest)
    local.wait_ready("InferenceGraph", "wachttijden-graph", timeout=20)
    before = {r["name"]: r for r in local.objects()}
    stopped = stop_local_serving(local.home)
    assert stopped[:2] == [f"{NS}/VirtualService/wachttijden-primary-mirror", f"{NS}/InferenceGraph/wachttijden-graph"]
    assert sorted(stopped) == sorted(f"{NS}/{r['kind']}/{r['name']}" for r in before.values())
    assert not any(_alive(r["pid"]) for r in before.values())
    assert {r["name"] for r in local.objects()} == set(before)  # records kept
    assert stop_local_serving(local.home) == []  # nothing runs any more

    restored = restore_local_serving(local.home, timeout=20, python=local.python)
    assert sorted(key for key, _url, error in restored if error is None) == sorted(stopped)
    after = {r["name"]: r for r in local.objects()}
    for name, record in after.items():
        assert record["port"] == before[name]["port"] and record["pid"] != before[name]["pid"]
        assert _alive(record["pid"])
    assert restore_local_serving(local.home, timeout=20, python=local.python) == []  # all running: nothing to do


def test_a_router_is_ready_only_when_what_its_requests_need_is_ready(local):
    """Graph (Sequence [shadow Soft, primary Hard]) and mirror router, with the shadow's and
    then the primary's process gone; `mlops status` shows what `readiness` says."""
    from airflow_project.local.summary import format_serving
    from airflow_project.serving.targets.local import Readiness, local_serving_objects

    shadow = manifests.inference_service("wachttijden-shadow", "models:/wachttijden/2", config())
    for manifest in (ISVC, shadow, GRAPH, VS):
        local.apply(manifest)
    local.wait_ready("InferenceGraph", "wachttijden-graph", timeout=20)
    local.wait_ready("VirtualService", "wachttijden-primary-mirror", timeout=20)

    def state(kind: str, name: str) -> Readiness:
        return local.readiness(local.state(kind, name))

    assert state("InferenceGraph", "wachttijden-graph") == Readiness(True)
    local._stop(local.state("InferenceService", "wachttijden-shadow"))
    graph = state("InferenceGraph", "wachttijden-graph")
    assert (graph.ready, graph.degraded) == (False, True)
    assert graph.reason.startswith("Soft step(s) wachttijden-shadow not ready: every request fails with 500")
    mirror = state("VirtualService", "wachttijden-primary-mirror")
    assert (mirror.ready, mirror.degraded) == (True, True) and "copies to it are lost" in mirror.reason
    with pytest.raises(DeployTimeout, match="Soft step"):
        local.wait_ready("InferenceGraph", "wachttijden-graph", timeout=1)

    text = format_serving(local_serving_objects(local.home, probe=True))
    rows = {line.split()[0]: line.split() for line in text.splitlines()[1:5]}
    assert rows[f"{NS}/wachttijden-graph"][5] == "degraded"
    assert rows[f"{NS}/wachttijden-primary-mirror"][5] == "degraded"
    assert rows[f"{NS}/wachttijden-shadow"][2] == "stopped"
    assert f"{NS}/wachttijden-graph degraded: Soft step(s) wachttijden-shadow not ready" in text

    local._stop(local.state("InferenceService", "wachttijden-primary"))
    assert state("InferenceGraph", "wachttijden-graph") == Readiness(
        False, "Hard step(s) wachttijden-primary not ready")
    assert state("VirtualService", "wachttijden-primary-mirror") == Readiness(
        False, "Hard step(s) wachttijden-primary not ready")


def test_local_graph_needs_its_services(local):
    with pytest.raises(DeployError, match="routes to InferenceService 'wachttijden-primary', which is not deployed"):
        local.apply(GRAPH)


def test_local_process_that_exits_fails_wait_with_its_log(local, monkeypatch):
    monkeypatch.setenv("FAKE_EXIT", "1")
    local.apply(ISVC)
    with pytest.raises(DeployError, match=r"(?s)exited before it was ready; last log lines.*boom: model not found"):
        local.wait_ready("InferenceService", "wachttijden-primary", timeout=20)


def test_local_timeout_names_the_ready_url(local, tmp_path):
    sleeper = tmp_path / "sleeper"
    sleeper.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(60)\n")
    sleeper.chmod(0o755)
    local.python = str(sleeper)
    local.apply(ISVC)
    with pytest.raises(DeployTimeout, match=r"not ready after 1s; conditions: process running .*"
                                            r"/v2/models/wachttijden/ready not answering 200"):
        local.wait_ready("InferenceService", "wachttijden-primary", timeout=1)


def test_local_port_taken_by_another_program_is_skipped_at_allocation(local):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", local.base_port))
        sock.listen()
        local.apply(ISVC)
    assert local.state("InferenceService", "wachttijden-primary")["port"] > local.base_port


def test_graph_url_is_the_in_cluster_service_not_the_ingress_host():
    api = FakeCustomObjectsApi()
    target = k8s(api)
    target.apply(GRAPH)
    api.objects[("inferencegraphs", "wachttijden-graph")]["status"] = {
        "url": "http://wachttijden-graph-serving.example.com", **_ready("True")}
    assert target.wait_ready("InferenceGraph", "wachttijden-graph", 5) == (
        "http://wachttijden-graph.serving.svc.cluster.local")


def test_missing_connection_falls_back_to_in_cluster_then_kubeconfig(monkeypatch):
    import airflow.providers.cncf.kubernetes.hooks.kubernetes as hooks
    from kubernetes import client, config

    class Hook:
        def __init__(self, conn_id):
            pass

        def get_connection(self, conn_id):
            raise RuntimeError(f"The conn_id `{conn_id}` isn't defined")

    loaded = []

    def incluster():
        loaded.append("incluster")
        raise config.ConfigException("not in a pod")

    monkeypatch.setattr(hooks, "KubernetesHook", Hook)
    monkeypatch.setattr(config, "load_incluster_config", incluster)
    monkeypatch.setattr(config, "load_kube_config", lambda: loaded.append("kubeconfig"))
    assert isinstance(k8s_target.kubernetes_api("kubernetes_serving"), client.CustomObjectsApi)
    assert loaded == ["incluster", "kubeconfig"]


def test_local_delete_right_after_apply_stops_the_new_process(local):
    """The child's command line is only ours after exec(): apply waits for it, so an
    immediate delete still recognises (and stops) the process."""
    for _ in range(3):
        local.apply(ISVC)
        pid = local.state("InferenceService", "wachttijden-primary")["pid"]
        local.delete("InferenceService", "wachttijden-primary")
        assert not _alive(pid)


def test_local_process_outlives_the_task_process_and_its_group(local):
    """Like a LocalExecutor task: a process (own group) applies and exits, then its whole
    group is killed (the task supervisor's killpg). The served process must keep serving."""
    import signal
    import subprocess

    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from airflow_project.serving import manifests
        from airflow_project.serving.targets.local import LocalTarget
        t = LocalTarget({NS!r}, home=Path({str(local.home)!r}), base_port={local.base_port}, python={local.python!r})
        t.apply(manifests.inference_service("wachttijden-primary", "models:/wachttijden/3",
                                            manifests.ServingConfig(namespace={NS!r})))
        t.wait_ready("InferenceService", "wachttijden-primary", 20)
        print("deployed", flush=True)
        import time; time.sleep(60)
        """
    )
    task = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE, text=True)
    try:
        assert task.stdout.readline().strip() == "deployed"
        os.killpg(task.pid, signal.SIGKILL)  # the task's whole process group
        assert task.wait(timeout=10) == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(task.pid, signal.SIGKILL)
        task.stdout.close()
    record = local.state("InferenceService", "wachttijden-primary")
    assert _alive(record["pid"])
    with urllib.request.urlopen(record["url"] + "/v2/models/wachttijden/ready", timeout=5) as r:
        assert r.status == 200
