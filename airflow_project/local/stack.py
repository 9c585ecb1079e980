"""The services of the local platform: what to start, in which order, and when each is ready.

One place builds each service's command line and environment, so that `mlops up` and
the integration-test fixtures start exactly the same Azurite and MLflow server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from airflow_project.datalake import MODEL_ARTIFACTS_CONTAINER
from airflow_project.host.files import tail
from airflow_project.host.net import free_port, http_ok, port_is_free, port_owner, tcp_ok
from airflow_project.host.processes import stop_process_groups
from airflow_project.local import processes
from airflow_project.local.airflow_api import AirflowClient
from airflow_project.local.config import (
    AIRFLOW_ADMIN_USER,
    AZURITE_ACCOUNT,
    LocalConfig,
    azurite_connection_string,
)
from airflow_project.local.errors import PlatformError, PortInUseError, PrerequisiteError
from airflow_project.local.processes import PidRecord
from airflow_project.settings import NO_TELEMETRY_ENV, REPO_ROOT

AZURITE = "azurite"
MLFLOW = "mlflow"
API_SERVER = "airflow-api-server"
SCHEDULER = "airflow-scheduler"
DAG_PROCESSOR = "airflow-dag-processor"
TRIGGERER = "airflow-triggerer"
SERVICE_NAMES: tuple[str, ...] = (AZURITE, MLFLOW, API_SERVER, SCHEDULER, DAG_PROCESSOR, TRIGGERER)
AIRFLOW_SERVICES: tuple[str, ...] = (API_SERVER, SCHEDULER, DAG_PROCESSOR, TRIGGERER)
# What runs tasks (the scheduler's LocalExecutor workers, the triggerer's supervisor) talks to
# the api-server's Execution API from the first task on: started only once it answers, or the
# scheduler queues the day's run while the api-server is still importing, and that first try
# dies on "Connection refused" (a retry and ~20 s lost on every fresh `up`). The dag-processor
# starts with the api-server, so parsing overlaps its start-up.
AIRFLOW_FIRST: tuple[str, ...] = (API_SERVER, DAG_PROCESSOR)
AIRFLOW_AFTER_API: tuple[str, ...] = (SCHEDULER, TRIGGERER)
EXECUTION_API_HEALTH = "/execution/health"
"""The Execution API's unauthenticated health route (airflow/api_fastapi/execution_api/routes/health.py),
mounted under /execution/ by the api-server (AIRFLOW__CORE__EXECUTION_API_SERVER_URL)."""
# component name in GET /api/v2/monitor/health
HEALTH_COMPONENT = {SCHEDULER: "scheduler", DAG_PROCESSOR: "dag_processor", TRIGGERER: "triggerer"}
PORT_ENV = {AZURITE: "MLOPS_AZURITE_PORT", MLFLOW: "MLOPS_MLFLOW_PORT", API_SERVER: "MLOPS_AIRFLOW_PORT"}


@dataclass
class ServiceSpec:
    """One process of the platform: how to start it and how to tell that it is ready."""

    name: str
    argv: list[str]
    port: int | None
    ready_path: str | None = None  # HTTP GET path answering 2xx when ready; None = TCP connect
    also_ready_paths: tuple[str, ...] = ()  # more paths that must answer 2xx (ready_path set)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    startup_timeout: float = 60.0
    health_component: str | None = None  # ready when healthy in Airflow's health endpoint

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self, health: dict[str, Any] | None = None) -> bool:
        if self.health_component is not None:
            component = (health or {}).get(self.health_component) or {}
            return component.get("status") == "healthy"
        if self.port is None:
            return True
        return is_ready(self)


def is_ready(spec: ServiceSpec) -> bool:
    if spec.ready_path is None:
        return tcp_ok(int(spec.port or 0))
    return all(http_ok(spec.url + path) for path in (spec.ready_path, *spec.also_ready_paths))


def venv_tool(name: str) -> str:
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


def azurite_binary() -> str:
    """Azurite's blob server from node_modules (or PATH); it runs on Node.js."""
    if shutil.which("node") is None:
        raise PrerequisiteError(
            "Node.js is not installed (`node` not on PATH); Azurite needs it: "
            "install Node.js 20 (https://nodejs.org), then run `make install`"
        )
    local = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    found = shutil.which("azurite-blob")
    if found:
        return found
    raise PrerequisiteError(f"Azurite is not installed: run `make install` (or `npm ci` in {REPO_ROOT})")


