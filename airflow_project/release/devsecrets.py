"""The Secrets the release needs: check them (production), generate them (kind).

No value here is ever written to a file or put on a command line: generated Secrets
go to ``kubectl apply -f -`` on stdin. Existing Secrets are never overwritten, so a
re-deploy does not rotate database passwords under a running Postgres.
"""

from __future__ import annotations

import base64
import json
import secrets as _random
import sys
import time
from dataclasses import dataclass

from .kube import kubectl as _kubectl

AZURITE_ACCOUNT = "mlopsdev"


@dataclass(frozen=True)
class RequiredSecret:
    name: str
    keys: tuple[str, ...]
    purpose: str
    kind_only: bool = False


AIRFLOW_ADMIN = RequiredSecret(
    "airflow-admin",
    ("username", "password"),
    "Airflow admin account (FAB), created by `make deploy` after stage 4",
)

# Names match helm/values.yaml (mlops.secrets, mlops.kind.*.existingSecret and the
# subchart values that reference them; tests/chart checks the two agree).
REQUIRED: tuple[RequiredSecret, ...] = (
    RequiredSecret(
        "airflow-metadata",
        ("connection",),
        "Airflow metadata DB URL postgresql://user:pass@host:5432/airflow",
    ),
    RequiredSecret(
        "airflow-fernet-key", ("fernet-key",), "Airflow Fernet key (encrypts connections in the DB)"
    ),
    RequiredSecret("airflow-api-secret-key", ("api-secret-key",), "Airflow API server secret key"),
    RequiredSecret("airflow-jwt-secret", ("jwt-secret",), "Airflow JWT signing secret"),
    RequiredSecret(
        "airflow-elasticsearch",
        ("connection",),
        "Elasticsearch URL with credentials for task logs https://user:pass@host:9200",
    ),
    RequiredSecret(
        "airflow-conn-wasb-datalake",
        ("AIRFLOW_CONN_WASB_DATALAKE",),
        "Airflow connection wasb_datalake (JSON, conn_type wasb)",
    ),
    RequiredSecret(
        "azure-storage",
        ("AZURE_STORAGE_CONNECTION_STRING",),
        "Azure Storage connection string for MLflow's artifact store",
    ),
    RequiredSecret(
        "mlflow-database", ("username", "password"), "MLflow backend store (Postgres) credentials"
    ),
    AIRFLOW_ADMIN,
    RequiredSecret(
        "postgres-credentials",
        ("username", "password"),
        "in-cluster Postgres superuser (kind)",
        kind_only=True,
    ),
    RequiredSecret(
        "azurite-accounts",
        ("AZURITE_ACCOUNTS",),
        "in-cluster Azurite account:key (kind)",
        kind_only=True,
    ),
)


def required(env: str) -> list[RequiredSecret]:
    return [s for s in REQUIRED if env == "kind" or not s.kind_only]


def _secret_data(name: str, namespace: str) -> dict[str, str] | None:
    """A Secret's `data` (base64 values), or None when it does not exist."""
    proc = _kubectl("get", "secret", name, "-n", namespace, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout).get("data") or {}


def existing_keys(name: str, namespace: str) -> set[str] | None:
    data = _secret_data(name, namespace)
    return None if data is None else set(data)


def missing(env: str, namespace: str) -> list[str]:
    """Human-readable problems: missing Secrets or keys (empty: all there)."""
    problems = []
    for sec in required(env):
        keys = existing_keys(sec.name, namespace)
        if keys is None:
            problems.append(
                f"Secret {namespace}/{sec.name} with keys {', '.join(sec.keys)}: {sec.purpose}"
            )
        elif not set(sec.keys) <= keys:
            lacking = sorted(set(sec.keys) - keys)
            problems.append(
                f"Secret {namespace}/{sec.name} lacks keys {', '.join(lacking)}: {sec.purpose}"
            )
    return problems


