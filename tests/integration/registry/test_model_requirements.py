"""The registered model declares its own runtime: the same pinned list whether training
runs inside the project folder (where MLflow would export the whole uv project) or
elsewhere (where it would capture the test runner's packages)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_project.registry import MODEL_RUNTIME, model_pip_requirements
from airflow_project.settings import REPO_ROOT

pytestmark = pytest.mark.integration

MLOPS = str(Path(sys.executable).parent / "mlops")


def _mlops(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MLOPS, *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env=dict(os.environ), check=False)


def _registered_requirements(tracking_uri: str, model_uri: str) -> list[str]:
    """requirements.txt of a registered version, read back through the MLflow server."""
    import mlflow.pyfunc

    mlflow.set_tracking_uri(tracking_uri)
    path = mlflow.pyfunc.get_model_dependencies(model_uri, format="pip")
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def test_registered_model_requirements_are_the_pinned_runtime_wherever_training_runs(
        tmp_path: Path, mlflow_server: str):
    raw, prepared = tmp_path / "raw.csv", tmp_path / "prepared.csv"
    assert _mlops("data", "generate", "--rows", "2000", "--output", str(raw), cwd=tmp_path).returncode == 0
    assert _mlops("data", "prepare", "--input", str(raw), "--output", str(prepared), cwd=tmp_path).returncode == 0
    expected = model_pip_requirements()
    assert [line.split("==")[0] for line in expected] == list(MODEL_RUNTIME)
    for cwd in (REPO_ROOT, tmp_path):  # inside the uv project, and outside it
        result = _mlops("train", "--input", str(prepared), "--tracking-uri", mlflow_server, "--force", cwd=cwd)
        assert result.returncode == 0, result.stderr
        model_uri = json.loads(result.stdout)["model_uri"]
        assert _registered_requirements(mlflow_server, model_uri) == expected, cwd
        assert "requirements from uv project" not in result.stderr, result.stderr  # no inference ran
        assert "Failed to resolve installed pip version" not in result.stderr, result.stderr
