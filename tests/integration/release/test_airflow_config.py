"""The rendered Airflow configuration, loaded by Airflow itself: the scheduler's container and
the KubernetesExecutor's task pod template, each with its environment (the chart's
ConfigMaps and Secrets, the cluster's Secrets as kind's development values) and its mounted
files (airflow.cfg, the pod template, Elasticsearch's CA) laid out under a temporary root as
the image has them (AIRFLOW_HOME and the DAGs in /opt/airflow). Only the metadata database
is remapped (the test session's SQLite). In that process: the executor, the auth manager and the remote task-log
handler resolve and are built, every connection resolves to a hook, and the image's DAG
folder parses without import errors."""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
import subprocess
import sys

import pytest
from chart_helpers import ENVS, NAMESPACE, ROOT, named, pod_template, values
from pods import BASE_ENV, container_env

from airflow_project.release import devsecrets

pytestmark = pytest.mark.integration

IMAGE_ROOT = "/opt/airflow"  # AIRFLOW_HOME of the image, its DAGs under dags/ (Dockerfile)
# Every DAG file the image copies (Dockerfile: airflow_project/dags/), each named after its dag_id
# (tests/unit/dags/test_dag_integrity.py holds that naming).
DAG_IDS = {p.stem for p in (ROOT / "airflow_project" / "dags").glob("*.py") if p.stem != "__init__"}

CHECKS = r"""
import json, logging, os
from airflow.configuration import conf
from airflow.executors.executor_loader import ExecutorLoader
from airflow.models.connection import Connection
from airflow.providers_manager import ProvidersManager

out = {"executor": ExecutorLoader.import_default_executor_cls()[0].__name__}
from airflow.api_fastapi.app import get_auth_manager_cls
out["auth_manager"] = get_auth_manager_cls().__name__

# remote task logs: Airflow's own logging config picks the handler, then builds it
from airflow.logging_config import configure_logging, get_remote_task_log
configure_logging()
out["remote_logging"] = conf.getboolean("logging", "remote_logging")
out["remote_log_io"] = type(get_remote_task_log()).__name__
handler = logging.getLogger("airflow.task").handlers[0]
out["task_handler"] = type(handler).__name__
client = getattr(handler, "client", None) or getattr(get_remote_task_log(), "client", None)
out["es_client"] = type(client).__name__ if client is not None else None
out["index_patterns"] = conf.get("elasticsearch", "index_patterns")

# the executor's pod template, where it is mounted (the scheduler launches the task pods)
template = conf.get("kubernetes_executor", "pod_template_file")
if os.path.exists(template):
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
    out["pod_template_containers"] = [c.name for c in PodGenerator.deserialize_model_file(template).spec.containers]

hooks = ProvidersManager().hooks
out["connections"] = {}
for key in sorted(k for k in os.environ if k.startswith("AIRFLOW_CONN_")):
    conn_id = key.removeprefix("AIRFLOW_CONN_").lower()
    conn = Connection.get_connection_from_secrets(conn_id)
    hook = hooks.get(conn.conn_type)
    out["connections"][conn_id] = {"conn_type": conn.conn_type, "hook": hook.hook_class_name if hook else None}
from airflow.providers.microsoft.azure.hooks.wasb import WasbHook
out["wasb_client"] = type(WasbHook(wasb_conn_id="wasb_datalake").get_conn()).__name__
print("CHECKS " + json.dumps(out))
"""


def self_signed_ca() -> str:
    """A self-signed CA certificate (PEM), standing in for ECK's."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def cluster_secrets(env: str) -> dict[str, dict[str, str]]:
    """The Secrets that exist only in the cluster, as kind's development values; Airflow's
    Elasticsearch connection as `make deploy` derives it on kind (TLS in production); ECK's
    CA as a test CA."""
    secrets = devsecrets.dev_values(NAMESPACE)
    es = values(env == "kind")["mlops"]["logging"]["elasticsearchName"]
    url = devsecrets.elasticsearch_url(NAMESPACE, es, "elastic", "test-password", tls=env == "production")
    secrets["airflow-elasticsearch"] = {"connection": url}
    secrets[f"{es}-es-http-certs-public"] = {"ca.crt": self_signed_ca()}
    return secrets


def lay_out(pod: dict, container: dict, objs: list[dict], secrets: dict, root) -> None:
    """The container's volume mounts as files under `root` (a mount at /x is root/x)."""
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        target = root / mount["mountPath"].lstrip("/")
        if "configMap" in volume:
            data = named(objs, "ConfigMap", volume["configMap"]["name"])["data"]
        elif "secret" in volume:
            data = secrets[volume["secret"]["secretName"]]
        else:  # emptyDir and the like
            target.mkdir(parents=True, exist_ok=True)
            continue
        if "subPath" in mount:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[mount["subPath"]])
            continue
        items = (volume.get("configMap") or volume.get("secret") or {}).get("items")
        target.mkdir(parents=True, exist_ok=True)
        for key, path in ((i["key"], i["path"]) for i in items) if items else ((k, k) for k in data):
            (target / path).write_text(data[key])


