"""`mlops up` / `mlops status` / `mlops down`: the local platform as supervised processes.

Process model
-------------
Every process `up` starts runs in its own session (process group) with its
output in `<root>/logs/<name>.log`, and gets a pid file `<root>/run/<name>.json`
holding name, pid, port, argv, log path and the process start time. A pid file
only counts while a process with that pid exists, started at the recorded time
and still has a matching command line, so `down` never signals a foreign
process that reused the pid, and `up` reuses what is running and starts the
rest.

Re-running the job
------------------
`prepare_dataset` is triggered for today's date (00:00 UTC). Airflow allows one
run per logical date, so a second `up` the same day does not create another
run: a run that succeeded is reused, one still running is followed, one that
failed is retried (its failed tasks are cleared). The same applies to the
`train_model` run that the Asset event of that `prepare_dataset` run created.
Re-running `up` therefore never retrains or registers a duplicate model
version; the next day (new logical date) does.

A second model
--------------
Shadow serving needs two versions. When `champion` and `challenger` point at the
same version after the day's training (the first day, or a new version that won),
`up` triggers `train_model` once more through the REST API with conf
`{"estimator": "random_forest", "input_path": <today's preprocessed dataset>}`
under the fixed run id `mlops_up__random_forest__<YYYY-MM-DD>`: at most one extra
training per day, reused (or retried, or followed) like the runs above. The
promotion rule decides who is champion. If the random forest wins, both aliases
move to it, and the shadow is the newest other version (the previous champion).

Serving
-------
`up` then deploys the champion as primary and the other version as shadow with
the `deploy_traffic_mirroring` DAG (mirror_mode `graph`, versions passed by
number, service names `wachttijden-primary`, `wachttijden-shadow`,
`wachttijden-graph` in the default serving namespace) and follows that run like
the others; the DAG also logs the shadow comparison to MLflow experiment
`wachttijden-shadow`. The "predictor URL" is the primary InferenceService of that
DAG (the champion's own model server): no separate `deploy_model` run, which
would only start a third process serving the same version.

Re-runs skip the DAG when the local serving controller (`$MLOPS_HOME/serving/`)
already runs all three objects, ready, with the wanted versions; a mirroring run
still queued or running is followed instead of starting another one. So the
decision rests on what actually serves, not on Airflow history: after `down`
(which stops serving) the next `up` redeploys. Before the first deployment `up`
reserves the ports of the three objects in the controller's persisted port
allocation in the order primary, graph, shadow, so a fresh home gets the
loadtest defaults: predictor on `MLOPS_SERVING_PORT` (8100), graph on 8101,
shadow on 8102. `up` ends with the three URLs, a ready-to-paste `curl` for the
predictor and the graph with a real sample row, and the answers it got itself.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import httpx
import psutil

from airflow_project.host.files import tail, write_atomic
from airflow_project.host.net import free_port, http_ok, port_is_free, port_owner
from airflow_project.host.processes import stop_process_groups
from airflow_project.local.airflow_api import (
    FAILED_TASK_STATES,
    TERMINAL_RUN_STATES,
    AirflowApiError,
    AirflowClient,
)
from airflow_project.local.config import AIRFLOW_ADMIN_USER, LocalConfig
from airflow_project.local.services import (
    PrerequisiteError,
    ServiceSpec,
    azurite_spec,
    is_ready,
    mlflow_spec,
)
from airflow_project.settings import REPO_ROOT

PREPARE_DAG = "prepare_dataset"
TRAIN_DAG = "train_model"
MIRROR_DAG = "deploy_traffic_mirroring"
JOB_DAGS: tuple[str, ...] = (PREPARE_DAG, TRAIN_DAG, MIRROR_DAG)
SECOND_ESTIMATOR = "random_forest"
PRIMARY_SERVICE = "wachttijden-primary"
SHADOW_SERVICE = "wachttijden-shadow"
GRAPH_NAME = "wachttijden-graph"
MIRROR_MODE = "graph"
# The InferenceService and InferenceGraph kinds of the local serving controller.
INFERENCE_SERVICE = "InferenceService"
INFERENCE_GRAPH = "InferenceGraph"
MODEL_METRICS = ("r2", "mae", "rmse", "baseline_mae")

AZURITE = "azurite"
MLFLOW = "mlflow"
API_SERVER = "airflow-api-server"
SCHEDULER = "airflow-scheduler"
DAG_PROCESSOR = "airflow-dag-processor"
TRIGGERER = "airflow-triggerer"
SERVICE_NAMES: tuple[str, ...] = (AZURITE, MLFLOW, API_SERVER, SCHEDULER, DAG_PROCESSOR, TRIGGERER)
AIRFLOW_SERVICES: tuple[str, ...] = (API_SERVER, SCHEDULER, DAG_PROCESSOR, TRIGGERER)
# component name in GET /api/v2/monitor/health
HEALTH_COMPONENT = {SCHEDULER: "scheduler", DAG_PROCESSOR: "dag_processor", TRIGGERER: "triggerer"}
PORT_ENV = {AZURITE: "MLOPS_AZURITE_PORT", MLFLOW: "MLOPS_MLFLOW_PORT", API_SERVER: "MLOPS_AIRFLOW_PORT"}


class PlatformError(RuntimeError):
    """A failure of `up` that is explained by its message (no traceback needed)."""


class PortInUseError(PrerequisiteError):
    pass


# ---------------------------------------------------------------------------- pid files
@dataclass
class PidRecord:
    name: str
    pid: int
    port: int | None
    argv: list[str]
    log: str = ""
    create_time: float | None = None  # psutil create_time of the process
    started_at: str = ""  # human-readable, UTC

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> PidRecord:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError("pid file is not a JSON object")
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            port=None if data.get("port") is None else int(data["port"]),
            argv=[str(a) for a in data["argv"]],
            log=str(data.get("log", "")),
            create_time=None if data.get("create_time") is None else float(data["create_time"]),
            started_at=str(data.get("started_at", "")),
        )


def pid_path(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.json"


def write_pid_record(run_dir: Path, record: PidRecord) -> Path:
    return write_atomic(pid_path(run_dir, record.name), record.to_json())


def read_pid_records(run_dir: Path) -> dict[str, PidRecord]:
    """All readable pid files by service name; unreadable ones are ignored."""
    records: dict[str, PidRecord] = {}
    if not run_dir.is_dir():
        return records
    for path in sorted(run_dir.glob("*.json")):
        try:
            record = PidRecord.from_json(path.read_text())
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if record.name == path.stem:
            records[record.name] = record
    return records


def remove_pid_record(run_dir: Path, name: str) -> None:
    pid_path(run_dir, name).unlink(missing_ok=True)


def _normalise(text: str) -> str:
    return text.replace("_", "-")


def cmdline_matches(argv: list[str], cmdline: list[str]) -> bool:
    """Is `cmdline` (of a live process) the process started with `argv`?

    The program may run through an interpreter (`python .venv/bin/airflow ...`,
    `node .../azurite-blob ...`) and may have retitled itself (Airflow's
    api-server shows `airflow api_server -- host:... port:...`), so the check is
    on the program's name and, when there is one, its subcommand.
    """
    if not argv or not cmdline:
        return False
    text = _normalise(" ".join(cmdline))
    program = _normalise(os.path.basename(argv[0]))
    if program not in text:
        return False
    if len(argv) > 1 and not argv[1].startswith("-"):
        return _normalise(argv[1]) in text
    return True


def _process(record: PidRecord) -> psutil.Process | None:
    """The live process a pid file stands for, or None (gone, zombie, pid reused)."""
    try:
        proc = psutil.Process(record.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        # create_time is jiffies since boot + the kernel's btime, which is whole seconds and
        # can move by one between reads: compare with a 2s tolerance.
        if record.create_time is not None and abs(proc.create_time() - record.create_time) > 2.0:
            return None
        cmdline = proc.cmdline()
        for _ in range(10):  # empty for a moment while the process is still being exec'ed
            if cmdline:
                break
            time.sleep(0.05)
            cmdline = proc.cmdline()
        if not cmdline:
            # still unreadable: the start time (checked above) is then the identity
            return proc if record.create_time is not None else None
        if not cmdline_matches(record.argv, cmdline):
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def record_alive(record: PidRecord) -> bool:
    return _process(record) is not None


# Popen objects of processes started by this Python process, so that `down` in
# the same process (tests) can reap them instead of leaving zombies.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def stop_records(records: Iterable[PidRecord], timeout: float = 20.0) -> list[PidRecord]:
    """SIGTERM each live record's process group and descendants; SIGKILL after timeout.

    Only records whose process still matches are touched. Returns those stopped.
    """
    live = [record for record in records if _process(record) is not None]
    stop_process_groups([record.pid for record in live], timeout)
    for record in live:
        child = _CHILDREN.pop(record.pid, None)
        if child is not None:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    return live


def stray_processes(config: LocalConfig) -> list[psutil.Process]:
    """Processes of this home that no pid file accounts for (e.g. `run/` was deleted).

    A process belongs to the home when its command line names a path inside it
    (Azurite's --location, MLflow's SQLite file) or its AIRFLOW_HOME is the
    home's Airflow folder. Pid-file processes, the local serving controller's
    model servers and routers (`serving/`), their descendants and this process's
    own ancestry are excluded. Only reported, never signalled.
    """
    root = str(config.root.resolve())
    airflow_home = str(config.airflow_home.resolve())
    known: set[int] = {os.getpid()}
    try:
        known.update(p.pid for p in psutil.Process().parents())
    except psutil.Error:
        pass
    for record in read_pid_records(config.run).values():
        proc = _process(record)
        if proc is None:
            continue
        known.add(proc.pid)
        try:
            known.update(c.pid for c in proc.children(recursive=True))
        except psutil.Error:
            pass
    for obj in _serving_records(config):
        if obj.get("running") and obj.get("pid"):
            known.add(int(obj["pid"]))
            try:
                known.update(c.pid for c in psutil.Process(int(obj["pid"])).children(recursive=True))
            except psutil.Error:
                pass
    strays: list[psutil.Process] = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid in known:
            continue
        try:
            cmdline = proc.info.get("cmdline") or []
            mine = any(root + os.sep in arg or arg == root for arg in cmdline)
            if not mine and proc.status() != psutil.STATUS_ZOMBIE:
                mine = proc.environ().get("AIRFLOW_HOME") == airflow_home
        except (psutil.Error, OSError):
            continue
        if mine:
            strays.append(proc)
    return strays


def _describe(proc: psutil.Process) -> str:
    try:
        cmd = " ".join(" ".join(proc.cmdline()).split())
    except psutil.Error:
        cmd = "?"
    return f"pid {proc.pid} ({cmd[:159] + '…' if len(cmd) > 160 else cmd})"


def _warn_strays(config: LocalConfig, out: IO[str]) -> None:
    strays = stray_processes(config)
    if strays:
        print(f"\nwarning: {len(strays)} process(es) of {config.root} have no pid file "
              f"(not stopped by `down`; stop them with `kill <pid>`):", file=out)
        for proc in strays[:10]:
            print(f"  {_describe(proc)}", file=out)


# ---------------------------------------------------------------------------- services
@dataclass
class Service:
    """One process of the platform: how to start it and how to tell it is ready."""

    name: str
    argv: list[str]
    port: int | None
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str | None = None  # HTTP path on port; None with a port = TCP connect
    health_component: str | None = None  # ready when healthy in Airflow's health endpoint
    startup_timeout: float = 120.0
    url: str | None = None

    @classmethod
    def from_spec(cls, spec: ServiceSpec) -> Service:
        return cls(
            name=spec.name, argv=list(spec.argv), port=spec.port, env=dict(spec.env),
            ready_path=spec.ready_path, startup_timeout=max(spec.startup_timeout, 120.0),
            url=spec.url,
        )

    def ready(self, health: dict[str, Any] | None) -> bool:
        if self.health_component is not None:
            component = (health or {}).get(self.health_component) or {}
            return component.get("status") == "healthy"
        if self.port is None:
            return True
        return is_ready(ServiceSpec(self.name, self.argv, self.port, self.ready_path))


def _venv_tool(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    hint = "run `make install`" if shutil.which("uv") else (
        "uv is not installed: install it (`python3 -m pip install --user uv`), then run `make install`"
    )
    raise PrerequisiteError(f"`{name}` is not installed next to {sys.executable}: {hint}")


def check_prerequisites() -> None:
    """Node (for Azurite), Azurite itself, and the Python tools of the venv."""
    if shutil.which("node") is None:
        raise PrerequisiteError(
            "Node.js is not installed (`node` not on PATH); Azurite needs it: "
            "install Node.js 20 (https://nodejs.org), then run `make install`"
        )
    if not (REPO_ROOT / "node_modules" / ".bin" / "azurite-blob").exists() and not shutil.which("azurite-blob"):
        raise PrerequisiteError(
            f"Azurite is not installed: run `make install` (or `npm ci` in {REPO_ROOT})"
        )
    for tool in ("airflow", "mlflow"):
        _venv_tool(tool)


def airflow_services(config: LocalConfig) -> list[Service]:
    airflow = _venv_tool("airflow")
    env = config.airflow_env()
    port = config.ports.airflow
    api = Service(
        name=API_SERVER,
        argv=[airflow, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        port=port, env=env, ready_path="/api/v2/monitor/health", url=config.airflow_url,
        startup_timeout=180.0,
    )
    # Logs are local files the api-server reads directly: no log-serving ports needed.
    others = [
        Service(name=SCHEDULER, argv=[airflow, "scheduler", "--skip-serve-logs"], port=None, env=env),
        Service(name=DAG_PROCESSOR, argv=[airflow, "dag-processor"], port=None, env=env),
        Service(name=TRIGGERER, argv=[airflow, "triggerer", "--skip-serve-logs"], port=None, env=env),
    ]
    for service in others:
        service.health_component = HEALTH_COMPONENT[service.name]
        service.startup_timeout = 180.0
    return [api, *others]


def plan_services(config: LocalConfig) -> list[Service]:
    return [
        Service.from_spec(azurite_spec(config.azurite_data, config.ports.azurite)),
        Service.from_spec(mlflow_spec(config.mlflow_data, config.ports.mlflow, config.ports.azurite)),
        *airflow_services(config),
    ]


def configured_ports(config: LocalConfig) -> dict[str, int | None]:
    return {
        AZURITE: config.ports.azurite, MLFLOW: config.ports.mlflow, API_SERVER: config.ports.airflow,
        SCHEDULER: None, DAG_PROCESSOR: None, TRIGGERER: None,
    }


def service_urls(config: LocalConfig) -> dict[str, str | None]:
    return {
        AZURITE: f"http://127.0.0.1:{config.ports.azurite}/devstoreaccount1",
        MLFLOW: config.mlflow_uri, API_SERVER: config.airflow_url,
        SCHEDULER: None, DAG_PROCESSOR: None, TRIGGERER: None,
    }


def port_conflict_message(name: str, port: int, owner: str = "", suggestion: int | None = None) -> str:
    env = PORT_ENV.get(name)
    by = f" by {owner}" if owner else " by another process"
    message = f"port {port} on 127.0.0.1, needed by {name}, is already in use{by}."
    if env:
        example = f"{env}={suggestion}" if suggestion else f"{env}=<port>"
        message += f" Stop that process or choose another port, e.g. `{example} mlops up`."
    else:
        message += " Stop that process."
    return message


_INHERITED_AIRFLOW_PREFIXES = ("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")


def child_env(env: dict[str, str], base: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without its Airflow settings, plus the service's own.

    Airflow settings come only from `LocalConfig.airflow_env()`, so a shell (or a
    test session) with its own AIRFLOW_HOME or AIRFLOW__* variables cannot leak
    into the platform.
    """
    base = dict(os.environ if base is None else base)
    if any(key.startswith("AIRFLOW") for key in env):
        base = {
            k: v for k, v in base.items()
            if k != "AIRFLOW_HOME" and not k.startswith(_INHERITED_AIRFLOW_PREFIXES)
        }
    return {**base, **env}