def fernet_key() -> str:
    return base64.urlsafe_b64encode(_random.token_bytes(32)).decode()


def dev_values(namespace: str) -> dict[str, dict[str, str]]:
    """Fresh random development credentials for kind (everything but Elasticsearch)."""
    pg_user = "mlops"
    pg_pass = _random.token_urlsafe(24)
    az_key = base64.b64encode(_random.token_bytes(64)).decode()
    blob = f"http://azurite.{namespace}.svc.cluster.local:10000/{AZURITE_ACCOUNT}"
    conn_str = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={az_key};"
        f"BlobEndpoint={blob};"
    )
    pg_host = f"postgres.{namespace}.svc.cluster.local"
    return {
        "postgres-credentials": {"username": pg_user, "password": pg_pass},
        "airflow-metadata": {
            "connection": f"postgresql://{pg_user}:{pg_pass}@{pg_host}:5432/airflow"
        },
        "mlflow-database": {"username": pg_user, "password": pg_pass},
        "airflow-fernet-key": {"fernet-key": fernet_key()},
        "airflow-api-secret-key": {"api-secret-key": _random.token_urlsafe(32)},
        "airflow-jwt-secret": {"jwt-secret": _random.token_urlsafe(32)},
        "airflow-admin": {"username": "admin", "password": _random.token_urlsafe(18)},
        "azurite-accounts": {"AZURITE_ACCOUNTS": f"{AZURITE_ACCOUNT}:{az_key}"},
        "azure-storage": {"AZURE_STORAGE_CONNECTION_STRING": conn_str},
        "airflow-conn-wasb-datalake": {
            "AIRFLOW_CONN_WASB_DATALAKE": json.dumps(
                {"conn_type": "wasb", "extra": {"connection_string": conn_str}}
            )
        },
    }


def secret_manifest(name: str, namespace: str, data: dict[str, str]) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {
                    "app.kubernetes.io/part-of": "airflow-project",
                    "mlops/generated": "dev",
                },
            },
            "type": "Opaque",
            "stringData": data,
        }
    )


def ensure_namespace(namespace: str) -> None:
    if _kubectl("get", "namespace", namespace, check=False).returncode != 0:
        _kubectl("create", "namespace", namespace)


def create_dev(namespace: str) -> list[str]:
    """Create the kind development Secrets that do not exist yet; returns their names."""
    ensure_namespace(namespace)
    values = dev_values(namespace)
    # Secrets sharing one credential are created together or not at all.
    groups = [
        ("postgres-credentials", "airflow-metadata", "mlflow-database"),
        ("azurite-accounts", "azure-storage", "airflow-conn-wasb-datalake"),
        ("airflow-fernet-key",),
        ("airflow-api-secret-key",),
        ("airflow-jwt-secret",),
        ("airflow-admin",),
    ]
    created = []
    for group in groups:
        if all(existing_keys(n, namespace) is not None for n in group):
            continue
        for name in group:
            _kubectl("apply", "-f", "-", stdin=secret_manifest(name, namespace, values[name]))
            created.append(name)
    return created


def elasticsearch_url(namespace: str, es_name: str, user: str, password: str, *, tls: bool) -> str:
    """Airflow's remote-logging URL: ECK's HTTP Service `<name>-es-http`, port 9200
    (cloud-on-k8s pkg/apis/elasticsearch/v1/name.go), https unless TLS is off (kind)."""
    scheme = "https" if tls else "http"
    return f"{scheme}://{user}:{password}@{es_name}-es-http.{namespace}.svc.cluster.local:9200"