def under(root, text: str) -> str:
    return text.replace(IMAGE_ROOT, str(root / IMAGE_ROOT.lstrip("/")))


def rendered_airflow(env: str, which: str, objs: list[dict], tmp_path) -> dict[str, str]:
    """Lay out `which` container's files and return its environment, remapped to them."""
    if which == "scheduler":
        pod = named(objs, "Deployment", "mlops-scheduler")["spec"]["template"]["spec"]
        (container,) = [c for c in pod["containers"] if c["name"] == "scheduler"]
        assert container["args"][-1] == "exec airflow scheduler", container["args"]
    else:
        pod = pod_template(objs)["spec"]
        (container,) = pod["containers"]
    secrets = cluster_secrets(env)
    root = tmp_path / "root"
    lay_out(pod, container, objs, secrets, root)
    cfg = root / IMAGE_ROOT.lstrip("/") / "airflow.cfg"
    cfg.write_text(under(root, cfg.read_text()))
    for path in root.rglob("pod_template_file.yaml"):
        path.write_text(under(root, path.read_text()))
    # the image: the DAG files in /opt/airflow/dags (Dockerfile COPY airflow_project/dags/)
    shutil.copytree(ROOT / "airflow_project" / "dags", root / IMAGE_ROOT.lstrip("/") / "dags",
                    ignore=shutil.ignore_patterns("__pycache__"))
    environ = {k: under(root, v) for k, v in container_env(container, objs, secrets).items()}
    assert environ["AIRFLOW_HOME"] == str(root / IMAGE_ROOT.lstrip("/"))
    assert environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql://")
    # the test session's migrated SQLite database (tests/integration/conftest.py airflow_db)
    import os

    environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    return environ


def run_airflow(environ: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    import os

    base = {k: os.environ[k] for k in BASE_ENV if k in os.environ}
    return subprocess.run(argv, env=base | environ, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.parametrize("which", ["scheduler", "task-pod"])
@pytest.mark.parametrize("env", ENVS)
def test_airflow_loads_the_rendered_configuration(plan_render, env, which, tmp_path):
    objs = plan_render(env)
    environ = rendered_airflow(env, which, objs, tmp_path)
    proc = run_airflow(environ, sys.executable, "-c", CHECKS)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("CHECKS ")]
    found = json.loads(line.removeprefix("CHECKS "))
    assert found["executor"] == "KubernetesExecutor"
    assert found["auth_manager"] == "FabAuthManager"
    assert found["remote_logging"] is True
    assert found["remote_log_io"] == "ElasticsearchRemoteLogIO"
    assert found["task_handler"] == "ElasticsearchTaskHandler"
    assert found["index_patterns"] == values()["airflow"]["config"]["elasticsearch"]["index_patterns"]
    assert found.get("pod_template_containers") == (["base"] if which == "scheduler" else None)
    assert found["wasb_client"] == "BlobServiceClient"
    conns = found["connections"]
    assert {"kubernetes_serving", "wasb_datalake", "airflow_db"} <= set(conns), conns
    unresolved = {c: v for c, v in conns.items() if not v["hook"]}
    assert not unresolved, unresolved


@pytest.mark.parametrize("env", ENVS)
def test_the_images_dag_folder_has_no_import_errors(plan_render, env, tmp_path, airflow_db):
    environ = rendered_airflow(env, "scheduler", plan_render(env), tmp_path)
    airflow = str(ROOT / ".venv" / "bin" / "airflow") if (ROOT / ".venv" / "bin" / "airflow").exists() else "airflow"
    errors = run_airflow(environ, airflow, "dags", "list-import-errors", "--local", "-o", "json")
    assert errors.returncode == 0, errors.stderr[-3000:]
    assert json.loads(errors.stdout.strip().splitlines()[-1] or "[]") == [], errors.stdout[-3000:]
    listed = run_airflow(environ, airflow, "dags", "list", "--local", "-o", "json")
    assert listed.returncode == 0, listed.stderr[-3000:]
    dag_ids = {d["dag_id"] for d in json.loads(listed.stdout.strip().splitlines()[-1])}
    assert dag_ids == DAG_IDS


def test_the_layout_decodes_rendered_secrets_as_the_kubelet_does():
    """(The helper's own check: a rendered Secret's base64 `data` reaches the container as text.)"""
    from pods import container_env as env_of

    objs = [{"kind": "Secret", "metadata": {"name": "s"}, "data": {"k": base64.b64encode(b"v").decode()}}]
    container = {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                 "envFrom": [{"secretRef": {"name": "s"}, "prefix": "P_"}]}
    assert env_of(container, objs, {}) == {"P_k": "v", "X": "v"}
