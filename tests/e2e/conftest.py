"""kind end-to-end tests: one kind cluster per session, the platform installed on it.

Everything in tests/e2e is marked `e2e` and skipped (with the reason) unless
`MLOPS_E2E=1` is set AND `docker info` works, so `make test` never starts a cluster by
accident; `make e2e` sets the variable after `make image`.

Session fixtures, in order:
- `kind_cluster` (overrides pytest-kind's fixture of the same name): a pytest-kind
  `KindCluster` with a pinned kind release and node image (pytest-kind 22.11.1 would
  download kind v0.17.0 / Kubernetes 1.25), a kind config mapping the Istio ingress
  NodePort of helm/values-kind.yaml to the host; deleted at the end unless
  `MLOPS_E2E_KEEP=1` (or `--keep-cluster`).
- `platform`: loads the two images `make image` built into the cluster and runs the
  staged install `python -m airflow_project.release deploy --env kind ...`.
- `airflow`, `mlflow_url`, `datalake`, `ingress`, `elasticsearch`: port-forwards and clients.

Knobs (environment): see README.md, "End-to-end tests on kind".
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from kube import (
    DEFAULT_KIND_VERSION,
    DEFAULT_KUBECTL_VERSION,
    DEFAULT_NODE_IMAGE,
    E2EError,
    Kube,
    PortForward,
    docker_image_exists,
    docker_problem,
    download_executable,
    kind_url,
    kubectl_url,
    link_tools,
    machine_arch,
    os_name,
    wait_for,
)

E2E_DIR = Path(__file__).resolve().parent
REPO = E2E_DIR.parents[1]
DEFAULT_INGRESS_NODE_PORT = 30080
PYTEST_KIND_DEFAULT_NAME = "pytest-kind"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


# ---------------------------------------------------------------------------- skipping
@lru_cache(maxsize=1)
def skip_reason() -> str | None:
    """Why the e2e tests cannot run here (None: they run). Docker is asked only when
    MLOPS_E2E=1, so a normal `pytest` run stays fast."""
    if not _env_flag("MLOPS_E2E"):
        return (
            "e2e tests start a kind cluster: set MLOPS_E2E=1 (`make e2e` does) "
            "on a machine with Docker and internet access"
        )
    problem = docker_problem()
    if problem:
        return f"MLOPS_E2E=1 but Docker is not usable: {problem}"
    return None


def _in_e2e(item: pytest.Item) -> bool:
    try:
        return Path(str(item.path)).resolve().is_relative_to(E2E_DIR)
    except (OSError, ValueError):
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A conftest hook sees every collected item of the session: only touch ours.
    ours = [item for item in items if _in_e2e(item)]
    if not ours:
        return
    reason = skip_reason()
    per_test = _env_float("MLOPS_E2E_TEST_TIMEOUT", 7200.0)
    for item in ours:
        item.add_marker(pytest.mark.e2e)
        # The first test pays for cluster creation and the staged install.
        item.add_marker(pytest.mark.timeout(per_test))
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


# ---------------------------------------------------------------------------- settings
def _ingress_node_port() -> int:
    """The http2 nodePort of the istio-gateway Service in helm/values-kind.yaml."""
    try:
        import yaml

        values = yaml.safe_load((REPO / "helm" / "values-kind.yaml").read_text())
        for port in values["istio-gateway"]["service"]["ports"]:
            if port.get("nodePort") and port.get("name", "").startswith("http"):
                return int(port["nodePort"])
    except (OSError, KeyError, TypeError, ValueError):
        pass
    return DEFAULT_INGRESS_NODE_PORT


def _mlflow_service_port() -> int:
    """The MLflow Service's port (the chart's mlflow.service.port; the server itself listens
    on 5000 behind it)."""
    import yaml

    values = yaml.safe_load((REPO / "helm" / "values.yaml").read_text())
    return int(values["mlflow"]["service"]["port"])


@dataclass(frozen=True)
class E2ESettings:
    cluster_name: str
    kind_version: str
    node_image: str
    kubectl_version: str
    cache_dir: Path
    keep: bool
    release: str
    namespace: str
    serving_namespace: str
    ingress_node_port: int
    ingress_host_port: int
    registry: str
    image_tag: str
    skip_deploy: bool
    deploy_timeout: float
    reports_dir: Path

    @property
    def worker_service_account(self) -> str:
        return f"system:serviceaccount:{self.namespace}:airflow-worker"

    def image(self, which: str) -> str:
        return f"{self.registry}airflow-project/{which}:{self.image_tag}"


def _image_tag() -> str:
    tag = os.environ.get("MLOPS_E2E_IMAGE_TAG") or os.environ.get("IMAGE_TAG")
    if tag:
        return tag
    proc = subprocess.run(
        [sys.executable, "-m", "airflow_project.release", "image-tag"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise E2EError(
            f"`python -m airflow_project.release image-tag` failed: {proc.stderr.strip()}"
        )
    return proc.stdout.strip()


@pytest.fixture(scope="session")
def e2e_settings(request: pytest.FixtureRequest) -> E2ESettings:
    opt = request.config.getoption
    name = os.environ.get("MLOPS_E2E_CLUSTER") or (
        opt("cluster_name") if opt("cluster_name") != PYTEST_KIND_DEFAULT_NAME else "mlops-e2e"
    )
    node_port = _ingress_node_port()
    registry = os.environ.get("REGISTRY", "")
    if registry and not registry.endswith("/"):
        registry += "/"
    return E2ESettings(
        cluster_name=name,
        kind_version=os.environ.get("MLOPS_E2E_KIND_VERSION")
        or os.environ.get("KIND_VERSION")
        or DEFAULT_KIND_VERSION,
        node_image=os.environ.get("MLOPS_E2E_NODE_IMAGE")
        or opt("kind_image")
        or DEFAULT_NODE_IMAGE,
        kubectl_version=os.environ.get("MLOPS_E2E_KUBECTL_VERSION")
        or os.environ.get("KUBECTL_VERSION")
        or DEFAULT_KUBECTL_VERSION,
        cache_dir=Path(
            os.environ.get("MLOPS_E2E_CACHE")
            or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
            / "airflow-project-e2e"
        ).resolve(),
        keep=_env_flag("MLOPS_E2E_KEEP") or bool(opt("keep_cluster")),
        release=os.environ.get("RELEASE") or "mlops",
        namespace=os.environ.get("NAMESPACE") or "mlops",
        serving_namespace=os.environ.get("MLOPS_E2E_SERVING_NAMESPACE") or "serving",
        ingress_node_port=node_port,
        ingress_host_port=int(os.environ.get("MLOPS_E2E_INGRESS_PORT") or node_port),
        registry=registry,
        image_tag=_image_tag(),
        skip_deploy=_env_flag("MLOPS_E2E_SKIP_DEPLOY"),
        deploy_timeout=_env_float("MLOPS_E2E_INSTALL_TIMEOUT", 5400.0),
        reports_dir=REPO / "reports" / "e2e",
    )


# ---------------------------------------------------------------------------- the cluster
def kind_config(s: E2ESettings) -> str:
    """One node; the ingress gateway's NodePort reachable on the host's loopback."""
    return (
        "kind: Cluster\n"
        "apiVersion: kind.x-k8s.io/v1alpha4\n"
        "nodes:\n"
        "  - role: control-plane\n"
        "    extraPortMappings:\n"
        f"      - containerPort: {s.ingress_node_port}\n"
        f"        hostPort: {s.ingress_host_port}\n"
        '        listenAddress: "127.0.0.1"\n'
        "        protocol: TCP\n"
    )


@pytest.fixture(scope="session")
def kind_cluster(request: pytest.FixtureRequest, e2e_settings: E2ESettings) -> Iterator[Any]:
    """pytest-kind's KindCluster, with pinned kind/kubectl/node image and our kind config."""
    from pytest_kind import KindCluster
    from pytest_kind import cluster as pytest_kind_cluster

    s = e2e_settings
    opt = request.config.getoption
    # pytest-kind reads KIND_VERSION/KUBECTL_VERSION once at import (default v0.17.0 and
    # v1.25.3) and downloads linux/amd64 only: pin them, and hand it binaries for this
    # OS/arch so its ensure_kind()/ensure_kubectl() find them and download nothing.
    pytest_kind_cluster.KIND_VERSION = s.kind_version
    pytest_kind_cluster.KUBECTL_VERSION = s.kubectl_version
    tools = s.cache_dir / "bin"
    kind_bin = Path(
        opt("kind_bin")
        or os.environ.get("MLOPS_E2E_KIND_BIN")
        or download_executable(
            kind_url(s.kind_version), tools / f"kind-{s.kind_version}-{os_name()}-{machine_arch()}"
        )
    ).resolve()
    kubectl_bin = Path(
        opt("kind_kubectl_bin")
        or os.environ.get("MLOPS_E2E_KUBECTL_BIN")
        or download_executable(
            kubectl_url(s.kubectl_version),
            tools / f"kubectl-{s.kubectl_version}-{os_name()}-{machine_arch()}",
        )
    ).resolve()
    work = s.cache_dir / "clusters"
    work.mkdir(parents=True, exist_ok=True)
    kubeconfig = Path(opt("kubeconfig") or work / s.cluster_name / "kubeconfig").resolve()
    kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    config_file = work / s.cluster_name / "kind-config.yaml"
    config_file.write_text(kind_config(s))
    # KindCluster creates ./.pytest-kind/<name> relative to the working directory: keep it
    # out of the repository (all other paths are absolute).
    with contextlib.chdir(work):
        cluster = KindCluster(
            s.cluster_name,
            kubeconfig,
            image=s.node_image,
            kind_path=kind_bin,
            kubectl_path=kubectl_bin,
        )
    existing = subprocess.run(
        [str(kind_bin), "get", "clusters"], capture_output=True, text=True, check=True
    ).stdout.split()
    if s.cluster_name in existing:
        # KindCluster.create() re-uses it but reads the kubeconfig as is: refresh it first
        # (the cluster keeps the port mappings it was created with).
        print(f"\nre-using kind cluster {s.cluster_name!r}")
        subprocess.run(
            [str(kind_bin), "export", "kubeconfig", "--name", s.cluster_name,
             "--kubeconfig", str(kubeconfig)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    cluster.create(config_file=config_file)
    try:
        yield cluster
    finally:
        if s.keep:
            print(
                f"\nkeeping kind cluster {s.cluster_name!r} (MLOPS_E2E_KEEP=1): "
                f"export KUBECONFIG={kubeconfig}; delete with "
                f"`{kind_bin} delete cluster --name {s.cluster_name}`"
            )
        else:
            cluster.delete()


@pytest.fixture(scope="session")
def tools_bin(kind_cluster: Any, e2e_settings: E2ESettings) -> Path:
    """`kind` and `kubectl` (the pinned ones) by name, for child processes' PATH."""
    return link_tools(
        e2e_settings.cache_dir / "clusters" / e2e_settings.cluster_name / "bin",
        {"kind": Path(kind_cluster.kind_path), "kubectl": Path(kind_cluster.kubectl_path)},
    )


@pytest.fixture(scope="session")
def kube(kind_cluster: Any, e2e_settings: E2ESettings, tools_bin: Path) -> Kube:
    k = Kube(
        Path(kind_cluster.kubectl_path),
        Path(kind_cluster.kubeconfig_path),
        kubectl_version=e2e_settings.kubectl_version,
        extra_path=(tools_bin,),
    )
    k.ensure()
    return k


# ---------------------------------------------------------------------------- the platform
@dataclass(frozen=True)
class Platform:
    settings: E2ESettings
    kube: Kube
    deploy_log: Path

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    @property
    def serving_namespace(self) -> str:
        return self.settings.serving_namespace

    @property
    def release(self) -> str:
        return self.settings.release

    def log_dir(self) -> Path:
        return self.settings.reports_dir


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@pytest.fixture(scope="session")
def platform(kind_cluster: Any, kube: Kube, e2e_settings: E2ESettings, tools_bin: Path) -> Platform:
    """The two images loaded into kind and the staged install run against the cluster."""
    s = e2e_settings
    s.reports_dir.mkdir(parents=True, exist_ok=True)
    log = s.reports_dir / "deploy.log"
    images = [s.image("airflow"), s.image("predictor")]
    if s.skip_deploy:
        return Platform(s, kube, log)
    missing = [img for img in images if not docker_image_exists(img)]
    if missing:
        pytest.fail(
            f"image(s) {', '.join(missing)} not found in the local Docker engine: run "
            "`make image` first (`make e2e` does), or set MLOPS_E2E_IMAGE_TAG to a built tag"
        )
    for image in images:
        kind_cluster.load_docker_image(image)
    argv = [
        sys.executable,
        "-m",
        "airflow_project.release",
        "deploy",
        "--env",
        "kind",
        "--release",
        s.release,
        "--namespace",
        s.namespace,
        "--tag",
        s.image_tag,
        "--registry",
        s.registry,
        "--kind-cluster",
        s.cluster_name,
    ]
    env = kube.env() | {"PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    with log.open("w") as out:
        out.write("$ " + " ".join(argv) + "\n")
        out.flush()
        try:
            proc = subprocess.run(
                argv,
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=s.deploy_timeout,
                check=False,
            )
            rc: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            rc = f"timeout after {s.deploy_timeout:.0f}s"
    if rc != 0:
        pods = kube.run("get", "pods", "-A", "-o", "wide", check=False).stdout
        pytest.fail(
            f"staged install failed ({rc}); full log: {log}\n--- log tail ---\n{_tail(log)}"
            f"\n--- pods ---\n{pods[-4000:]}"
        )
    print(f"\nstaged install done in {time.monotonic() - started:.0f}s (log {log})")
    return Platform(s, kube, log)


# ---------------------------------------------------------------------------- access
@pytest.fixture(scope="session")
def ingress(platform: Platform) -> str:
    """Base URL of the Istio ingress gateway (NodePort mapped to the host's loopback)."""
    from kube import port_open

    port = platform.settings.ingress_host_port
    wait_for(
        lambda: port_open(port),
        timeout=120,
        interval=2,
        what=f"the ingress gateway on 127.0.0.1:{port} (kind extraPortMappings)",
    )
    return f"http://127.0.0.1:{port}"


def _api_server_pod(platform: Platform) -> str:
    selector = f"component=api-server,release={platform.release}"
    pods = wait_for(
        lambda: platform.kube.ready_pods(platform.namespace, selector),
        timeout=600,
        what=f"a Ready Airflow api-server pod ({selector})",
    )
    return min(pods)


def _airflow_credentials(platform: Platform, pod: str) -> list[tuple[str, str]]:
    """Candidates: MLOPS_E2E_AIRFLOW_USER/PASSWORD; the Secret airflow-admin `make deploy`
    creates the admin account from; the simple auth manager's generated password file in
    that api-server pod; admin/admin (the chart's default user, if someone enabled it)."""
    out: list[tuple[str, str]] = []
    user = os.environ.get("MLOPS_E2E_AIRFLOW_USER")
    password = os.environ.get("MLOPS_E2E_AIRFLOW_PASSWORD")
    if user and password:
        out.append((user, password))
    secret = platform.kube.run(
        "get", "secret", "airflow-admin", "-n", platform.namespace, "-o", "json", check=False
    )
    with contextlib.suppress(ValueError, KeyError, TypeError):
        data = json.loads(secret.stdout or "{}")["data"]
        out.append(
            (
                base64.b64decode(data["username"]).decode(),
                base64.b64decode(data["password"]).decode(),
            )
        )
    script = (
        'f="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-'
        '${AIRFLOW_HOME:-/opt/airflow}/simple_auth_manager_passwords.json.generated}"; '
        'cat "$f" 2>/dev/null || true'
    )
    proc = platform.kube.run(
        "exec",
        "-n",
        platform.namespace,
        pod,
        "-c",
        "api-server",
        "--",
        "sh",
        "-c",
        script,
        check=False,
    )
    with contextlib.suppress(ValueError, AttributeError):
        for name, pw in json.loads(proc.stdout or "{}").items():
            out.append((name, pw))
    out.append(("admin", "admin"))
    return out


@pytest.fixture(scope="session")
def airflow(platform: Platform) -> Iterator[Any]:
    """An AirflowClient (airflow_project.local.airflow_api) through a port-forward to one
    api-server pod (the simple auth manager's password is per pod)."""
    import httpx

    from airflow_project.local.airflow_api import AirflowApiError, AirflowClient

    pod = _api_server_pod(platform)
    with PortForward(
        platform.kube,
        f"pod/{pod}",
        8080,
        platform.namespace,
        timeout=120,
        log_dir=platform.log_dir(),
    ) as port:
        base = f"http://127.0.0.1:{port}"
        probe = AirflowClient(base, "", None, timeout=10)
        try:
            wait_for(probe.health, timeout=300, interval=5, what=f"Airflow API health on {pod}")
        finally:
            probe.close()
        client = None
        errors = []
        for user, password in _airflow_credentials(platform, pod):
            candidate = AirflowClient(base, user, password, timeout=60)
            try:
                candidate.login()
            except (AirflowApiError, httpx.HTTPError, KeyError, ValueError) as exc:
                errors.append(str(exc))
                candidate.close()
                continue
            client = candidate
            break
        if client is None:
            pytest.fail(
                "could not log in to the Airflow API (set MLOPS_E2E_AIRFLOW_USER and "
                "MLOPS_E2E_AIRFLOW_PASSWORD): " + "; ".join(errors)
            )
        try:
            yield client
        finally:
            client.close()


@pytest.fixture(scope="session")
def mlflow_url(platform: Platform) -> Iterator[str]:
    svc = os.environ.get("MLOPS_E2E_MLFLOW_SERVICE") or f"{platform.release}-mlflow"
    port = int(os.environ.get("MLOPS_E2E_MLFLOW_PORT") or _mlflow_service_port())
    with PortForward(
        platform.kube,
        f"svc/{svc}",
        port,
        platform.namespace,
        timeout=120,
        log_dir=platform.log_dir(),
    ) as local:
        yield f"http://127.0.0.1:{local}"


@pytest.fixture(scope="session")
def datalake(platform: Platform) -> Iterator[Any]:
    """A DataLake on the in-cluster Azurite (port-forward), with the dev Secret's key."""
    from airflow_project.datalake import DataLake

    secret = platform.kube.json("get", "secret", "azure-storage", "-n", platform.namespace)
    conn = base64.b64decode(secret["data"]["AZURE_STORAGE_CONNECTION_STRING"]).decode()
    parts = dict(p.split("=", 1) for p in conn.split(";") if "=" in p)
    account = parts["AccountName"]
    with PortForward(
        platform.kube,
        "svc/azurite",
        10000,
        platform.namespace,
        timeout=120,
        log_dir=platform.log_dir(),
    ) as port:
        local = (
            f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={parts['AccountKey']};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{account};"
        )
        lake = DataLake.from_connection_string(local)
        lake.ensure_containers()
        yield lake


@pytest.fixture(scope="session")
def elasticsearch(platform: Platform) -> Iterator[Any]:
    """An httpx client on the in-cluster Elasticsearch (port-forward; kind serves it over plain
    HTTP) as ECK's `elastic` user."""
    import httpx
    import yaml

    values = yaml.safe_load((REPO / "helm" / "values.yaml").read_text())
    name = values["mlops"]["logging"]["elasticsearchName"]
    secret = platform.kube.json("get", "secret", f"{name}-es-elastic-user", "-n", platform.namespace)
    password = base64.b64decode(secret["data"]["elastic"]).decode()
    forward = PortForward(
        platform.kube, f"svc/{name}-es-http", 9200, platform.namespace, timeout=120, log_dir=platform.log_dir()
    )
    with forward as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=("elastic", password),
                                       timeout=30, trust_env=False) as client:
        yield client
