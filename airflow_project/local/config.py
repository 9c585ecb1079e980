"""Configuration of the local platform: ports, folders and the Airflow environment.

Everything is configured through environment variables (Airflow reads
`AIRFLOW__SECTION__KEY` and `AIRFLOW_CONN_*`), never through the UI, so that a
fresh `.local/` folder is enough to rebuild the platform.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from airflow_project.datalake import CONNECTION_ID
from airflow_project.host.files import write_atomic
from airflow_project.settings import NO_TELEMETRY_ENV, Ports, home_from_env

DAGS_FOLDER = Path(__file__).resolve().parents[1] / "dags"
AIRFLOW_ADMIN_USER = "admin"
# The DAGs `mlops up` runs.
PREPARE_DAG = "prepare_dataset"
TRAIN_DAG = "train_model"
MIRROR_DAG = "deploy_traffic_mirroring"
MONITOR_DAG = "monitor_serving"

# Azurite's published development account. It is not a secret: every Azurite
# installation accepts it, and it only works against 127.0.0.1.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def azurite_connection_string(port: int, host: str = "127.0.0.1") -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://{host}:{port}/{AZURITE_ACCOUNT};"
    )


@dataclass(frozen=True)
class LocalConfig:
    root: Path = field(default_factory=home_from_env)
    ports: Ports = field(default_factory=Ports.from_env)

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        """pid files of the processes this platform started."""
        return self.root / "run"

    @property
    def azurite_data(self) -> Path:
        return self.root / "azurite"

    @property
    def mlflow_data(self) -> Path:
        return self.root / "mlflow"

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    @property
    def azurite_connection_string(self) -> str:
        return azurite_connection_string(self.ports.azurite)

    @property
    def mlflow_uri(self) -> str:
        return f"http://127.0.0.1:{self.ports.mlflow}"

    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.airflow}"

    def _secret(self, name: str) -> str:
        """A random secret generated once per .local/ folder (never committed)."""
        path = self.airflow_home / f".{name}"
        if not path.exists():
            write_atomic(path, secrets.token_urlsafe(64), mode=0o600)
        return path.read_text().strip()

    def airflow_env(self) -> dict[str, str]:
        """Environment for every Airflow process and for `dag.test()` in tests."""
        home = self.airflow_home
        home.mkdir(parents=True, exist_ok=True)
        connection = {"conn_type": "wasb", "extra": {"connection_string": self.azurite_connection_string}}
        return {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # Two task processes at a time, as many as the DAGs run in parallel (deploy_primary
            # and deploy_shadow): the LocalExecutor keeps that many workers (~145 MiB each).
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.airflow_url}/execution/",
            "AIRFLOW__API__PORT": str(self.ports.airflow),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": self.airflow_url,
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secret("jwt_secret"),
            "AIRFLOW__API__SECRET_KEY": self._secret("api_secret_key"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            # A new DAG run starts without a manual unpause in the UI.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs / "airflow"),
            f"AIRFLOW_CONN_{CONNECTION_ID.upper()}": json.dumps(connection),
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            # Serving from DAGs goes to the local serving controller.
            "MLOPS_DEPLOY_TARGET": "local",
            "MLOPS_HOME": str(self.root),
            "NO_PROXY": "127.0.0.1,localhost",
            **NO_TELEMETRY_ENV,
        }

    def airflow_password(self) -> str | None:
        """The admin password Airflow's simple auth manager generated, once it has."""
        path = self.airflow_home / "passwords.json"
        try:
            return json.loads(path.read_text()).get(AIRFLOW_ADMIN_USER)
        except (OSError, ValueError):
            return None
