"""Deploy targets: where the manifests from `serving.manifests` are applied.

Chosen by `MLOPS_DEPLOY_TARGET` (`local` by default, `kubernetes` in the Helm chart) through
`target_from_env()`. Both implement `DeployTarget`:

- `apply(manifest)`: create or update the object (idempotent).
- `wait_ready(kind, name, timeout) -> url`: block until the object serves; `DeployTimeout`
  (a `TimeoutError`) names the object and lists its conditions otherwise.
- `delete(kind, name)`: remove it (no error when it does not exist).
- `url(kind, name) -> str | None`: base URL of a predictor (`<url>/v1/models/<m>:predict`)
  or of a graph router (any POST runs the graph); None when not deployed.

`KubernetesTarget`: server-side apply through the Kubernetes API
(`CustomObjectsApi.patch_namespaced_custom_object`, content type
`application/apply-patch+yaml`, `field_manager="airflow-mlops"`, `force=True`), always in
one namespace; waits for the `Ready` condition of the current generation. The API client
comes from the Airflow connection `kubernetes_serving` (`MLOPS_KUBERNETES_CONN_ID`) through
the cncf-kubernetes provider hook when it exists, else in-cluster config, else kubeconfig.

`LocalTarget`: the local serving controller. It reconciles the same manifests into
processes on 127.0.0.1:
- `InferenceService` -> `python -m airflow_project.serving --model-uri ... --port P`,
- `InferenceGraph` -> `python -m airflow_project.serving.router --graph FILE --port P`
  (mode `graph`: KServe Sequence semantics),
- `VirtualService` (Istio mirror) -> the same router in mode `mirror` (the local stand-in
  for `VirtualService.mirror`: primary answers, shadow gets a fire-and-forget copy).

State lives under `$MLOPS_HOME/serving/` (`LocalConfig().root`):
- `ports.json`: `{"<namespace>/<Kind>/<name>": port}`, a persisted allocation starting at
  `Ports.serving` (`MLOPS_SERVING_PORT`, default 8100): a name keeps its port across
  restarts, re-deploys and deletes.
- `<namespace>/<Kind>-<name>.json`: one record per object, also its pid file:
  `{"kind", "name", "namespace", "spec_hash", "pid", "port", "url", "argv", "log",
  "started_at", "manifest"}`; routers also get `<namespace>/<Kind>-<name>.graph.json` (the
  router's graph file).
- `.lock`: `flock` around every reconcile, so parallel tasks do not race.
Logs: `$MLOPS_HOME/logs/serving/<namespace>-<Kind>-<name>.log`.

Reconcile rules: same spec hash and the recorded process still running -> nothing to do;
spec changed or process gone -> stop the old process group, start a new one on the same
port. Processes start detached (`start_new_session=True`, stdin from /dev/null, no
parent-death signal), so they outlive the Airflow task that started them (the task
supervisor kills only the task's own process group).

Heavy imports (kubernetes, airflow) happen inside methods: DAG files may import this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from airflow_project.host.files import tail, write_atomic
from airflow_project.host.net import http_ok, listens, port_is_free
from airflow_project.host.processes import alive, stop_process_groups
from airflow_project.serving.constants import (
    DEFAULT_NAMESPACE,
    DEFAULT_PREDICTOR_IMAGE,
    DEFAULT_PREDICTOR_TAG,
    PREDICTOR_SERVICE_SUFFIX,
    ROUTER_READINESS_PATH,
    SERVED_MODEL_NAME,
)
from airflow_project.settings import REPO_ROOT, Ports, home_from_env

log = logging.getLogger(__name__)

FIELD_MANAGER = "airflow-mlops"
APPLY_PATCH_CONTENT_TYPE = "application/apply-patch+yaml"
DEFAULT_CONN_ID = "kubernetes_serving"
DEFAULT_TIMEOUT_S = 600.0

TARGET_ENV = "MLOPS_DEPLOY_TARGET"
NAMESPACE_ENV = "MLOPS_SERVING_NAMESPACE"
IMAGE_ENV = "MLOPS_PREDICTOR_IMAGE"
CONN_ID_ENV = "MLOPS_KUBERNETES_CONN_ID"

INFERENCE_SERVICE = "InferenceService"
INFERENCE_GRAPH = "InferenceGraph"
VIRTUAL_SERVICE = "VirtualService"


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


RESOURCES: dict[str, ResourceType] = {
    INFERENCE_SERVICE: ResourceType("serving.kserve.io", "v1beta1", "inferenceservices"),
    INFERENCE_GRAPH: ResourceType("serving.kserve.io", "v1alpha1", "inferencegraphs"),
    VIRTUAL_SERVICE: ResourceType("networking.istio.io", "v1", "virtualservices"),
}


class DeployError(RuntimeError):
    """A manifest could not be applied or its workload failed to start."""


class DeployTimeout(DeployError, TimeoutError):
    """An object did not become ready in time; the message lists its conditions."""


def resource_type(kind: str) -> ResourceType:
    try:
        return RESOURCES[kind]
    except KeyError:
        raise ValueError(f"unsupported kind {kind!r}; supported: {sorted(RESOURCES)}") from None


@runtime_checkable
class DeployTarget(Protocol):
    name: str
    namespace: str

    def apply(self, manifest: Mapping[str, Any]) -> None: ...

    def wait_ready(self, kind: str, name: str, timeout: float = DEFAULT_TIMEOUT_S) -> str: ...

    def delete(self, kind: str, name: str) -> None: ...

    def url(self, kind: str, name: str) -> str | None: ...


def _manifest_identity(manifest: Mapping[str, Any], namespace: str) -> tuple[str, str]:
    kind = manifest.get("kind", "")
    rtype = resource_type(kind)
    if manifest.get("apiVersion") != rtype.api_version:
        raise ValueError(f"{kind} must have apiVersion {rtype.api_version}, got {manifest.get('apiVersion')!r}")
    meta = manifest.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise ValueError(f"{kind} manifest has no metadata.name")
    ns = meta.get("namespace")
    if ns and ns != namespace:
        raise ValueError(
            f"{kind} {name} is for namespace {ns!r} but this target deploys to {namespace!r}"
        )
    return kind, name


def describe_conditions(conditions: list[Mapping[str, Any]] | None) -> str:
    """`Ready=False (Reason: message); PredictorReady=True` - for error messages."""
    if not conditions:
        return "no conditions reported"
    parts = []
    for c in conditions:
        text = f"{c.get('type')}={c.get('status')}"
        detail = ": ".join(str(x) for x in (c.get("reason"), c.get("message")) if x)
        parts.append(f"{text} ({detail})" if detail else text)
    return "; ".join(parts)


def ready_condition(obj: Mapping[str, Any]) -> bool:
    """Ready=True for the object's current generation."""
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and int(observed) < int(generation):
        return False
    return any(
        c.get("type") == "Ready" and str(c.get("status")) == "True"
        for c in status.get("conditions") or []
    )