def check_prerequisites() -> None:
    """Node (for Azurite), Azurite itself, and the Python tools of the venv."""
    azurite_binary()
    for tool in ("airflow", "mlflow"):
        venv_tool(tool)


def azurite_spec(data_dir: Path, port: int) -> ServiceSpec:
    data_dir.mkdir(parents=True, exist_ok=True)
    return ServiceSpec(
        name=AZURITE,
        argv=[
            azurite_binary(),
            "--blobHost", "127.0.0.1",
            "--blobPort", str(port),
            "--location", str(data_dir),
            "--skipApiVersionCheck",  # newer azure-storage-blob than the emulator knows
            "--disableTelemetry",
            "--loose",
        ],
        port=port,
    )


MLFLOW_JOBS_OFF: dict[str, str] = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
"""MLflow 3.17's switch for its server-side job execution (`mlflow.environment_variables`)."""


def mlflow_spec(data_dir: Path, port: int, azurite_port: int) -> ServiceSpec:
    """MLflow tracking server, SQLite backend, artifacts proxied to Azurite."""
    data_dir.mkdir(parents=True, exist_ok=True)
    destination = (
        f"wasbs://{MODEL_ARTIFACTS_CONTAINER}@{AZURITE_ACCOUNT}.blob.core.windows.net/"
    )
    return ServiceSpec(
        name=MLFLOW,
        argv=[
            venv_tool("mlflow"), "server",
            "--backend-store-uri", f"sqlite:///{data_dir / 'mlflow.db'}",
            "--artifacts-destination", destination,
            "--serve-artifacts",
            "--host", "127.0.0.1",
            "--port", str(port),
            "--workers", "1",
        ],
        port=port,
        ready_path="/health",
        env={"AZURE_STORAGE_CONNECTION_STRING": azurite_connection_string(azurite_port),
             # MLflow 3 starts a job runner and seven huey consumers (~1.8 GiB RSS) for its GenAI
             # jobs (scorers, trace archival); nothing here submits a job, so none are started.
             **MLFLOW_JOBS_OFF,
             **NO_TELEMETRY_ENV},
        startup_timeout=120.0,
    )