def _start(service: Service, config: LocalConfig) -> tuple[PidRecord, subprocess.Popen[bytes]]:
    config.logs.mkdir(parents=True, exist_ok=True)
    log_path = config.logs / f"{service.name}.log"
    now = dt.datetime.now(dt.UTC)
    with open(log_path, "ab") as log:
        log.write(f"\n=== {now:%Y-%m-%d %H:%M:%S} UTC mlops up: {' '.join(service.argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            service.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=child_env(service.env), cwd=str(REPO_ROOT),
            start_new_session=True,  # own process group: `down` stops its children too
        )
    _CHILDREN[process.pid] = process
    try:
        create_time: float | None = psutil.Process(process.pid).create_time()
    except psutil.Error:
        create_time = None
    record = PidRecord(
        name=service.name, pid=process.pid, port=service.port, argv=service.argv,
        log=str(log_path), create_time=create_time, started_at=f"{now:%Y-%m-%dT%H:%M:%SZ}",
    )
    write_pid_record(config.run, record)
    return record, process


# ---------------------------------------------------------------------------- output
class Reporter:
    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout
        self.t0 = time.monotonic()

    def elapsed(self) -> str:
        return _duration(time.monotonic() - self.t0)

    def __call__(self, message: str) -> None:
        print(f"[{self.elapsed():>6}] {message}", file=self.out, flush=True)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    return f"{seconds // 60}m{seconds % 60:02d}s"