# --------------------------------------------------------------------------- Kubernetes
def kubernetes_api(conn_id: str | None = None) -> Any:
    """A `CustomObjectsApi`: Airflow connection via the provider hook, else in-cluster/kubeconfig."""
    from kubernetes import client, config

    conn_id = conn_id or os.environ.get(CONN_ID_ENV, DEFAULT_CONN_ID)
    try:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
    except ImportError:
        KubernetesHook = None
    if KubernetesHook is not None:
        hook = KubernetesHook(conn_id=conn_id)
        try:
            hook.get_connection(conn_id)  # raises when the connection is not defined
        except Exception as exc:  # noqa: BLE001 - not found, or no Airflow context: fall back
            log.info("no Airflow connection %r (%s): using in-cluster config or kubeconfig", conn_id, exc)
        else:
            return client.CustomObjectsApi(hook.api_client)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


class KubernetesTarget:
    """Server-side apply of KServe/Istio objects into one namespace."""

    name = "kubernetes"

    def __init__(
        self,
        namespace: str,
        api: Any | None = None,
        *,
        conn_id: str | None = None,
        field_manager: str = FIELD_MANAGER,
        poll_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.namespace = namespace
        self._api = api
        self.conn_id = conn_id
        self.field_manager = field_manager
        self.poll_interval = poll_interval
        self._clock = clock
        self._sleep = sleep

    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = kubernetes_api(self.conn_id)
        return self._api

    def _path(self, kind: str) -> dict[str, str]:
        rtype = resource_type(kind)
        return {"group": rtype.group, "version": rtype.version, "namespace": self.namespace,
                "plural": rtype.plural}

    def apply(self, manifest: Mapping[str, Any]) -> None:
        kind, name = _manifest_identity(manifest, self.namespace)
        body = json.loads(json.dumps(manifest))
        body.setdefault("metadata", {})["namespace"] = self.namespace
        try:
            self.api.patch_namespaced_custom_object(
                **self._path(kind), name=name, body=body,
                field_manager=self.field_manager, force=True,
                _content_type=APPLY_PATCH_CONTENT_TYPE,
            )
        except Exception as exc:
            status = getattr(exc, "status", None)
            if status is None:
                raise
            raise DeployError(
                f"server-side apply of {kind} {self.namespace}/{name} failed with HTTP {status}: "
                f"{getattr(exc, 'reason', '')} {getattr(exc, 'body', '') or ''}".strip()
            ) from exc
        log.info("applied %s %s/%s (field manager %s)", kind, self.namespace, name, self.field_manager)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return self.api.get_namespaced_custom_object(**self._path(kind), name=name)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise

    @staticmethod
    def _object_url(obj: Mapping[str, Any]) -> str | None:
        """The in-cluster address (`status.address.url`). `status.url` may be an ingress host
        the Airflow worker cannot reach, so it is not used (see `_fallback_url`)."""
        status = obj.get("status") or {}
        return (status.get("address") or {}).get("url")

    def _fallback_url(self, kind: str, name: str) -> str:
        """Service hosts KServe creates in Standard (raw) mode: `<isvc>-predictor`, `<graph>`."""
        if kind == INFERENCE_SERVICE:
            return f"http://{name}{PREDICTOR_SERVICE_SUFFIX}.{self.namespace}.svc.cluster.local"
        return f"http://{name}.{self.namespace}.svc.cluster.local"

    def url(self, kind: str, name: str) -> str | None:
        obj = self.get(kind, name)
        if obj is None:
            return None
        if kind == VIRTUAL_SERVICE:
            hosts = (obj.get("spec") or {}).get("hosts") or []
            return f"http://{hosts[0]}" if hosts else None
        return self._object_url(obj) or self._fallback_url(kind, name)

    def wait_ready(self, kind: str, name: str, timeout: float = DEFAULT_TIMEOUT_S) -> str:
        resource_type(kind)
        deadline = self._clock() + timeout
        obj: dict[str, Any] | None = None
        while True:
            obj = self.get(kind, name)
            if obj is not None:
                if kind == VIRTUAL_SERVICE:  # no Ready condition: Istio programs it on its own
                    return self.url(kind, name) or ""
                if ready_condition(obj):
                    url = self._object_url(obj) or self._fallback_url(kind, name)
                    log.info("%s %s/%s is Ready at %s", kind, self.namespace, name, url)
                    return url
            if self._clock() >= deadline:
                break
            self._sleep(self.poll_interval)
        if obj is None:
            raise DeployTimeout(f"{kind} {self.namespace}/{name} not found after {timeout:.0f}s")
        status = obj.get("status") or {}
        generation = (obj.get("metadata") or {}).get("generation")
        raise DeployTimeout(
            f"{kind} {self.namespace}/{name} not Ready after {timeout:.0f}s "
            f"(generation {generation}, observed {status.get('observedGeneration')}); "
            f"conditions: {describe_conditions(status.get('conditions'))}"
        )

    def delete(self, kind: str, name: str) -> None:
        try:
            self.api.delete_namespaced_custom_object(**self._path(kind), name=name)
        except Exception as exc:
            if getattr(exc, "status", None) != 404:
                raise


# --------------------------------------------------------------------------- local
def spec_hash(manifest: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
    payload = {"spec": manifest.get("spec"), "extra": dict(extra or {})}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _container(manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    containers = (((manifest.get("spec") or {}).get("predictor") or {}).get("containers")) or []
    if not containers:
        raise ValueError(f"InferenceService {manifest['metadata']['name']}: no predictor container")
    return containers[0]


def _arg(args: list[str], *flags: str) -> str | None:
    for i, arg in enumerate(args):
        for flag in flags:
            if arg == flag and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    return None


def predictor_args(manifest: Mapping[str, Any]) -> dict[str, str]:
    """model URI, served model name and tracking URI of an InferenceService manifest."""
    container = _container(manifest)
    env = {e["name"]: e.get("value", "") for e in container.get("env") or []}
    args = [str(a) for a in container.get("args") or []]
    model_uri = _arg(args, "--model-uri", "--model_uri") or env.get("MODEL_URI")
    if not model_uri:
        raise ValueError(f"InferenceService {manifest['metadata']['name']}: no model URI")
    return {
        "model_uri": model_uri,
        "model_name": _arg(args, "--model_name", "--name", "--model-name") or SERVED_MODEL_NAME,
        "tracking_uri": env.get("MLFLOW_TRACKING_URI") or os.environ.get("MLFLOW_TRACKING_URI", ""),
    }


class LocalTarget:
    """The local serving controller (see the module docstring for state and rules)."""

    name = "local"

    def __init__(
        self,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        home: Path | None = None,
        base_port: int | None = None,
        python: str = sys.executable,
        poll_interval: float = 0.3,
    ) -> None:
        self.namespace = namespace
        self.home = Path(home) if home else home_from_env()
        self.base_port = base_port if base_port is not None else Ports.from_env().serving
        self.python = python
        self.poll_interval = poll_interval

    # ---- paths and state
    @property
    def state_dir(self) -> Path:
        return self.home / "serving"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs" / "serving"

    def _key(self, kind: str, name: str) -> str:
        return f"{self.namespace}/{kind}/{name}"

    def state_path(self, kind: str, name: str) -> Path:
        return self.state_dir / self.namespace / f"{kind}-{name}.json"

    def _graph_path(self, kind: str, name: str) -> Path:
        return self.state_dir / self.namespace / f"{kind}-{name}.graph.json"

    def _log_path(self, kind: str, name: str) -> Path:
        return self.log_dir / f"{self.namespace}-{kind}-{name}.log"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def state(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_path(kind, name).read_text())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _write_json(path: Path, data: Any) -> None:
        write_atomic(path, json.dumps(data, indent=2, sort_keys=True))

    def _ports(self) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in json.loads((self.state_dir / "ports.json").read_text()).items()}
        except (OSError, ValueError):
            return {}

    def port_for(self, kind: str, name: str) -> int:
        """The object's persisted port; allocates the next free one from base_port (call locked)."""
        ports = self._ports()
        key = self._key(kind, name)
        if key in ports:
            return ports[key]
        taken = set(ports.values())
        port = self.base_port
        while port in taken or not port_is_free(port):
            port += 1
            if port > 65535:
                raise DeployError(f"no free port at or above {self.base_port} for {key}")
        ports[key] = port
        self._write_json(self.state_dir / "ports.json", ports)
        return port

    def reserve_ports(self, objects: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Allocate ports for (kind, name) pairs in this order, so callers get predictable
        ports whatever order the objects are later deployed in (no-op for known names)."""
        with self._locked():
            return {(kind, name): self.port_for(kind, name) for kind, name in objects}

    # ---- the protocol
    def apply(self, manifest: Mapping[str, Any]) -> None:
        kind, name = _manifest_identity(manifest, self.namespace)
        with self._locked():
            port = self.port_for(kind, name)
            argv, extra, graph_file = self._plan(kind, name, manifest, port)
            digest = spec_hash(manifest, extra)
            current = self.state(kind, name)
            if current and current.get("spec_hash") == digest and self._running(current):
                log.info("%s %s: unchanged and running (pid %s, port %d)", kind, name, current["pid"], port)
                return
            if current:
                why = "spec changed" if current.get("spec_hash") != digest else "process not running"
                log.info("%s %s: %s, restarting on port %d", kind, name, why, port)
                self._stop(current)
            if graph_file is not None:
                self._write_json(self._graph_path(kind, name), graph_file)
            pid = self._start(kind, name, argv, port)
            self._write_json(self.state_path(kind, name), {
                "kind": kind, "name": name, "namespace": self.namespace, "spec_hash": digest,
                "pid": pid, "port": port, "url": f"http://127.0.0.1:{port}", "argv": argv,
                "log": str(self._log_path(kind, name)), "started_at": time.time(),
                "ready_path": extra["ready_path"], "manifest": manifest,
            })
            log.info("%s %s: started pid %d on port %d", kind, name, pid, port)

    def _plan(
        self, kind: str, name: str, manifest: Mapping[str, Any], port: int
    ) -> tuple[list[str], dict[str, Any], dict[str, Any] | None]:
        if kind == INFERENCE_SERVICE:
            p = predictor_args(manifest)
            argv = [self.python, "-m", "airflow_project.serving", "--model-uri", p["model_uri"],
                    "--name", p["model_name"], "--port", str(port)]
            if p["tracking_uri"]:
                argv += ["--tracking-uri", p["tracking_uri"]]
            return argv, {"ready_path": f"/v2/models/{p['model_name']}/ready", **p}, None
        if kind == INFERENCE_GRAPH:
            steps = [s for node in (manifest["spec"].get("nodes") or {}).values() for s in node.get("steps") or []]
            names = sorted({s["serviceName"] for s in steps if s.get("serviceName")})
            config: dict[str, Any] = {"graph": manifest, "mode": "graph"}
        else:
            route = manifest["spec"]["http"][0]
            primary = self._service_from_host(route["route"][0]["destination"]["host"])
            shadow = self._service_from_host(route["mirror"]["host"])
            percentage = float((route.get("mirrorPercentage") or {}).get("value", 100.0))
            names = [primary, shadow]
            config = {"mode": "mirror",
                      "mirror": {"primary": primary, "shadow": shadow, "percentage": percentage}}
        services, model_names = {}, {}
        for service in names:
            record = self.state(INFERENCE_SERVICE, service)
            if record is None:
                raise DeployError(
                    f"{kind} {name} routes to InferenceService {service!r}, which is not deployed "
                    f"in namespace {self.namespace!r} of the local target; deploy it first"
                )
            services[service] = record["url"]
            model_names[service] = predictor_args(record["manifest"])["model_name"]
        config.update(services=services, model_names=model_names)
        graph_file = self._graph_path(kind, name)
        argv = [self.python, "-m", "airflow_project.serving.router", "--graph", str(graph_file),
                "--port", str(port)]
        return argv, {"ready_path": ROUTER_READINESS_PATH, "services": services}, config

    @staticmethod
    def _service_from_host(host: str) -> str:
        short = host.split(".", 1)[0]
        return short.removesuffix(PREDICTOR_SERVICE_SUFFIX)

    def _running(self, record: Mapping[str, Any]) -> bool:
        return alive(record.get("pid"), ("airflow_project.serving", f"--port {record.get('port')}"))

    def _start(self, kind: str, name: str, argv: list[str], port: int) -> int:
        deadline = time.monotonic() + 15
        while not port_is_free(port):
            if time.monotonic() > deadline:
                raise DeployError(
                    f"{kind} {name}: port {port} on 127.0.0.1 is in use by another program; stop it "
                    f"or free the port (ports are kept per name in {self.state_dir / 'ports.json'})"
                )
            time.sleep(0.2)
        log_path = self._log_path(kind, name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        with open(log_path, "ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                cwd=self.home, start_new_session=True, close_fds=True,
            )
        proc.returncode = 0  # we never wait() on it here: silence Popen's ResourceWarning
        # Until exec() is done the child shows our own command line, and `_running` (which
        # checks it against pid reuse) would call it a stranger: wait for the exec.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not alive(proc.pid, ("airflow_project.serving",)):
            if not alive(proc.pid):
                break  # exited already: wait_ready reports it with the log
            time.sleep(0.02)
        return proc.pid

    def _stop(self, record: Mapping[str, Any], timeout: float = 15.0) -> None:
        """Stop the recorded process group, if it is still the one we started."""
        if self._running(record):
            stop_process_groups([int(record["pid"])], timeout)

    def url(self, kind: str, name: str) -> str | None:
        resource_type(kind)
        record = self.state(kind, name)
        return record["url"] if record else None

    def wait_ready(self, kind: str, name: str, timeout: float = DEFAULT_TIMEOUT_S) -> str:
        resource_type(kind)
        deadline = time.monotonic() + timeout
        while True:
            record = self.state(kind, name)
            if record is None:
                raise DeployError(f"{kind} {self.namespace}/{name} is not deployed on the local target")
            if (listens(record["pid"], record["port"]) and http_ok(record["url"] + record["ready_path"])
                    and self._running(record)):
                return record["url"]
            if not self._running(record):
                raise DeployError(
                    f"{kind} {self.namespace}/{name} (pid {record['pid']}, port {record['port']}) exited "
                    f"before it was ready; last log lines of {record['log']}:\n{tail(Path(record['log']))}"
                )
            if time.monotonic() >= deadline:
                raise DeployTimeout(
                    f"{kind} {self.namespace}/{name} not ready after {timeout:.0f}s; conditions: "
                    f"process running (pid {record['pid']}), {record['url']}{record['ready_path']} "
                    f"not answering 200; last log lines of {record['log']}:\n{tail(Path(record['log']))}"
                )
            time.sleep(self.poll_interval)

    def delete(self, kind: str, name: str) -> None:
        resource_type(kind)
        with self._locked():
            record = self.state(kind, name)
            if record is not None:
                self._stop(record)
            for path in (self.state_path(kind, name), self._graph_path(kind, name)):
                path.unlink(missing_ok=True)

    def objects(self) -> list[dict[str, Any]]:
        """Every object recorded in this namespace (for status and teardown)."""
        folder = self.state_dir / self.namespace
        records = []
        for path in sorted(folder.glob("*.json")):
            if path.name.endswith(".graph.json"):
                continue
            with contextlib.suppress(OSError, ValueError):
                records.append(json.loads(path.read_text()))
        return records

    def delete_all(self) -> None:
        """Routers first, then predictors."""
        order = {VIRTUAL_SERVICE: 0, INFERENCE_GRAPH: 1, INFERENCE_SERVICE: 2}
        for record in sorted(self.objects(), key=lambda r: order.get(r["kind"], 3)):
            self.delete(record["kind"], record["name"])


def local_serving_objects(home: Path | None = None) -> list[dict[str, Any]]:
    """Every object the local controller runs under `home` (default `$MLOPS_HOME`), all
    namespaces, each record with `running` (for `mlops status`)."""
    home = Path(home) if home else LocalTarget().home
    records = []
    for folder in sorted(p for p in (home / "serving").glob("*") if p.is_dir()):
        target = LocalTarget(folder.name, home=home)
        for record in target.objects():
            record.pop("manifest", None)
            records.append({**record, "running": target._running(record)})
    return records


def stop_local_serving(home: Path | None = None) -> list[str]:
    """Stop and forget every local serving object under `home` (for `mlops down`); ports
    stay allocated. Returns `<namespace>/<Kind>/<name>` of what was removed."""
    home = Path(home) if home else LocalTarget().home
    removed = []
    for folder in sorted(p for p in (home / "serving").glob("*") if p.is_dir()):
        target = LocalTarget(folder.name, home=home)
        names = [f"{folder.name}/{r['kind']}/{r['name']}" for r in target.objects()]
        target.delete_all()
        removed += names
    return removed


# --------------------------------------------------------------------------- choosing
def default_namespace() -> str:
    return os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE


def target_kind() -> str:
    kind = (os.environ.get(TARGET_ENV) or "local").strip().lower()
    if kind not in ("local", "kubernetes"):
        raise ValueError(f"{TARGET_ENV} must be 'local' or 'kubernetes', got {kind!r}")
    return kind


def target_from_env(namespace: str | None = None) -> DeployTarget:
    """`MLOPS_DEPLOY_TARGET` (default local); namespace default `MLOPS_SERVING_NAMESPACE`."""
    namespace = namespace or default_namespace()
    if target_kind() == "kubernetes":
        return KubernetesTarget(namespace)
    return LocalTarget(namespace)


def serving_config_from_env(namespace: str | None = None) -> Any:
    """`ServingConfig` for the target: namespace, predictor image (`MLOPS_PREDICTOR_IMAGE`,
    `repo:tag`), tracking URI (`MLFLOW_TRACKING_URI`)."""
    from airflow_project.serving.constants import DEFAULT_TRACKING_URI
    from airflow_project.serving.manifests import ServingConfig

    image, tag = DEFAULT_PREDICTOR_IMAGE, DEFAULT_PREDICTOR_TAG
    ref = os.environ.get(IMAGE_ENV, "").strip()
    if ref:
        repo, _, maybe_tag = ref.rpartition(":")
        if repo and "/" not in maybe_tag:
            image, tag = repo, maybe_tag
        else:
            image = ref
    return ServingConfig(
        namespace=namespace or default_namespace(),
        image=image,
        image_tag=tag,
        tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI,
    )


__all__ = [
    "RESOURCES",
    "DeployError",
    "DeployTarget",
    "DeployTimeout",
    "KubernetesTarget",
    "LocalTarget",
    "default_namespace",
    "kubernetes_api",
    "serving_config_from_env",
    "target_from_env",
    "target_kind",
]