def elasticsearch_from_eck(
    namespace: str, es_name: str = "elasticsearch", timeout: int = 300
) -> None:
    """kind: build airflow-elasticsearch from the elastic user ECK generated (HTTP, no TLS)."""
    if existing_keys("airflow-elasticsearch", namespace) is not None:
        return
    deadline = time.monotonic() + timeout
    while True:
        proc = _kubectl(
            "get",
            "secret",
            f"{es_name}-es-elastic-user",
            "-n",
            namespace,
            "-o",
            "jsonpath={.data.elastic}",
            check=False,
        )
        if proc.returncode == 0 and proc.stdout:
            password = base64.b64decode(proc.stdout).decode()
            break
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"ECK secret {es_name}-es-elastic-user did not appear in {namespace}"
            )
        time.sleep(5)
    url = elasticsearch_url(namespace, es_name, "elastic", password, tls=False)
    _kubectl(
        "apply",
        "-f",
        "-",
        stdin=secret_manifest("airflow-elasticsearch", namespace, {"connection": url}),
    )


def secret_values(name: str, namespace: str, keys: tuple[str, ...]) -> dict[str, str]:
    """The decoded `keys` of an existing Secret; names what is missing otherwise."""
    data = _secret_data(name, namespace)
    if data is None:
        raise RuntimeError(f"Secret {namespace}/{name} not found")
    lacking = [k for k in keys if k not in data]
    if lacking:
        raise RuntimeError(f"Secret {namespace}/{name} lacks keys {', '.join(lacking)}")
    return {k: base64.b64decode(data[k]).decode() for k in keys}


# Username and password arrive on stdin, one per line: never on kubectl's command line
# (local process list, shell history). FAB's `users create` leaves an existing account
# as it is (and exits 0).
_CREATE_ADMIN = (
    "IFS= read -r user && IFS= read -r password && exec airflow users create --role Admin "
    '--username "$user" --password "$password" --firstname Airflow --lastname Admin '
    '--email "$user@example.invalid"'
)


def create_airflow_admin(namespace: str, release: str, timeout: int = 600) -> None:
    """Create the Airflow admin account from the airflow-admin Secret (once).

    Runs in a Ready api-server pod of the release, after stage 4. To change the password
    later use the UI or `airflow users reset-password`: re-deploying does not.
    """
    creds = secret_values(AIRFLOW_ADMIN.name, namespace, AIRFLOW_ADMIN.keys)
    for key, value in creds.items():
        if not value or "\n" in value:  # one line each on stdin
            raise RuntimeError(
                f"Secret {namespace}/{AIRFLOW_ADMIN.name}: {key} must be one non-empty line"
            )
    selector = f"component=api-server,release={release}"
    waited = _kubectl(
        "wait",
        "--for=condition=Ready",
        "pod",
        "-l",
        selector,
        "-n",
        namespace,
        f"--timeout={timeout}s",
        check=False,
    )
    if waited.returncode != 0:
        raise RuntimeError(
            f"no Ready Airflow api-server pod ({selector}) in namespace {namespace} "
            f"within {timeout}s: {waited.stderr.strip()}"
        )
    pods = _kubectl("get", "pods", "-l", selector, "-n", namespace, "-o", "name").stdout.split()
    if not pods:
        raise RuntimeError(f"no Airflow api-server pod ({selector}) in namespace {namespace}")
    proc = _kubectl(
        "exec",
        "-i",
        "-n",
        namespace,
        min(pods),
        "-c",
        "api-server",
        "--",
        "sh",
        "-c",
        _CREATE_ADMIN,
        stdin=f"{creds['username']}\n{creds['password']}\n",
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"airflow users create failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
        )


def describe(env: str) -> str:
    lines = []
    for sec in required(env):
        lines.append(f"  {sec.name:28s} keys: {', '.join(sec.keys):40s} {sec.purpose}")
    return "\n".join(lines)


def check_or_die(env: str, namespace: str) -> None:
    problems = missing(env, namespace)
    if problems:
        print(
            f"Refusing to deploy ({env}): required Secrets are missing in namespace {namespace}:",
            file=sys.stderr,
        )
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        print("Create them first (see README.md, 'Deploy to Kubernetes').", file=sys.stderr)
        raise SystemExit(2)