def airflow_services(config: LocalConfig) -> list[ServiceSpec]:
    airflow = venv_tool("airflow")
    env = config.airflow_env()
    port = config.ports.airflow
    api = ServiceSpec(
        name=API_SERVER,
        argv=[airflow, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        port=port, env=env, ready_path="/api/v2/monitor/health", also_ready_paths=(EXECUTION_API_HEALTH,),
        startup_timeout=180.0,
    )
    # Logs are local files the api-server reads directly: no log-serving ports needed.
    others = [
        ServiceSpec(name=SCHEDULER, argv=[airflow, "scheduler", "--skip-serve-logs"], port=None, env=env),
        ServiceSpec(name=DAG_PROCESSOR, argv=[airflow, "dag-processor"], port=None, env=env),
        ServiceSpec(name=TRIGGERER, argv=[airflow, "triggerer", "--skip-serve-logs"], port=None, env=env),
    ]
    for service in others:
        service.health_component = HEALTH_COMPONENT[service.name]
        service.startup_timeout = 180.0
    return [api, *others]


def plan_services(config: LocalConfig) -> list[ServiceSpec]:
    storage = [azurite_spec(config.azurite_data, config.ports.azurite),
               mlflow_spec(config.mlflow_data, config.ports.mlflow, config.ports.azurite)]
    return [*(replace(s, startup_timeout=max(s.startup_timeout, 120.0)) for s in storage), *airflow_services(config)]


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


def start_services(config: LocalConfig, report: Callable[[str], None], deadline: float,
                   before_airflow: Callable[[], None] = lambda: None) -> None:
    """Start what is not running yet: storage first, then Airflow once its database is
    migrated and `before_airflow` (which may use the storage) has run."""
    services = plan_services(config)
    records = processes.read_pid_records(config.run)
    running: dict[str, PidRecord] = {}
    to_start: list[ServiceSpec] = []
    problems: list[str] = []
    for service in services:
        record = records.get(service.name)
        if record is not None and processes.record_alive(record):
            if record.port != service.port:
                problems.append(
                    f"{service.name} is already running on port {record.port} but port "
                    f"{service.port} is configured: run `mlops down` first to change ports"
                )
            running[service.name] = record
            continue
        if record is not None:
            left = processes.stop_orphans(record)
            if left:
                report(f"{service.name}: its leader (pid {record.pid}) was gone but its process group still ran "
                       f"(pid {', '.join(map(str, left))}): stopped it")
            processes.remove_pid_record(config.run, service.name)
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
    started_now: dict[str, subprocess.Popen[bytes]] = {}

    def launch(names: Iterable[str]) -> None:
        for name in names:
            if name in starting:
                spec = by_name[name]
                record, process = processes.start(spec.name, spec.argv, spec.port, spec.env, config)
                started_now[name] = process
                report(f"started {name} (pid {record.pid}{'' if record.port is None else f', port {record.port}'})")

    # Storage first; the Airflow database migration (idempotent) runs meanwhile.
    launch([AZURITE, MLFLOW])
    migrate = None
    if starting & set(AIRFLOW_SERVICES):
        migrate = start_migration(config)
        report("migrating the Airflow database (airflow db migrate)")
    wait_ready([by_name[AZURITE]], started_now, config, report, deadline)
    before_airflow()
    if migrate is not None:
        finish_migration(migrate, config, deadline)
        report("Airflow database is up to date")
    launch(AIRFLOW_FIRST)
    wait_ready([by_name[API_SERVER]], started_now, config, report, deadline)
    launch(AIRFLOW_AFTER_API)
    wait_ready([s for s in services if s.name != AZURITE], started_now, config, report, deadline)


def start_migration(config: LocalConfig) -> subprocess.Popen[bytes]:
    config.logs.mkdir(parents=True, exist_ok=True)
    with open(config.logs / "airflow-db-migrate.log", "ab") as log:
        return subprocess.Popen(
            [venv_tool("airflow"), "db", "migrate"], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=processes.child_env(config.airflow_env()), cwd=str(REPO_ROOT),
        )


def finish_migration(process: subprocess.Popen[bytes], config: LocalConfig, deadline: float) -> None:
    try:
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        raise TimeoutError("`airflow db migrate` did not finish in time") from None
    if code != 0:
        log = config.logs / "airflow-db-migrate.log"
        raise PlatformError(f"`airflow db migrate` failed (exit {code}); last log lines:\n{tail(log)}")


def wait_ready(services: list[ServiceSpec], started_now: dict[str, subprocess.Popen[bytes]],
               config: LocalConfig, report: Callable[[str], None], deadline: float) -> None:
    pending = {s.name: s for s in services}
    started = time.monotonic()
    reported_waiting = False
    health_client = AirflowClient(config.airflow_url, AIRFLOW_ADMIN_USER, None)
    try:
        while pending:
            needs_health = any(s.health_component for s in pending.values())
            health = health_client.health() if needs_health else None
            for name, service in list(pending.items()):
                process = started_now.get(name)
                if process is not None and process.poll() is not None:
                    log = config.logs / f"{name}.log"
                    raise PlatformError(
                        f"{name} exited with code {process.returncode} during start-up; "
                        f"last lines of {log}:\n{tail(log)}"
                    )
                if service.ready(health):
                    del pending[name]
                    if name in started_now:
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


class ServiceProcess:
    """A started service: its process, log file and readiness."""

    def __init__(self, spec: ServiceSpec, log_path: Path) -> None:
        self.spec = spec
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        if not port_is_free(self.spec.port):
            raise PrerequisiteError(
                f"{self.spec.name}: port {self.spec.port} on 127.0.0.1 is already in use; "
                f"stop what uses it or choose another port"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child from here on
        env = {**os.environ, **self.spec.env}
        self.process = subprocess.Popen(
            self.spec.argv, stdout=log, stderr=subprocess.STDOUT, env=env,
            cwd=self.spec.cwd, start_new_session=True,  # own process group: stop kills children
        )
        log.close()
        return self

    def wait_ready(self) -> ServiceProcess:
        deadline = time.monotonic() + self.spec.startup_timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.spec.name} exited with code {self.process.returncode} during start-up; "
                    f"last log lines:\n{tail(self.log_path)}"
                )
            if is_ready(self.spec):
                return self
            time.sleep(0.3)
        raise TimeoutError(
            f"{self.spec.name} not ready on port {self.spec.port} after "
            f"{self.spec.startup_timeout:.0f}s; last log lines:\n{tail(self.log_path)}"
        )

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        stop_process_groups([self.process.pid], timeout)
        self.process.wait(timeout=timeout)