@dataclass
class StatusRow:
    name: str
    state: str  # running | stopped
    pid: int | None
    port: int | None
    url: str | None
    ready: bool


def format_status(rows: list[StatusRow]) -> str:
    header = ("SERVICE", "STATE", "PID", "PORT", "READY", "URL")
    table = [header] + [
        (
            row.name, row.state, "-" if row.pid is None else str(row.pid),
            "-" if row.port is None else str(row.port),
            ("yes" if row.ready else "no") if row.state == "running" else "-",
            row.url or "-",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line[:-1], widths)) + "  " + line[-1]
        for line in table
    )


def collect_status(config: LocalConfig) -> list[StatusRow]:
    records = read_pid_records(config.run)
    ports = configured_ports(config)
    urls = service_urls(config)
    alive = {name: record_alive(record) for name, record in records.items()}
    health = None
    if alive.get(API_SERVER):
        with AirflowClient(config.airflow_url, AIRFLOW_ADMIN_USER, None) as client:
            health = client.health()
    rows: list[StatusRow] = []
    for name in SERVICE_NAMES:
        record = records.get(name)
        running = bool(record and alive.get(name))
        port = record.port if (record and running) else ports[name]
        if not running:
            ready = False
        elif name in HEALTH_COMPONENT:
            ready = ((health or {}).get(HEALTH_COMPONENT[name]) or {}).get("status") == "healthy"
        elif name == API_SERVER:
            ready = health is not None
        else:
            ready = is_ready(ServiceSpec(name, [], int(port or 0), "/health" if name == MLFLOW else None))
        rows.append(StatusRow(
            name=name, state="running" if running else "stopped",
            pid=record.pid if (record and running) else None, port=port,
            url=urls[name], ready=ready,
        ))
    return rows


# ---------------------------------------------------------------------------- serving objects
def _serving_records(config: LocalConfig) -> list[dict[str, Any]]:
    """The local serving controller's objects under the home (all namespaces), with `running`."""
    from airflow_project.serving.targets.local import local_serving_objects

    try:
        return local_serving_objects(config.root)
    except (OSError, ValueError, KeyError):
        return []


def serving_objects(config: LocalConfig) -> list[dict[str, Any]]:
    """`_serving_records` plus `ready` (the readiness endpoint answers 200) for running ones."""
    objects = _serving_records(config)
    for obj in objects:
        obj["ready"] = bool(obj.get("running")) and http_ok(f"{obj.get('url')}{obj.get('ready_path') or ''}")
    return objects


def format_serving(objects: list[dict[str, Any]]) -> str:
    """The serving part of `mlops status`: one line per InferenceService / graph router."""
    header = ("SERVING", "KIND", "STATE", "PID", "PORT", "READY", "URL")
    table = [header] + [
        (
            f"{obj.get('namespace', '?')}/{obj.get('name', '?')}", str(obj.get("kind", "?")),
            "running" if obj.get("running") else "stopped",
            str(obj.get("pid") or "-") if obj.get("running") else "-",
            str(obj.get("port") or "-"),
            ("yes" if obj.get("ready") else "no") if obj.get("running") else "-",
            str(obj.get("url") or "-"),
        )
        for obj in objects
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line[:-1], widths)) + "  " + line[-1]
        for line in table
    )


def _stop_serving(config: LocalConfig, out: IO[str], err: IO[str]) -> list[str]:
    from airflow_project.serving.targets.local import stop_local_serving

    if not (config.root / "serving").is_dir():
        return []
    try:
        removed = stop_local_serving(config.root)
    except Exception as exc:  # noqa: BLE001 - the services must still be stopped
        print(f"mlops down: could not stop the local serving objects: {type(exc).__name__}: {exc}", file=err)
        return []
    for name in removed:
        print(f"stopped serving {name}", file=out)
    return removed


# ---------------------------------------------------------------------------- status / down
def status(config: LocalConfig | None = None, out: IO[str] | None = None) -> int:
    """Print each service's and serving object's state; 0 when all are running and ready."""
    config = config or LocalConfig()
    out = out or sys.stdout
    rows = collect_status(config)
    print(format_status(rows), file=out)
    serving = serving_objects(config)
    if serving:
        print("\n" + format_serving(serving), file=out)
    if any(row.state == "running" for row in rows):
        password = config.airflow_password()
        if password and any(r.name == API_SERVER and r.state == "running" for r in rows):
            print(f"\nAirflow UI: {config.airflow_url}  (user {AIRFLOW_ADMIN_USER}, password {password})",
                  file=out)
        print(f"Logs: {config.logs}", file=out)
    else:
        print("\nThe local platform is not running (start it with `make up`).", file=out)
    _warn_strays(config, out)
    services_ok = all(row.state == "running" and row.ready for row in rows)
    serving_ok = all(obj.get("running") and obj.get("ready") for obj in serving)
    return 0 if services_ok and serving_ok else 1


