"""`mlops train` against a real MLflow server: JSON contract and promotion in both directions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

MLOPS = str(Path(sys.executable).parent / "mlops")


def mlops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MLOPS, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, check=False)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("train")
    raw, prepared = folder / "raw.csv", folder / "prepared.csv"
    assert mlops("data", "generate", "--rows", "4000", "--seed", "21", "--output", str(raw)).returncode == 0
    assert mlops("data", "prepare", "--input", str(raw), "--output", str(prepared)).returncode == 0
    return prepared


def _train(prepared: Path, uri: str, estimator: str, *flags: str) -> dict:
    result = mlops("train", "--input", str(prepared), "--tracking-uri", uri, "--estimator", estimator, *flags)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


def test_promotion_rule_in_both_directions(prepared: Path, fresh_mlflow_server: str):
    mlflow_server = fresh_mlflow_server
    from mlflow import MlflowClient

    from airflow_project.wachttijden.schema import MODEL_NAME

    client = MlflowClient(mlflow_server)
    # linear is clearly worse than the tree on this data: it must not replace it,
    # and the tree must replace a linear champion.
    first = _train(prepared, mlflow_server, "linear")
    assert set(first) == {"run_id", "model_uri", "version", "promoted", "metrics", "registered"}
    assert first["registered"] is True
    assert set(first["metrics"]) == {"r2", "mae", "rmse", "baseline_mae"}
    assert first["model_uri"] == f"models:/{MODEL_NAME}/{first['version']}"

    better = _train(prepared, mlflow_server, "decision_tree")
    assert better["metrics"]["mae"] < first["metrics"]["mae"]
    assert better["promoted"] is True
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").version == better["version"]

    # the same data and configuration as the first: nothing registered, that version named
    same = _train(prepared, mlflow_server, "linear")
    assert (same["registered"], same["version"], same["promoted"]) == (False, first["version"], False)
    assert same["metrics"] == first["metrics"]
    assert client.get_model_version_by_alias(MODEL_NAME, "challenger").version == better["version"]

    worse = _train(prepared, mlflow_server, "linear", "--force")
    assert worse["registered"] is True and int(worse["version"]) == int(better["version"]) + 1
    assert worse["promoted"] is False
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").version == better["version"]
    assert client.get_model_version_by_alias(MODEL_NAME, "challenger").version == worse["version"]
    decision = client.get_run(worse["run_id"]).data.tags["promotion_decision"]
    assert decision.startswith(f"kept champion v{better['version']}")
    assert client.get_run(worse["run_id"]).data.metrics["champion_mae"] == pytest.approx(
        better["metrics"]["mae"])


def test_train_rejects_unprepared_input_with_the_row(tmp_path: Path, mlflow_server: str):
    bad = tmp_path / "bad.csv"
    bad.write_text("WACHTTIJD;TYPE_WACHTTIJD;SPECIALISME;ROAZ_REGIO;TYPE_ZORGINSTELLING\n"
                   "onbekend;a;b;c;d\n", encoding="utf-8")
    result = mlops("train", "--input", str(bad), "--tracking-uri", mlflow_server)
    assert result.returncode != 0
    assert "column WACHTTIJD has 1 non-numeric value(s)" in result.stderr
    assert result.stdout == ""
