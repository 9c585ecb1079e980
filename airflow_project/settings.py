"""Platform settings, read from the environment in one place: where the local platform
keeps its state (`MLOPS_HOME`) and which ports it uses (`MLOPS_*_PORT`).

A leaf module (stdlib only): the CLI, the local deploy target's builder and the tests
all read the same values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# MLflow's usage telemetry is off in every process the platform starts: a platform
# for patient-adjacent data should not send usage data to a vendor by default.
NO_TELEMETRY_ENV: dict[str, str] = {"MLFLOW_DISABLE_TELEMETRY": "true"}


def _env_port(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"{name} must be a port number, got {value!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"{name} must be between 1 and 65535, got {port}")
    return port


@dataclass(frozen=True)
class Ports:
    """Ports on 127.0.0.1; each can be moved with an MLOPS_*_PORT variable."""

    azurite: int = 10000
    mlflow: int = 5000
    airflow: int = 8080
    serving: int = 8100  # first port handed to local model servers and routers

    @classmethod
    def from_env(cls) -> Ports:
        return cls(
            azurite=_env_port("MLOPS_AZURITE_PORT", cls.azurite),
            mlflow=_env_port("MLOPS_MLFLOW_PORT", cls.mlflow),
            airflow=_env_port("MLOPS_AIRFLOW_PORT", cls.airflow),
            serving=_env_port("MLOPS_SERVING_PORT", cls.serving),
        )


def home_from_env() -> Path:
    """`MLOPS_HOME`, default `.local/` in the repository."""
    return Path(os.environ.get("MLOPS_HOME", REPO_ROOT / ".local"))