def down(config: LocalConfig | None = None, purge: bool = False, out: IO[str] | None = None,
         err: IO[str] | None = None) -> int:
    """Stop the processes this platform started (only those); `purge` also deletes its data."""
    config = config or LocalConfig()
    out = out or sys.stdout
    err = err or sys.stderr
    # Model servers and routers first: they load models through MLflow, and they were
    # started by Airflow tasks in sessions of their own (not descendants of a service).
    stopped_serving = _stop_serving(config, out, err)
    records = read_pid_records(config.run)
    # All at once (SIGTERM, then SIGKILL after 10s): the triggerer alone takes ~12s to exit
    # gracefully, and nothing is lost by not waiting for Airflow before storage.
    ordered = [records[n] for n in (*reversed(AIRFLOW_SERVICES), MLFLOW, AZURITE) if n in records]
    ordered += [r for n, r in records.items() if n not in SERVICE_NAMES]
    stopped = {r.name for r in stop_records(ordered, timeout=10.0)}
    for record in ordered:
        if record.name in stopped:
            print(f"stopped {record.name} (pid {record.pid})", file=out)
        else:
            print(f"{record.name} was not running (removed stale pid file)", file=out)
        remove_pid_record(config.run, record.name)
    if not records and not stopped_serving:
        print("nothing to stop: no process of the local platform is running", file=out)
    _warn_strays(config, err)
    leftovers = [r.name for r in read_pid_records(config.run).values() if record_alive(r)]
    if leftovers:
        print(f"mlops down: could not stop {', '.join(leftovers)}", file=err)
        return 1
    if purge:
        try:
            removed = purge_data(config)
        except PlatformError as exc:
            print(f"mlops down: {exc}", file=err)
            return 1
        print(f"purged {removed}", file=out)
    elif records:
        print(f"data kept in {config.root} (`make down PURGE=1` deletes it)", file=out)
    return 0


PURGED_FOLDERS = ("logs", "run", "azurite", "mlflow", "airflow", "serving")


def purge_data(config: LocalConfig) -> str:
    """Delete the platform's folders under root, and root itself when nothing else is left."""
    root = config.root.resolve()
    unsafe = {Path("/"), Path.home().resolve(), REPO_ROOT.resolve(), *REPO_ROOT.resolve().parents}
    if root in unsafe:
        raise PlatformError(f"refusing to purge {root}: MLOPS_HOME must be a folder of its own")
    for name in PURGED_FOLDERS:
        shutil.rmtree(root / name, ignore_errors=True)
    try:
        root.rmdir()
    except OSError:
        pass
    return str(root)


