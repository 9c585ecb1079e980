"""The local deploy target: a serving controller that reconciles the same manifests into
processes on 127.0.0.1 (`InferenceService` -> a predictor, `InferenceGraph` and the Istio
mirror `VirtualService` -> a graph router). It is built with its home and first port by
its caller (`target_from_env()`, `mlops up`, tests); state, ports and rules are described
in the README ("Deploying").
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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_project.host.files import tail, write_atomic
from airflow_project.host.net import http_ok, listens, port_is_free
from airflow_project.host.processes import (
    alive,
    orphaned_members,
    stop_orphaned_group,
    stop_process_groups,
)
from airflow_project.serving.constants import (
    DEFAULT_HOST,
    DEFAULT_NAMESPACE,
    INFERENCE_GRAPH,
    INFERENCE_SERVICE,
    PREDICTOR_SERVICE_SUFFIX,
    ROUTER_READINESS_PATH,
    SERVED_MODEL_NAME,
    VIRTUAL_SERVICE,
)
from airflow_project.serving.targets import (
    DEFAULT_TIMEOUT_S,
    DeployError,
    DeployTimeout,
    manifest_identity,
    resource_type,
)
from airflow_project.settings import REPO_ROOT

log = logging.getLogger(__name__)

CAPTURE = "Capture"
"""The local capture process's record kind (one per namespace, named CAPTURE_NAME): not a
Kubernetes object, the local stand-in for the InferenceService logger (KServe's agent)."""
CAPTURE_NAME = "capture"
CAPTURE_MODULE = "airflow_project.monitoring.capture_process"
CAPTURE_ENV = "MLOPS_CAPTURE"
"""`0` turns capture off for the controllers `target_from_env()` builds (default on)."""


def capture_enabled() -> bool:
    return os.environ.get(CAPTURE_ENV, "1").strip() not in ("0", "false", "no", "off")


def capture_state_dir(home: Path, namespace: str) -> Path:
    """The capture process's own files (offsets, status.json) among the controller's state."""
    return Path(home) / "serving" / namespace / "capture"


def read_capture_status(home: Path, namespace: str) -> dict[str, Any] | None:
    """The capture process's counts as it last wrote them (None before it has)."""
    try:
        return json.loads((capture_state_dir(home, namespace) / "status.json").read_text())
    except (OSError, ValueError):
        return None


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
    model_uri = _arg(args, "--model-uri", "--model_uri")
    if not model_uri:
        raise ValueError(f"InferenceService {manifest['metadata']['name']}: no model URI")
    return {
        "model_uri": model_uri,
        "model_name": _arg(args, "--model_name", "--name", "--model-name") or SERVED_MODEL_NAME,
        "tracking_uri": env.get("MLFLOW_TRACKING_URI") or os.environ.get("MLFLOW_TRACKING_URI", ""),
    }


@dataclass(frozen=True)
class Readiness:
    """Whether a local serving object serves (`ready`), and if not fully, why.

    A graph router is ready when it answers and every Hard step is ready. A Soft step that
    is not ready leaves it `degraded` and not ready: KServe's router (and this one) answers
    500 when a step cannot be reached, Soft or not, so a Sequence with a dead shadow fails
    every request. A mirror router with a dead shadow is ready and degraded: the primary
    answers, only the copies are lost."""

    ready: bool
    reason: str = ""
    degraded: bool = False


def _routes(record: Mapping[str, Any]) -> dict[str, bool]:
    """serviceName -> whether a request fails without it (Hard) for a router's record."""
    manifest = record.get("manifest") or {}
    if record["kind"] == VIRTUAL_SERVICE:
        route = manifest["spec"]["http"][0]
        return {LocalTarget._service_from_host(route["route"][0]["destination"]["host"]): True,
                LocalTarget._service_from_host(route["mirror"]["host"]): False}
    steps = [step for node in ((manifest.get("spec") or {}).get("nodes") or {}).values()
             for step in node.get("steps") or []]
    # KServe's default dependency is Soft
    return {step["serviceName"]: step.get("dependency") == "Hard" for step in steps if step.get("serviceName")}


class LocalTarget:
    """The local serving controller for one namespace under `home`; ports are allocated
    from `base_port` upwards (None: allocate none) and kept per name in
    `<home>/serving/ports.json`."""

    name = "local"

    def __init__(
        self,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        home: Path,
        base_port: int | None = None,
        python: str = sys.executable,
        poll_interval: float = 0.3,
        capture: bool = False,
    ) -> None:
        self.namespace = namespace
        self.home = Path(home)
        self.base_port = base_port
        self.python = python
        self.poll_interval = poll_interval
        self.capture = capture
        """Start the capture process (`monitoring.capture_process`) with the first predictor."""

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
        if self.base_port is None:
            raise DeployError(f"no port for {key}: this controller was built without a base port")
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
        kind, name = manifest_identity(manifest, self.namespace)
        self._reconcile(kind, name, manifest)
        if kind == INFERENCE_SERVICE and self.capture:
            self.ensure_capture()

    def _reconcile(self, kind: str, name: str, manifest: Mapping[str, Any]) -> None:
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
                "pid": pid, "pgid": pid, "create_time": _create_time(pid), "port": port,
                "host": DEFAULT_HOST, "url": f"http://{DEFAULT_HOST}:{port}", "argv": argv,
                "log": str(self._log_path(kind, name)), "started_at": time.time(),
                "ready_path": extra["ready_path"], "manifest": manifest,
            })
            log.info("%s %s: started pid %d on port %d", kind, name, pid, port)

    def ensure_capture(self) -> None:
        """The namespace's capture process, started (and recorded) unless it runs already.
        It follows every InferenceService's log; it has no port."""
        with self._locked():
            current = self.state(CAPTURE, CAPTURE_NAME)
            if current and self._running(current):
                return
            if current:
                self._stop(current)
            argv = [self.python, "-m", CAPTURE_MODULE, "--home", str(self.home), "--namespace", self.namespace]
            pid = self._start(CAPTURE, CAPTURE_NAME, argv, None)
            self._write_json(self.state_path(CAPTURE, CAPTURE_NAME), {
                "kind": CAPTURE, "name": CAPTURE_NAME, "namespace": self.namespace, "pid": pid, "pgid": pid,
                "create_time": _create_time(pid), "port": None, "url": None, "argv": argv,
                "log": str(self._log_path(CAPTURE, CAPTURE_NAME)), "started_at": time.time(),
                "ready_path": None, "manifest": None,
            })
            log.info("capture of namespace %s: started pid %d", self.namespace, pid)

    def _plan(
        self, kind: str, name: str, manifest: Mapping[str, Any], port: int
    ) -> tuple[list[str], dict[str, Any], dict[str, Any] | None]:
        if kind == INFERENCE_SERVICE:
            p = predictor_args(manifest)
            argv = [self.python, "-m", "airflow_project.serving", "--model-uri", p["model_uri"],
                    "--name", p["model_name"], "--host", DEFAULT_HOST, "--port", str(port)]
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
                "--host", DEFAULT_HOST, "--port", str(port)]
        return argv, {"ready_path": ROUTER_READINESS_PATH, "services": services}, config

    @staticmethod
    def _service_from_host(host: str) -> str:
        short = host.split(".", 1)[0]
        return short.removesuffix(PREDICTOR_SERVICE_SUFFIX)

    def _running(self, record: Mapping[str, Any]) -> bool:
        return alive(record.get("pid"), _identity(record))

    def _start(self, kind: str, name: str, argv: list[str], port: int | None) -> int:
        deadline = time.monotonic() + 15
        while port is not None and not port_is_free(port):
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
        while time.monotonic() < deadline and not alive(proc.pid, (argv[2],)):
            if not alive(proc.pid):
                break  # exited already: wait_ready reports it with the log
            time.sleep(0.02)
        return proc.pid

    def _stop(self, record: Mapping[str, Any], timeout: float = 15.0) -> None:
        """Stop the recorded process group, if it is still the one we started, or what is left
        of it when its leader is gone."""
        if self._running(record):
            stop_process_groups([int(record["pid"])], timeout)
        elif left := self.orphans(record):
            stop_orphaned_group(_group(record), left, timeout)

    def orphans(self, record: Mapping[str, Any]) -> list[Any]:
        """Live members of the record's process group when its leader is gone."""
        if not record.get("pid") or self._running(record):
            return []
        return orphaned_members(_group(record), record.get("create_time") or _started(record))

    def url(self, kind: str, name: str) -> str | None:
        resource_type(kind)
        record = self.state(kind, name)
        return record["url"] if record else None

    def _answers(self, record: Mapping[str, Any]) -> bool:
        """The recorded process runs and its readiness path answers 200."""
        return (listens(record["pid"], record["port"]) and http_ok(record["url"] + record["ready_path"])
                and self._running(record))

    def readiness(self, record: Mapping[str, Any]) -> Readiness:
        """Whether an object serves: a predictor when its readiness path answers; a router when
        it answers and the services its requests need are ready (see `Readiness`); the capture
        process when it runs."""
        if record["kind"] == CAPTURE:
            return Readiness(True) if self._running(record) else Readiness(False, "not running")
        if not self._answers(record):
            return Readiness(False, f"{record['url']}{record['ready_path']} not answering 200")
        if record["kind"] == INFERENCE_SERVICE:
            return Readiness(True)
        down = {s: hard for s, hard in _routes(record).items()
                if not ((svc := self.state(INFERENCE_SERVICE, s)) and self._answers(svc))}
        hard = sorted(s for s, is_hard in down.items() if is_hard)
        if hard:
            return Readiness(False, f"Hard step(s) {', '.join(hard)} not ready")
        if not down:
            return Readiness(True)
        soft = ", ".join(sorted(down))
        if record["kind"] == VIRTUAL_SERVICE:
            return Readiness(True, f"shadow {soft} not ready: the primary answers, copies to it are lost", True)
        return Readiness(False, f"Soft step(s) {soft} not ready: every request fails with 500 (KServe's "
                                "router fails a request on a step's transport error, also for a Soft step)", True)

    def wait_ready(self, kind: str, name: str, timeout: float = DEFAULT_TIMEOUT_S) -> str:
        resource_type(kind)
        deadline = time.monotonic() + timeout
        while True:
            record = self.state(kind, name)
            if record is None:
                raise DeployError(f"{kind} {self.namespace}/{name} is not deployed on the local target")
            state = self.readiness(record)
            if state.ready:
                return record["url"]
            if not self._running(record):
                raise DeployError(
                    f"{kind} {self.namespace}/{name} (pid {record['pid']}, port {record['port']}) exited "
                    f"before it was ready; last log lines of {record['log']}:\n{tail(Path(record['log']))}"
                )
            if time.monotonic() >= deadline:
                raise DeployTimeout(
                    f"{kind} {self.namespace}/{name} not ready after {timeout:.0f}s; conditions: "
                    f"process running (pid {record['pid']}), {state.reason}; "
                    f"last log lines of {record['log']}:\n{tail(Path(record['log']))}"
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

    def stop_all(self) -> list[dict[str, Any]]:
        """Stop every recorded object's processes (routers first) and keep the records, so that
        `restore()` starts them again on the same ports. Returns the records that ran."""
        stopped = []
        with self._locked():
            for record in sorted(self.objects(), key=_routers_first):
                if self._running(record) or self.orphans(record):
                    self._stop(record)
                    stopped.append(record)
        return stopped

    def restore(self, timeout: float = DEFAULT_TIMEOUT_S) -> list[tuple[dict[str, Any], str | None]]:
        """Start every recorded object that does not run, from its recorded manifest, on its
        port (predictors first: the routers' graph files point at them); wait until each is
        ready. Returns `(record, None)` per restored object, `(record, error)` per failure."""
        results: list[tuple[dict[str, Any], str | None]] = []
        started = []
        for record in sorted(self.objects(), key=_routers_first, reverse=True):
            if self._running(record):
                continue
            try:
                if record["kind"] == CAPTURE:
                    self.ensure_capture()
                    results.append((self.state(CAPTURE, CAPTURE_NAME) or record, None))
                    continue
                self.apply(record["manifest"])
                started.append(record)
            except (DeployError, ValueError, KeyError, OSError) as exc:
                results.append((record, f"{type(exc).__name__}: {exc}"))
        for record in started:
            try:
                self.wait_ready(record["kind"], record["name"], timeout)
                results.append((self.state(record["kind"], record["name"]) or record, None))
            except DeployError as exc:
                results.append((record, str(exc)))
        return results


def _routers_first(record: Mapping[str, Any]) -> int:
    """Stop order (restore: the reverse). Capture last: it reads what the predictors wrote
    before they stopped."""
    return {VIRTUAL_SERVICE: 0, INFERENCE_GRAPH: 1, INFERENCE_SERVICE: 2, CAPTURE: 3}.get(record["kind"], 4)


def _identity(record: Mapping[str, Any]) -> tuple[str, ...]:
    """What a recorded process's command line must contain to be the one started (pid reuse)."""
    if record.get("kind") == CAPTURE:
        return (CAPTURE_MODULE, f"--namespace {record.get('namespace')}")
    return ("airflow_project.serving", f"--port {record.get('port')}")


def _group(record: Mapping[str, Any]) -> int:
    return int(record.get("pgid") or record["pid"])


def _started(record: Mapping[str, Any]) -> float | None:
    """A bound for the start of a record written without `create_time` (older releases):
    the process started before the record was written, at most a start timeout earlier."""
    started = record.get("started_at")
    return float(started) - 60.0 if isinstance(started, (int, float)) else None


def _create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _controllers(home: Path, python: str = sys.executable) -> list[LocalTarget]:
    """One controller per namespace that has state under `home` (they allocate no ports)."""
    return [LocalTarget(folder.name, home=home, python=python)
            for folder in sorted((home / "serving").glob("*")) if folder.is_dir()]


def local_serving_objects(home: Path, *, probe: bool = False) -> list[dict[str, Any]]:
    """Every object the local controller runs under `home`, all namespaces, each record
    with `running` and `orphans` (for `mlops status`); with `probe` also `ready`,
    `degraded` and `reason` (see `Readiness`)."""
    records = []
    for target in _controllers(home):
        for record in target.objects():
            running = target._running(record)
            extra: dict[str, Any] = {"running": running,
                                     "orphans": [] if running else [p.pid for p in target.orphans(record)]}
            if probe:
                state = target.readiness(record) if running else Readiness(False, "not running")
                extra.update(ready=state.ready, degraded=state.degraded, reason=state.reason)
            if record["kind"] == CAPTURE:
                extra["capture"] = read_capture_status(home, target.namespace)
            record.pop("manifest", None)
            records.append({**record, **extra})
    return records


def stop_local_serving(home: Path) -> list[str]:
    """Stop every local serving object under `home` (for `mlops down`), keeping their records
    and ports for `restore_local_serving`. Returns `<namespace>/<Kind>/<name>` of what ran."""
    return [target._key(record["kind"], record["name"]) for target in _controllers(home)
            for record in target.stop_all()]


def restore_local_serving(home: Path, timeout: float = DEFAULT_TIMEOUT_S,
                          python: str = sys.executable) -> list[tuple[str, str, str | None]]:
    """Start again what `stop_local_serving` stopped (for `mlops up`): `(key, url, error)`
    per object that was not running, error None when it serves again."""
    return [(target._key(record["kind"], record["name"]), str(record.get("url") or "(no port)"), error)
            for target in _controllers(home, python) for record, error in target.restore(timeout)]
