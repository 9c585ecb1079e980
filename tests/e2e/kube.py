"""Small helpers for the kind end-to-end tests: pinned tool downloads, kubectl, waits,
port-forwards.

Standard library only (plus `requests`, already a dependency of pytest-kind): importing
this module never needs Docker, kind or a cluster.

Why not pytest-kind's own `KindCluster.port_forward`: it does not call
`ensure_kubectl()` first, picks a random port without checking it is free, passes an
environment without PATH, and its retry loop never breaks on success (it restarts the
forward `retries` times, ~10 s, and yields the last one). `PortForward` below ensures
kubectl, binds a free port, waits for the listener and retries within a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# Pinned defaults. kind v0.27.0 was released with Kubernetes v1.32.2 as its default node
# image, so this pair is one kind supports; kubectl matches the server's minor version.
DEFAULT_KIND_VERSION = "v0.27.0"
DEFAULT_NODE_IMAGE = "kindest/node:v1.32.2"
DEFAULT_KUBECTL_VERSION = "v1.32.2"


class E2EError(RuntimeError):
    """Something in the e2e environment is not as the tests need it (message says what)."""


# ---------------------------------------------------------------------------- downloads
def machine_arch() -> str:
    """`amd64` or `arm64`, as the kind and kubectl release URLs spell it."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return "amd64"
    if machine in ("aarch64", "arm64"):
        return "arm64"
    raise E2EError(f"unsupported CPU architecture {machine!r} for kind/kubectl downloads")


def os_name() -> str:
    return platform.system().lower()  # linux, darwin


def kind_url(version: str) -> str:
    return (
        f"https://github.com/kubernetes-sigs/kind/releases/download/{version}/"
        f"kind-{os_name()}-{machine_arch()}"
    )


def kubectl_url(version: str) -> str:
    return f"https://dl.k8s.io/release/{version}/bin/{os_name()}/{machine_arch()}/kubectl"


def download_executable(url: str, dest: Path, timeout: float = 300.0) -> Path:
    """Download `url` to `dest` (chmod 755) unless it is already there; atomic rename."""
    if dest.exists():
        return dest
    import requests

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    with requests.get(url, stream=True, timeout=timeout) as response:
        response.raise_for_status()
        with tmp.open("wb") as fh:
            for chunk in response.iter_content(chunk_size=1 << 16):
                fh.write(chunk)
    tmp.chmod(0o755)
    tmp.replace(dest)
    return dest


