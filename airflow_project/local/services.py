"""Specs and supervision of the local services (Azurite, MLflow server).

One place builds each service's command line and environment, so that
`mlops up` and the integration-test fixtures start exactly the same thing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from airflow_project.datalake import CONTAINERS, MODEL_ARTIFACTS_CONTAINER
from airflow_project.host.files import tail
from airflow_project.host.net import free_port, http_ok, port_is_free, tcp_ok
from airflow_project.host.processes import stop_process_groups
from airflow_project.settings import NO_TELEMETRY_ENV, REPO_ROOT

# Azurite's published development account. It is not a secret: every Azurite
# installation accepts it, and it only works against 127.0.0.1.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class PrerequisiteError(RuntimeError):
    """A tool the local platform needs is missing; the message says how to get it."""


def azurite_connection_string(port: int, host: str = "127.0.0.1") -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://{host}:{port}/{AZURITE_ACCOUNT};"
    )


def _azurite_blob_binary() -> str:
    local = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    found = shutil.which("azurite-blob")
    if found:
        return found
    if shutil.which("node") is None:
        raise PrerequisiteError("Node.js is not installed: install Node.js 20, then run `make install`")
    raise PrerequisiteError(
        f"Azurite is not installed: run `npm ci` in {REPO_ROOT} (or `make install`)"
    )


def _venv_binary(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise PrerequisiteError(f"{name} not found next to {sys.executable}: run `make install`")
    return found


@dataclass
class ServiceSpec:
    """How to start one service and how to tell that it is ready."""

    name: str
    argv: list[str]
    port: int
    ready_path: str | None = None  # HTTP GET path answering 2xx when ready; None = TCP connect
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    startup_timeout: float = 60.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def azurite_spec(data_dir: Path, port: int) -> ServiceSpec:
    data_dir.mkdir(parents=True, exist_ok=True)
    return ServiceSpec(
        name="azurite",
        argv=[
            _azurite_blob_binary(),
            "--blobHost", "127.0.0.1",
            "--blobPort", str(port),
            "--location", str(data_dir),
            "--skipApiVersionCheck",  # newer azure-storage-blob than the emulator knows
            "--disableTelemetry",
            "--loose",
        ],
        port=port,
    )


def mlflow_spec(data_dir: Path, port: int, azurite_port: int) -> ServiceSpec:
    """MLflow tracking server, SQLite backend, artifacts proxied to Azurite."""
    data_dir.mkdir(parents=True, exist_ok=True)
    destination = (
        f"wasbs://{MODEL_ARTIFACTS_CONTAINER}@{AZURITE_ACCOUNT}.blob.core.windows.net/"
    )
    return ServiceSpec(
        name="mlflow",
        argv=[
            _venv_binary("mlflow"), "server",
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
             **NO_TELEMETRY_ENV},
        startup_timeout=120.0,
    )


def is_ready(spec: ServiceSpec) -> bool:
    if spec.ready_path is None:
        return tcp_ok(spec.port)
    return http_ok(spec.url + spec.ready_path)


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


__all__ = [
    "AZURITE_ACCOUNT", "CONTAINERS", "PrerequisiteError", "ServiceProcess", "ServiceSpec",
    "azurite_connection_string", "azurite_spec", "free_port", "is_ready", "mlflow_spec",
    "port_is_free", "tail",
]