# ---------------------------------------------------------------------------- up
def up(config: LocalConfig | None = None, rows: int = 20000, timeout: float = 1200.0,
       out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """Start (or reuse) every service and run prepare_dataset -> train_model once for today.

    Exit codes: 0 done, 1 the job or a service failed, 2 a prerequisite is
    missing or a port is taken, 130 interrupted (services keep running).
    """
    config = config or LocalConfig()
    err = err or sys.stderr
    report = Reporter(out)
    deadline = time.monotonic() + timeout
    try:
        check_prerequisites()
        with _single_up(config):
            _start_services(config, rows, report, deadline)
            summary = _run_job(config, report, deadline)
    except PrerequisiteError as exc:
        print(f"mlops up: {exc}", file=err, flush=True)
        return 2
    except (PlatformError, AirflowApiError, TimeoutError) as exc:
        print(f"mlops up: {exc}", file=err, flush=True)
        print(f"mlops up: logs are in {config.logs}; `mlops status` shows what runs, "
              "`make down` stops it", file=err, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\nmlops up: interrupted; started services keep running (`make down` stops them)",
              file=err, flush=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for humans, the traceback in a file
        log = _write_traceback(config)
        print(f"mlops up: unexpected error: {type(exc).__name__}: {exc}", file=err, flush=True)
        print(f"mlops up: the traceback is in {log}; `make down` stops the services", file=err, flush=True)
        return 1
    print(summary, file=report.out, flush=True)
    return 0


def _write_traceback(config: LocalConfig) -> Path:
    config.logs.mkdir(parents=True, exist_ok=True)
    path = config.logs / "mlops-up.log"
    with open(path, "a") as log:
        log.write(f"\n=== {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC\n{traceback.format_exc()}")
    return path


@contextlib.contextmanager
def _single_up(config: LocalConfig) -> Iterator[None]:
    """One `up` at a time per MLOPS_HOME, so two terminals cannot start two copies."""
    config.run.mkdir(parents=True, exist_ok=True)
    with open(config.run / "up.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PlatformError(
                f"another `mlops up` is running for {config.root}; wait for it or stop it"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _start_services(config: LocalConfig, rows: int, report: Reporter, deadline: float) -> None:
    services = plan_services(config)
    records = read_pid_records(config.run)
    running: dict[str, PidRecord] = {}
    to_start: list[Service] = []
    problems: list[str] = []
    for service in services:
        record = records.get(service.name)
        if record is not None and record_alive(record):
            if record.port != service.port:
                problems.append(
                    f"{service.name} is already running on port {record.port} but port "
                    f"{service.port} is configured: run `mlops down` first to change ports"
                )
            running[service.name] = record
            continue
        if record is not None:
            remove_pid_record(config.run, service.name)
        if service.port is not None and not port_is_free(service.port):
            problems.append(port_conflict_message(
                service.name, service.port, port_owner(service.port), free_port()))
        to_start.append(service)
    if problems:
        raise PortInUseError("\n  ".join(problems) if len(problems) == 1 else
                             "cannot start the local platform:\n  " + "\n  ".join(problems))

    for name, record in running.items():
        report(f"{name} already running (pid {record.pid}), reusing it")
    by_name = {s.name: s for s in services}
    starting = {s.name for s in to_start}
    processes: dict[str, subprocess.Popen[bytes]] = {}

    def launch(names: Iterable[str]) -> None:
        for name in names:
            if name in starting:
                record, process = _start(by_name[name], config)
                processes[name] = process
                report(f"started {name} (pid {record.pid}{'' if record.port is None else f', port {record.port}'})")

    # Storage first; the Airflow database migration (idempotent) runs meanwhile.
    launch([AZURITE, MLFLOW])
    migrate = None
    if starting & set(AIRFLOW_SERVICES):
        migrate = _start_migration(config)
        report("migrating the Airflow database (airflow db migrate)")
    _wait_ready([by_name[AZURITE]], processes, config, report, deadline)
    # The raw export is in place before the scheduler can start a run that reads it.
    _prepare_data_lake(config, report)
    _upload_raw_export(config, rows, report)
    if migrate is not None:
        _finish_migration(migrate, config, deadline)
        report("Airflow database is up to date")
    launch(AIRFLOW_SERVICES)
    _wait_ready([s for s in services if s.name != AZURITE], processes, config, report, deadline)


def _start_migration(config: LocalConfig) -> subprocess.Popen[bytes]:
    config.logs.mkdir(parents=True, exist_ok=True)
    with open(config.logs / "airflow-db-migrate.log", "ab") as log:
        return subprocess.Popen(
            [_venv_tool("airflow"), "db", "migrate"], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=child_env(config.airflow_env()), cwd=str(REPO_ROOT),
        )


def _finish_migration(process: subprocess.Popen[bytes], config: LocalConfig, deadline: float) -> None:
    try:
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        raise TimeoutError("`airflow db migrate` did not finish in time") from None
    if code != 0:
        log = config.logs / "airflow-db-migrate.log"
        raise PlatformError(f"`airflow db migrate` failed (exit {code}); last log lines:\n{tail(log)}")


def _wait_ready(services: list[Service], processes: dict[str, subprocess.Popen[bytes]],
                config: LocalConfig, report: Reporter, deadline: float) -> None:
    pending = {s.name: s for s in services}
    started = time.monotonic()
    reported_waiting = False
    health_client = AirflowClient(config.airflow_url, AIRFLOW_ADMIN_USER, None)
    try:
        while pending:
            needs_health = any(s.health_component for s in pending.values())
            health = health_client.health() if needs_health else None
            for name, service in list(pending.items()):
                process = processes.get(name)
                if process is not None and process.poll() is not None:
                    log = config.logs / f"{name}.log"
                    raise PlatformError(
                        f"{name} exited with code {process.returncode} during start-up; "
                        f"last lines of {log}:\n{tail(log)}"
                    )
                if service.ready(health):
                    del pending[name]
                    if name in processes:
                        report(f"{name} is ready")
            if not pending:
                return
            waited = time.monotonic() - started
            limit = max(s.startup_timeout for s in pending.values())
            if waited > limit or time.monotonic() > deadline:
                names = sorted(pending)
                tails = "\n".join(
                    f"--- {config.logs / (n + '.log')}\n{tail(config.logs / (n + '.log'), 10)}" for n in names
                )
                raise TimeoutError(f"not ready after {waited:.0f}s: {', '.join(names)}\n{tails}")
            if waited > 20 and not reported_waiting:
                report(f"waiting for {', '.join(sorted(pending))} ...")
                reported_waiting = True
            time.sleep(1.0)
    finally:
        health_client.close()


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _prepare_data_lake(config: LocalConfig, report: Reporter) -> None:
    from airflow_project.datalake import CONTAINERS, DataLake

    DataLake.from_connection_string(config.azurite_connection_string).ensure_containers()
    report(f"data lake containers ready: {', '.join(CONTAINERS)}")


def _upload_raw_export(config: LocalConfig, rows: int, report: Reporter) -> str:
    from airflow_project.datalake import RAW_CONTAINER, BlobRef, DataLake, dataset_path
    from airflow_project.wachttijden.synthetic import SyntheticConfig, generate, to_raw_bytes

    lake = DataLake.from_connection_string(config.azurite_connection_string)
    today = _today()
    ref = BlobRef(RAW_CONTAINER, dataset_path(today))
    if lake.exists(ref):
        report(f"raw export for {today} already in the data lake: {ref}")
        return str(ref)
    seed = int(today.strftime("%Y%m%d"))
    data = to_raw_bytes(generate(SyntheticConfig(rows=rows, seed=seed)))
    lake.write(ref, data)
    report(f"uploaded a generated raw export ({rows} rows, seed {seed}) to {ref}")
    return str(ref)


# ---------------------------------------------------------------------------- the job
def _run_job(config: LocalConfig, report: Reporter, deadline: float) -> str:
    password = _wait_for(lambda: config.airflow_password(), deadline, "the Airflow admin password file")
    with AirflowClient(config.airflow_url, AIRFLOW_ADMIN_USER, password) as api:
        _wait_for_dags(api, report, deadline, dag_ids=JOB_DAGS)
        logical_date = dt.datetime.combine(_today(), dt.time(0), tzinfo=dt.UTC)
        prepare = _ensure_prepare_run(api, logical_date, report)
        prepare = _follow_run(api, PREPARE_DAG, prepare, report, deadline)
        train = _find_asset_run(api, prepare["dag_run_id"], report, deadline)
        train = _follow_run(api, TRAIN_DAG, train, report, deadline)
        registry = _registry_state(config)
        if needs_second_model(registry):
            report(f"only one model version behind champion/challenger (version {registry.champion}): "
                   f"training a second estimator ({SECOND_ESTIMATOR}) so that there is a shadow to serve")
            second = _ensure_second_model_run(api, _today(), report)
            _follow_run(api, TRAIN_DAG, second, report, deadline)
            registry = _registry_state(config)
        primary, shadow = serving_versions(registry)
        endpoints = _ensure_mirroring(api, config, primary, shadow, report, deadline)
    models = [_model_summary(config, version, registry) for version in dict.fromkeys((primary, shadow))]
    demo = _try_it(endpoints)
    comparison = _shadow_comparison(config)
    return _final_summary(config, password, models, endpoints, demo, comparison, report)


def _wait_for(probe: Callable[[], Any], deadline: float, what: str, interval: float = 1.0) -> Any:
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


def _wait_for_dags(api: AirflowClient, report: Reporter, deadline: float,
                   wait: float = 300.0, wait_with_errors: float = 60.0,
                   dag_ids: tuple[str, ...] = (PREPARE_DAG, TRAIN_DAG)) -> None:
    """Until the DAGs are parsed; import errors that persist for a minute fail early."""
    report(f"waiting for the DAGs {', '.join(dag_ids[:-1])} and {dag_ids[-1]} to be parsed")
    started = time.monotonic()
    errors_reported: set[str] = set()
    while True:
        dags = {dag_id: api.get_dag(dag_id) for dag_id in dag_ids}
        if all(dags.values()):
            break
        errors = api.import_errors()
        for error in errors:
            key = f"{error.get('filename')}:{error.get('timestamp')}"
            if key not in errors_reported:
                errors_reported.add(key)
                first = str(error.get("stack_trace", "")).strip().splitlines()[-1:] or [""]
                report(f"DAG import error in {error.get('filename')}: {first[0]}")
        now = time.monotonic()
        limit = started + (wait_with_errors if errors else wait)
        if now > limit or now > deadline:
            missing = [d for d, v in dags.items() if not v]
            detail = "".join(
                f"\n--- {e.get('filename')}\n{str(e.get('stack_trace', '')).strip()[-1500:]}" for e in errors
            )
            raise PlatformError(
                f"DAG(s) {', '.join(missing)} not found in Airflow after {now - started:.0f}s"
                + (f"; import errors:{detail}" if errors else
                   "; see logs/airflow-dag-processor.log")
            )
        time.sleep(2.0)
    for dag_id, dag in dags.items():
        if dag and dag.get("is_paused"):
            api.unpause(dag_id)
            report(f"unpaused {dag_id}")
    report("DAGs are parsed")


def _ensure_prepare_run(api: AirflowClient, logical_date: dt.datetime, report: Reporter) -> dict[str, Any]:
    """The prepare_dataset run for logical_date: reused, retried or newly triggered."""
    for attempt in range(3):
        existing = api.runs_for_logical_date(PREPARE_DAG, logical_date)
        if existing:
            run = existing[0]
            return _reuse_run(api, PREPARE_DAG, run, report)
        response = api.trigger(PREPARE_DAG, logical_date, note="triggered by mlops up")
        if response.status_code in (200, 201):
            run = response.json()
            report(f"triggered {PREPARE_DAG} run {run['dag_run_id']} "
                   f"(logical date {logical_date:%Y-%m-%d})")
            return run
        if response.status_code != 409:  # 409: the scheduler created it meanwhile
            raise AirflowApiError(
                f"triggering {PREPARE_DAG} failed: HTTP {response.status_code} {response.text[:300]}"
            )
    raise PlatformError(f"could not trigger or find the {PREPARE_DAG} run for {logical_date:%Y-%m-%d}")


def _reuse_run(api: AirflowClient, dag_id: str, run: dict[str, Any], report: Reporter) -> dict[str, Any]:
    state = run.get("state")
    run_id = run["dag_run_id"]
    if state == "success":
        report(f"{dag_id} run {run_id} already succeeded: reusing it (no new run)")
    elif state == "failed":
        api.clear_failed(dag_id, run_id)
        report(f"{dag_id} run {run_id} had failed: cleared its failed tasks to retry them")
        run = api.get_run(dag_id, run_id)
    else:
        report(f"{dag_id} run {run_id} is {state}: following it")
    return run


def _find_asset_run(api: AirflowClient, source_run_id: str, report: Reporter,
                    deadline: float, wait: float = 180.0) -> dict[str, Any]:
    """The train_model run that consumed the Asset event of the given prepare_dataset run."""
    report(f"waiting for the {TRAIN_DAG} run triggered by the Asset event of {source_run_id}")
    limit = min(deadline, time.monotonic() + wait)
    checked: set[str] = set()
    while True:
        for run in api.runs(TRAIN_DAG, run_type="asset_triggered", order_by="-run_after", limit=20):
            run_id = run["dag_run_id"]
            if run_id in checked:
                continue
            try:
                events = api.upstream_asset_events(TRAIN_DAG, run_id)
            except AirflowApiError as exc:
                # Airflow 3.3.2 answers 500 here while the asset-triggered run has not
                # started yet (start_date None fails its response model): ask again later.
                if exc.status == 500:
                    continue
                raise
            if any(e.get("source_run_id") == source_run_id and e.get("source_dag_id") == PREPARE_DAG
                   for e in events):
                if run.get("state") in TERMINAL_RUN_STATES:
                    return _reuse_run(api, TRAIN_DAG, run, report)
                report(f"{TRAIN_DAG} run {run_id} was created by the Asset event")
                return run
            checked.add(run_id)
        if time.monotonic() > limit:
            raise PlatformError(
                f"no {TRAIN_DAG} run was created from the Asset event of {PREPARE_DAG} run "
                f"{source_run_id}; check that {TRAIN_DAG} is scheduled on the Asset {PREPARE_DAG} emits "
                f"and see {api.base_url}/dags/{TRAIN_DAG}"
            )
        time.sleep(2.0)


def _follow_run(api: AirflowClient, dag_id: str, run: dict[str, Any], report: Reporter,
                deadline: float) -> dict[str, Any]:
    """Poll a run, printing each task's state changes, until it finishes."""
    run_id = run["dag_run_id"]
    seen: dict[str, str] = {}
    started = time.monotonic()
    first = True
    while True:
        run = api.get_run(dag_id, run_id)
        tasks = api.task_instances(dag_id, run_id)
        for ti in sorted(tasks, key=lambda t: (t.get("start_date") or "~", t["task_id"])):
            key = ti["task_id"] if ti.get("map_index", -1) in (-1, None) else f"{ti['task_id']}[{ti['map_index']}]"
            state = ti.get("state") or "none"
            if seen.get(key) != state:
                seen[key] = state
                if state not in ("none", "scheduled"):
                    duration = ti.get("duration")
                    took = f" in {duration:.1f}s" if isinstance(duration, (int, float)) and state == "success" else ""
                    report(f"  {dag_id}.{key}: {state}{took}")
        state = run.get("state")
        if state == "success":
            took = "" if first else f" ({_duration(time.monotonic() - started)})"
            report(f"{dag_id} run {run_id} succeeded{took}")
            return run
        first = False
        if state == "failed":
            raise PlatformError(_failure_message(api, dag_id, run_id, tasks))
        if time.monotonic() > deadline:
            unfinished = [t["task_id"] for t in tasks if t.get("state") not in ("success", "skipped")]
            detail = ""
            for ti in tasks:
                if ti.get("state") == "running":
                    detail += _task_log_tail(api, dag_id, run_id, ti)
            raise TimeoutError(
                f"{dag_id} run {run_id} still {state} at the timeout; unfinished tasks: "
                f"{', '.join(unfinished) or '-'}{detail}"
            )
        time.sleep(2.0)


def _task_log_tail(api: AirflowClient, dag_id: str, run_id: str, ti: dict[str, Any], lines: int = 25) -> str:
    try_number = int(ti.get("try_number") or 1)
    text = ""
    try:
        text = api.task_log(dag_id, run_id, ti["task_id"], try_number)
    except (AirflowApiError, OSError):
        pass
    body = "\n".join(text.splitlines()[-lines:]) if text.strip() else "(no log)"
    return f"\n--- log of {dag_id}.{ti['task_id']} (try {try_number}), last lines:\n{body}"


def _failure_message(api: AirflowClient, dag_id: str, run_id: str, tasks: list[dict[str, Any]]) -> str:
    failed = [t for t in tasks if t.get("state") == "failed"] or \
             [t for t in tasks if t.get("state") in FAILED_TASK_STATES]
    names = ", ".join(t["task_id"] for t in failed) or "unknown task"
    message = f"{dag_id} run {run_id} failed (failed task: {names})"
    for ti in failed[:2]:
        message += _task_log_tail(api, dag_id, run_id, ti)
    message += f"\nSee {api.base_url}/dags/{dag_id}/runs/{run_id}"
    return message


# ---------------------------------------------------------------------------- models
@dataclass(frozen=True)
class RegistryState:
    """Registered versions of the model and where its aliases point (version numbers)."""

    versions: tuple[int, ...]
    champion: int | None
    challenger: int | None


def needs_second_model(state: RegistryState) -> bool:
    """True when champion and challenger are one version (or missing): nothing to shadow yet."""
    return len({v for v in (state.champion, state.challenger) if v is not None}) < 2


def serving_versions(state: RegistryState) -> tuple[int, int]:
    """(primary, shadow): the champion, and the challenger when it differs, else the newest
    other version (the previous champion, after a challenger won); the champion itself
    when it is the only version."""
    if state.champion is None:
        raise PlatformError("the MLflow registry has no champion version to serve")
    if state.challenger is not None and state.challenger != state.champion:
        return state.champion, state.challenger
    others = [v for v in state.versions if v != state.champion]
    return state.champion, max(others) if others else state.champion


def _mlflow_client(config: LocalConfig) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=config.mlflow_uri, registry_uri=config.mlflow_uri)


def _registry_state(config: LocalConfig) -> RegistryState:
    from mlflow.exceptions import MlflowException

    from airflow_project.registry import CHALLENGER, CHAMPION
    from airflow_project.wachttijden.schema import MODEL_NAME

    client = _mlflow_client(config)
    versions = tuple(sorted(int(v.version) for v in client.search_model_versions(f"name='{MODEL_NAME}'")))
    if not versions:
        raise PlatformError(f"{TRAIN_DAG} succeeded but MLflow has no version of model {MODEL_NAME!r}")
    aliases: dict[str, int | None] = {}
    for alias in (CHAMPION, CHALLENGER):
        try:
            aliases[alias] = int(client.get_model_version_by_alias(MODEL_NAME, alias).version)
        except MlflowException:
            aliases[alias] = None
    return RegistryState(versions=versions, champion=aliases[CHAMPION], challenger=aliases[CHALLENGER])


def second_model_run_id(day: dt.date) -> str:
    return f"mlops_up__{SECOND_ESTIMATOR}__{day:%Y-%m-%d}"


def second_model_conf(day: dt.date) -> dict[str, Any]:
    """train_model params of the second model: today's preprocessed dataset, another estimator."""
    from airflow_project.datalake import PREPROCESSED_CONTAINER, dataset_path

    return {"estimator": SECOND_ESTIMATOR, "input_path": f"{PREPROCESSED_CONTAINER}/{dataset_path(day)}"}


def _existing_run(api: AirflowClient, dag_id: str, run_id: str) -> dict[str, Any] | None:
    try:
        return api.get_run(dag_id, run_id)
    except AirflowApiError as exc:
        if exc.status == 404:
            return None
        raise


def _ensure_second_model_run(api: AirflowClient, day: dt.date, report: Reporter) -> dict[str, Any]:
    """The day's extra train_model run (fixed run id): reused, retried or newly triggered."""
    run_id = second_model_run_id(day)
    for _ in range(2):
        run = _existing_run(api, TRAIN_DAG, run_id)
        if run is not None:
            return _reuse_run(api, TRAIN_DAG, run, report)
        conf = second_model_conf(day)
        response = api.trigger(TRAIN_DAG, None, note="second model, triggered by mlops up",
                               conf=conf, run_id=run_id)
        if response.status_code in (200, 201):
            report(f"triggered {TRAIN_DAG} run {run_id} (estimator {conf['estimator']}, "
                   f"input {conf['input_path']})")
            return response.json()
        if response.status_code != 409:
            raise AirflowApiError(
                f"triggering {TRAIN_DAG} failed: HTTP {response.status_code} {response.text[:300]}",
                response.status_code,
            )
    raise PlatformError(f"could not trigger or find the {TRAIN_DAG} run {run_id}")


@dataclass
class ModelSummary:
    name: str
    version: str
    aliases: list[str]
    metrics: dict[str, float]
    decision: str
    estimator: str = ""


def _model_summary(config: LocalConfig, version: int, registry: RegistryState) -> ModelSummary:
    from airflow_project.registry import CHALLENGER, CHAMPION
    from airflow_project.wachttijden.schema import MODEL_NAME

    client = _mlflow_client(config)
    mv = client.get_model_version(MODEL_NAME, str(version))
    run = client.get_run(mv.run_id)
    metrics = {k: float(v) for k, v in run.data.metrics.items() if k in MODEL_METRICS}
    decision = (mv.tags or {}).get("promotion_decision") or run.data.tags.get("promotion_decision", "")
    aliases = [a for a, v in ((CHALLENGER, registry.challenger), (CHAMPION, registry.champion)) if v == version]
    return ModelSummary(
        name=MODEL_NAME, version=str(version), aliases=aliases, metrics=metrics, decision=decision,
        estimator=run.data.params.get("estimator", ""),
    )


def format_metrics(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k}={metrics[k]:.3f}" for k in MODEL_METRICS if k in metrics) or "(no metrics)"


# ---------------------------------------------------------------------------- serving
@dataclass(frozen=True)
class Endpoints:
    """Base URLs of what `up` deployed, and the versions behind them."""

    predictor: str
    graph: str
    shadow: str
    primary_version: int
    shadow_version: int
    namespace: str
    deployed: bool = True  # False: found running, the mirroring DAG was skipped

    @property
    def predictor_v1(self) -> str:
        from airflow_project.serving.constants import predict_path

        return self.predictor + predict_path(_served_model_name())

    @property
    def shadow_v1(self) -> str:
        from airflow_project.serving.constants import predict_path

        return self.shadow + predict_path(_served_model_name())


def _served_model_name() -> str:
    from airflow_project.serving.constants import SERVED_MODEL_NAME

    return SERVED_MODEL_NAME


def model_uri(version: int) -> str:
    from airflow_project.wachttijden.schema import MODEL_NAME

    return f"models:/{MODEL_NAME}/{version}"


def mirroring_conf(primary: int, shadow: int) -> dict[str, Any]:
    """deploy_traffic_mirroring params: versions pinned by number, the DAG's default names."""
    return {
        "primary_model": str(primary), "shadow_model": str(shadow),
        "primary_service": PRIMARY_SERVICE, "shadow_service": SHADOW_SERVICE, "graph_name": GRAPH_NAME,
        "mirror_mode": MIRROR_MODE, "timeout_seconds": 300,
    }


def _record_model_uri(obj: dict[str, Any]) -> str | None:
    argv = [str(a) for a in obj.get("argv") or []]
    for i, arg in enumerate(argv[:-1]):
        if arg == "--model-uri":
            return argv[i + 1]
    return None


def find_mirroring(objects: list[dict[str, Any]], namespace: str, primary: int,
                   shadow: int) -> Endpoints | None:
    """The endpoints when primary, shadow and graph all run and are ready with these
    versions in `namespace`; None when anything is missing, stopped or serves another version."""
    by_key = {(o.get("namespace"), o.get("kind"), o.get("name")): o for o in objects}
    wanted = ((INFERENCE_SERVICE, PRIMARY_SERVICE, primary), (INFERENCE_SERVICE, SHADOW_SERVICE, shadow),
              (INFERENCE_GRAPH, GRAPH_NAME, None))
    urls: list[str] = []
    for kind, name, version in wanted:
        obj = by_key.get((namespace, kind, name))
        if obj is None or not obj.get("running") or not obj.get("ready", True) or not obj.get("url"):
            return None
        if version is not None and _record_model_uri(obj) != model_uri(version):
            return None
        urls.append(str(obj["url"]).rstrip("/"))
    return Endpoints(predictor=urls[0], shadow=urls[1], graph=urls[2], primary_version=primary,
                     shadow_version=shadow, namespace=namespace)


def _serving_namespace() -> str:
    from airflow_project.serving.targets import default_namespace

    return default_namespace()


def _reserve_serving_ports(config: LocalConfig, namespace: str) -> None:
    """Allocate primary, graph, shadow ports in this order (no-op for names that have one):
    a fresh home gets predictor 8100, graph 8101, shadow 8102 (the loadtest defaults)
    whatever order the DAG's parallel tasks deploy in."""
    from airflow_project.serving.targets.local import LocalTarget

    target = LocalTarget(namespace, home=config.root, base_port=config.ports.serving)
    target.reserve_ports([(INFERENCE_SERVICE, PRIMARY_SERVICE), (INFERENCE_GRAPH, GRAPH_NAME),
                          (INFERENCE_SERVICE, SHADOW_SERVICE)])


def _ensure_mirroring(api: AirflowClient, config: LocalConfig, primary: int, shadow: int,
                      report: Reporter, deadline: float) -> Endpoints:
    """Champion as primary, the other version as shadow, behind a graph: reused when it
    already serves these versions, else deployed by a deploy_traffic_mirroring run."""
    namespace = _serving_namespace()
    found = find_mirroring(serving_objects(config), namespace, primary, shadow)
    if found is not None:
        report(f"serving already runs version {primary} (primary) and {shadow} (shadow) behind "
               f"{GRAPH_NAME}: not redeploying")
        return replace(found, deployed=False)
    active = [r for r in api.runs(MIRROR_DAG, order_by="-run_after", limit=10)
              if r.get("state") in ("queued", "running")]
    if active:
        report(f"{MIRROR_DAG} run {active[0]['dag_run_id']} is {active[0].get('state')}: following it first")
        _follow_run(api, MIRROR_DAG, active[0], report, deadline)
        found = find_mirroring(serving_objects(config), namespace, primary, shadow)
        if found is not None:
            return found
    _reserve_serving_ports(config, namespace)
    run_id = f"mlops_up__v{primary}-v{shadow}__{dt.datetime.now(dt.UTC):%Y-%m-%dT%H-%M-%S}"
    response = api.trigger(MIRROR_DAG, None, note="deployed by mlops up",
                           conf=mirroring_conf(primary, shadow), run_id=run_id)
    if response.status_code not in (200, 201):
        raise AirflowApiError(
            f"triggering {MIRROR_DAG} failed: HTTP {response.status_code} {response.text[:300]}",
            response.status_code,
        )
    report(f"triggered {MIRROR_DAG} run {run_id} (primary version {primary}, shadow version {shadow}, "
           f"mirror mode {MIRROR_MODE})")
    _follow_run(api, MIRROR_DAG, response.json(), report, deadline)
    objects = serving_objects(config)
    found = find_mirroring(objects, namespace, primary, shadow)
    if found is None:
        seen = ", ".join(f"{o.get('kind')} {o.get('namespace')}/{o.get('name')} "
                         f"({'ready' if o.get('ready') else 'running' if o.get('running') else 'stopped'})"
                         for o in objects) or "none"
        raise PlatformError(
            f"{MIRROR_DAG} run {run_id} succeeded, but the local serving controller does not run "
            f"{PRIMARY_SERVICE} (version {primary}), {SHADOW_SERVICE} (version {shadow}) and {GRAPH_NAME} "
            f"ready in namespace {namespace!r} (found: {seen}); see {config.logs / 'serving'}"
        )
    return found


# ---------------------------------------------------------------------------- try it
def sample_instance() -> dict[str, str]:
    """A real row of the NZa export (values from `wachttijden.categories`), in feature order."""
    from airflow_project.wachttijden import categories
    from airflow_project.wachttijden.schema import FEATURES

    row = {
        "TYPE_WACHTTIJD": "Behandeling", "SPECIALISME": "Orthopedie (305)",
        "ROAZ_REGIO": "Acute Zorg Oost", "TYPE_ZORGINSTELLING": "Ziekenhuis",
    }
    allowed = {
        "TYPE_WACHTTIJD": categories.TYPES_WACHTTIJD, "SPECIALISME": categories.SPECIALISMEN,
        "ROAZ_REGIO": categories.ROAZ_REGIOS, "TYPE_ZORGINSTELLING": categories.TYPES_ZORGINSTELLING,
    }
    assert all(row[k] in allowed[k] for k in row), "sample row must use category values"
    return {k: row[k] for k in FEATURES}


def sample_request() -> dict[str, Any]:
    return {"instances": [sample_instance()]}


def curl_command(url: str, body: dict[str, Any]) -> str:
    """A ready-to-paste curl for a JSON POST (shell-quoted)."""
    data = json.dumps(body, ensure_ascii=False)
    return f"curl -s -X POST {shlex.quote(url)} -H 'Content-Type: application/json' -d {shlex.quote(data)}"


@dataclass(frozen=True)
class TryIt:
    name: str
    url: str
    curl: str
    answer: str  # the body the service returned


def _ask(url: str, body: dict[str, Any]) -> str:
    try:
        response = httpx.post(url, json=body, timeout=30.0, trust_env=False)
    except httpx.HTTPError as exc:
        raise PlatformError(f"POST {url} failed: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise PlatformError(f"POST {url} answered HTTP {response.status_code}: {response.text[:300]}")
    try:
        return json.dumps(response.json(), ensure_ascii=False)
    except ValueError:
        return response.text.strip()


def _try_it(endpoints: Endpoints) -> list[TryIt]:
    """Send the sample request to the predictor and the graph, as the printed curl would."""
    body = sample_request()
    out = []
    for name, url in (("predictor", endpoints.predictor_v1), ("graph", endpoints.graph + "/")):
        out.append(TryIt(name, url, curl_command(url, body), _ask(url, body)))
    return out


@dataclass(frozen=True)
class ShadowComparison:
    experiment: str
    url: str
    metrics: dict[str, float]
    run_name: str = ""


COMPARISON_METRICS = ("mae_primary_vs_shadow", "share_within_1_week", "mae_primary", "mae_shadow")


def _shadow_comparison(config: LocalConfig) -> ShadowComparison | None:
    """The MLflow experiment of the shadow comparison and its newest run's metrics."""
    from airflow_project.deploy_tasks import SHADOW_EXPERIMENT

    client = _mlflow_client(config)
    experiment = client.get_experiment_by_name(SHADOW_EXPERIMENT)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    metrics = {k: float(v) for k, v in (runs[0].data.metrics.items() if runs else []) if k in COMPARISON_METRICS}
    return ShadowComparison(
        experiment=SHADOW_EXPERIMENT, url=f"{config.mlflow_uri}/#/experiments/{experiment.experiment_id}",
        metrics=metrics, run_name=runs[0].info.run_name if runs else "",
    )


def format_serving_summary(endpoints: Endpoints, demo: list[TryIt],
                           comparison: ShadowComparison | None) -> list[str]:
    state = "deployed" if endpoints.deployed else "already running"
    lines = [
        (f"  Predictor   {endpoints.predictor_v1}   (champion, version {endpoints.primary_version}; "
         f"InferenceService {endpoints.namespace}/{PRIMARY_SERVICE}, {state})"),
        (f"  Graph       {endpoints.graph}   (InferenceGraph {endpoints.namespace}/{GRAPH_NAME}: every request "
         f"to shadow and primary, the primary answers; any POST path)"),
        (f"  Shadow      {endpoints.shadow_v1}   (version {endpoints.shadow_version}; "
         f"InferenceService {endpoints.namespace}/{SHADOW_SERVICE})"),
    ]
    if comparison is not None:
        shown = "  ".join(f"{k}={comparison.metrics[k]:.3f}" for k in COMPARISON_METRICS if k in comparison.metrics)
        lines.append(f"  Comparison  MLflow experiment {comparison.experiment}: {comparison.url}")
        if shown:
            lines.append(f"              {comparison.run_name + ': ' if comparison.run_name else ''}{shown}")
    lines.append("")
    lines.append("Try it (the answers are what up got just now):")
    for item in demo:
        lines.append(f"  {item.curl}")
        lines.append(f"  -> {item.answer}")
    return lines


def _final_summary(config: LocalConfig, password: str, models: list[ModelSummary], endpoints: Endpoints,
                   demo: list[TryIt], comparison: ShadowComparison | None, report: Reporter) -> str:
    lines = [
        "",
        f"The local platform is up, the job has run and the champion is served (took {report.elapsed()}).",
        f"  Airflow UI  {config.airflow_url}   user {AIRFLOW_ADMIN_USER}   password {password}",
        f"  MLflow UI   {config.mlflow_uri}",
    ]
    roles = ("primary", "shadow") if len(models) > 1 else ("primary and shadow",)
    for i, (model, role) in enumerate(zip(models, roles)):
        aliases = f" (alias: {', '.join(model.aliases)})" if model.aliases else ""
        estimator = f" {model.estimator}" if model.estimator else ""
        lines.append(f"  {'Model' if i == 0 else '':<10}  {model.name} version {model.version}{aliases}{estimator}"
                     f", served as {role}")
        lines.append(f"              {format_metrics(model.metrics)}")
        if model.decision:
            lines.append(f"              {model.decision}")
    lines += format_serving_summary(endpoints, demo, comparison)
    lines += [
        "",
        f"  Logs        {config.logs}/ (services: <name>.log, tasks: airflow/, model servers: serving/)",
        "  Status      mlops status",
        "  Stop        make down   (keeps data; `make down PURGE=1` deletes it)",
    ]
    return "\n".join(lines)