# ---------------------------------------------------------------------------- waiting
def wait_for(
    check: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 5.0,
    what: str = "condition",
    describe: Callable[[], str] | None = None,
) -> T:
    """Call `check` until it returns something truthy; `TimeoutError` naming `what`.

    `describe()` (optional) adds the current state to the timeout message.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - transient API errors are retried
            last_error = exc
        if time.monotonic() >= deadline:
            detail = ""
            if describe is not None:
                with contextlib.suppress(Exception):
                    detail = "\n" + describe()
            if last_error is not None:
                detail += f"\nlast error: {last_error!r}"
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------- kubectl
@dataclass
class Kube:
    """kubectl against one kubeconfig. `kubectl_path` is made to exist by `ensure()`."""

    kubectl_path: Path
    kubeconfig: Path
    kubectl_version: str = DEFAULT_KUBECTL_VERSION
    extra_path: Sequence[Path] = field(default_factory=tuple)

    def ensure(self) -> Path:
        """kubectl must exist before any call (pytest-kind's port_forward skips this)."""
        if not self.kubectl_path.exists():
            download_executable(kubectl_url(self.kubectl_version), self.kubectl_path)
        return self.kubectl_path

    def env(self) -> dict[str, str]:
        path = os.pathsep.join([*(str(p) for p in self.extra_path), os.environ.get("PATH", "")])
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": path}

    def run(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 120.0,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        self.ensure()
        argv = [str(self.kubectl_path), *args]
        proc = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise E2EError(
                f"kubectl {' '.join(args)} failed (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
            )
        return proc

    def out(self, *args: str, **kwargs: Any) -> str:
        return self.run(*args, **kwargs).stdout

    def json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.out(*args, "-o", "json", **kwargs))

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        proc = self.run("get", kind, name, "-n", namespace, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr or "not found" in proc.stderr:
                return None
            raise E2EError(f"kubectl get {kind} {name} -n {namespace}: {proc.stderr.strip()}")
        return json.loads(proc.stdout)

    def can_i(self, verb: str, resource: str, namespace: str, as_user: str) -> bool:
        """`kubectl auth can-i` (exit 0 = yes, 1 = no; anything else is an error)."""
        proc = self.run(
            "auth", "can-i", verb, resource, "-n", namespace, "--as", as_user, check=False
        )
        answer = proc.stdout.strip().lower()
        if proc.returncode not in (0, 1) or answer not in ("yes", "no"):
            raise E2EError(f"kubectl auth can-i {verb} {resource}: {proc.stderr.strip() or answer}")
        return answer == "yes"

    def describe(self, kind: str, name: str, namespace: str) -> str:
        proc = self.run("describe", kind, name, "-n", namespace, check=False)
        return (proc.stdout or proc.stderr)[-4000:]

    def wait_condition(
        self,
        kind: str,
        name: str,
        namespace: str,
        condition: str = "Ready",
        timeout: float = 600.0,
        interval: float = 5.0,
    ) -> dict[str, Any]:
        """Poll until `status.conditions[type=condition]` is True (object may not exist yet)."""

        def check() -> dict[str, Any] | None:
            obj = self.get(kind, name, namespace)
            if obj and condition_true(obj, condition):
                return obj
            return None

        return wait_for(
            check,
            timeout=timeout,
            interval=interval,
            what=f"{kind} {namespace}/{name} condition {condition}=True",
            describe=lambda: self.describe(kind, name, namespace),
        )

    def ready_pods(self, namespace: str, selector: str) -> list[str]:
        """Names of Running pods matching `selector` whose Ready condition is True."""
        pods = self.json("get", "pods", "-n", namespace, "-l", selector).get("items", [])
        return [
            p["metadata"]["name"]
            for p in pods
            if (p.get("status") or {}).get("phase") == "Running" and condition_true(p, "Ready")
        ]

    @contextlib.contextmanager
    def port_forward(
        self,
        target: str,
        remote_port: int,
        namespace: str,
        *,
        timeout: float = 60.0,
        log_dir: Path | None = None,
    ) -> Iterator[int]:
        """`kubectl port-forward <target> <free local port>:<remote_port>`; yields the port."""
        with PortForward(self, target, remote_port, namespace, timeout, log_dir) as port:
            yield port


def condition_true(obj: dict[str, Any], condition: str = "Ready") -> bool:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == condition:
            return str(c.get("status")) == "True"
    return False


class PortForward:
    """A port-forward with a bounded start-up: free port, wait for the listener, retry.

    kubectl exits when the pod goes away; the tests keep forwards short (one per fixture)
    and `alive()` tells whether it is still running.
    """

    def __init__(
        self,
        kube: Kube,
        target: str,
        remote_port: int,
        namespace: str,
        timeout: float = 60.0,
        log_dir: Path | None = None,
    ) -> None:
        self.kube = kube
        self.target = target
        self.remote_port = remote_port
        self.namespace = namespace
        self.timeout = timeout
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    def _log(self) -> Any:
        if self.log_dir is None:
            return subprocess.DEVNULL
        self.log_dir.mkdir(parents=True, exist_ok=True)
        safe = self.target.replace("/", "-")
        return (self.log_dir / f"port-forward-{self.namespace}-{safe}.log").open("ab")

    def start(self) -> int:
        kubectl = self.kube.ensure()
        deadline = time.monotonic() + self.timeout
        attempts = 0
        while True:
            attempts += 1
            port = free_port()
            log = self._log()
            self.proc = subprocess.Popen(
                [
                    str(kubectl),
                    "port-forward",
                    "--address",
                    "127.0.0.1",
                    "-n",
                    self.namespace,
                    self.target,
                    f"{port}:{self.remote_port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.kube.env(),
            )
            if log is not subprocess.DEVNULL:
                log.close()
            # Wait for kubectl's listener, at most 15 s per attempt.
            attempt_deadline = min(deadline, time.monotonic() + 15)
            while time.monotonic() < attempt_deadline and self.proc.poll() is None:
                if port_open(port, timeout=0.5):
                    self.port = port
                    return port
                time.sleep(0.25)
            self.stop()
            if time.monotonic() >= deadline:
                raise E2EError(
                    f"kubectl port-forward {self.target} -n {self.namespace} :{self.remote_port} "
                    f"did not come up within {self.timeout:.0f}s ({attempts} attempts)"
                    + (f"; see {self.log_dir}" if self.log_dir else "")
                )
            time.sleep(2)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> int:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------- environment
def docker_problem(timeout: float = 20.0) -> str | None:
    """None when `docker info` works; otherwise why not (used as the skip reason)."""
    docker = shutil.which("docker")
    if docker is None:
        return "docker is not on PATH (the e2e tests need a Docker engine for kind)"
    try:
        proc = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"`docker info` did not answer within {timeout:.0f}s (is the Docker engine running?)"
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        return f"`docker info` failed (exit {proc.returncode}): {tail[0]}"
    return None


def docker_image_exists(image: str) -> bool:
    proc = subprocess.run(
        ["docker", "image", "inspect", image], capture_output=True, text=True, check=False
    )
    return proc.returncode == 0


def link_tools(bin_dir: Path, tools: dict[str, Path]) -> Path:
    """A folder with `kind`/`kubectl` symlinks to the pinned binaries, to put first on PATH
    of child processes (the release CLI calls them by name)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, target in tools.items():
        link = bin_dir / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target.resolve())
    return bin_dir
