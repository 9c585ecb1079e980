"""A rendered container run as a local process: its command, args and environment as
Kubernetes would assemble them, with addresses remapped to this machine and Secrets the
chart does not render replaced by test values.

`container_env` follows the kubelet's rules: `envFrom` first (ConfigMaps and Secrets, in
order), then `env`, whose entries win; `valueFrom` reads the named key. What the render
contains is taken from the render; Secrets that exist only in the cluster come from
`secrets` (the tests pass the development values `make deploy` creates on kind).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from chart_helpers import NAMESPACE, RELEASE, by_kind

from airflow_project.host.files import tail
from airflow_project.host.net import free_port
from airflow_project.host.processes import stop_process_groups
from airflow_project.local import stack
from airflow_project.local.config import AZURITE_ACCOUNT, azurite_connection_string
from airflow_project.release import devsecrets

# What a container gets from its image and the kubelet rather than from the pod spec.
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")


class RenderError(AssertionError):
    """The render lacks what the container refers to (named in the message)."""


def _rendered(objs: list[dict], kind: str, name: str) -> dict | None:
    for obj in objs:
        if obj.get("kind") == kind and obj["metadata"]["name"] == name:
            return obj
    return None


def _secret_data(objs: list[dict], name: str, secrets: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    obj = _rendered(objs, "Secret", name)
    if obj is not None:
        import base64

        data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        return data | dict(obj.get("stringData") or {})
    if name in secrets:
        return dict(secrets[name])
    raise RenderError(f"Secret {name} is neither rendered nor among the test Secrets {sorted(secrets)}")


def _configmap_data(objs: list[dict], name: str) -> dict[str, str]:
    obj = _rendered(objs, "ConfigMap", name)
    if obj is None:
        raise RenderError(f"ConfigMap {name} is not rendered")
    return dict(obj.get("data") or {})


def container_env(container: dict, objs: list[dict], secrets: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The container's environment as the kubelet builds it from the rendered objects."""
    env: dict[str, str] = {}
    for ref in container.get("envFrom") or []:
        prefix = ref.get("prefix", "")
        if "configMapRef" in ref:
            data = _configmap_data(objs, ref["configMapRef"]["name"])
        else:
            data = _secret_data(objs, ref["secretRef"]["name"], secrets)
        env |= {prefix + k: v for k, v in data.items()}
    for entry in container.get("env") or []:
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
            continue
        source = entry.get("valueFrom") or {}
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[entry["name"]] = _secret_data(objs, ref["name"], secrets)[ref["key"]]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[entry["name"]] = _configmap_data(objs, ref["name"])[ref["key"]]
        # fieldRef/resourceFieldRef: pod facts (node name, limits) no local process has
    return env


@dataclass
class PodProcess:
    """One container's command as a local process, with exactly `env` (plus BASE_ENV)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    cwd: Path | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> Self:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        base = {k: os.environ[k] for k in BASE_ENV if k in os.environ}
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                self.argv, env=base | self.env, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.cwd, start_new_session=True,
            )
        return self

    def wait_until(self, ready: Callable[[], bool], timeout: float = 180.0) -> Self:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.process.returncode}: {' '.join(self.argv)}\n{tail(self.log, 40)}"
                )
            if ready():
                return self
            time.sleep(0.5)
        raise AssertionError(f"{self.name} not ready after {timeout:.0f}s:\n{tail(self.log, 40)}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process_groups([self.process.pid])
            self.process.wait(timeout=30)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def replace_arg(args: list[str], flag: str, value: str) -> list[str]:
    """`args` with `flag`'s value replaced (`--flag=value` or `--flag value`); AssertionError
    when the rendered args do not have it (a remap must never silently miss)."""
    out, found, skip = [], False, False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg.startswith(flag + "="):
            out.append(f"{flag}={value}")
            found = True
        elif arg == flag and i + 1 < len(args):
            out += [flag, value]
            found, skip = True, True
        else:
            out.append(arg)
    if not found:
        raise RenderError(f"the rendered args {args} have no {flag}")
    return out


def arg_value(args: list[str], flag: str) -> str:
    for i, arg in enumerate(args):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
    raise RenderError(f"the rendered args {args} have no {flag}")


# ---------------------------------------------------------------- the rendered MLflow
def mlflow_container(objs: list[dict]) -> dict:
    (server,) = [d for d in by_kind(objs, "Deployment") if d["metadata"]["name"] == f"{RELEASE}-mlflow"]
    (container,) = server["spec"]["template"]["spec"]["containers"]
    return container


def local_mlflow(objs: list[dict], work: Path, azurite_port: int) -> PodProcess:
    """The rendered container as a process on 127.0.0.1, its stores remapped."""
    container = mlflow_container(objs)
    assert container["command"] == ["mlflow"], container["command"]
    port = free_port()
    args = replace_arg(container["args"], "--host", "127.0.0.1")
    args = replace_arg(args, "--port", str(port))
    assert arg_value(args, "--backend-store-uri").startswith("postgresql://")
    args = replace_arg(args, "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}")
    destination = arg_value(args, "--artifacts-destination")
    # wasbs://<container>@<account>.blob.core.windows.net/ -> the same container on Azurite's account
    remapped, n = re.subn(r"@[a-z0-9]+\.blob\.", f"@{AZURITE_ACCOUNT}.blob.", destination)
    assert n == 1, destination
    args = replace_arg(args, "--artifacts-destination", remapped)
    secrets = devsecrets.dev_values(NAMESPACE)
    secrets["azure-storage"] = {"AZURE_STORAGE_CONNECTION_STRING": azurite_connection_string(azurite_port)}
    env = container_env(container, objs, secrets)
    return PodProcess("mlflow", [stack.venv_tool("mlflow"), *args], env, work / "mlflow.log")


def started_mlflow(objs: list[dict], work: Path, azurite_port: int) -> tuple[PodProcess, str]:
    """`local_mlflow` started and answering /health; (process, base URL)."""
    from airflow_project.host.net import http_ok

    mlflow = local_mlflow(objs, work, azurite_port).start()
    base = f"http://127.0.0.1:{arg_value(mlflow.argv, '--port')}"
    try:
        mlflow.wait_until(lambda: http_ok(base + "/health"), timeout=240)
    except BaseException:
        mlflow.stop()
        raise
    return mlflow, base
