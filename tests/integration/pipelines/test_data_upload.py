"""`mlops data upload` against a real Azurite: a user's own export goes where prepare_dataset
reads it and through the pipeline; a bad file is refused before anything is uploaded."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_project.datalake import PREPROCESSED_CONTAINER, RAW_CONTAINER, BlobRef, dataset_path
from airflow_project.wachttijden import synthetic

pytestmark = pytest.mark.integration

MLOPS = str(Path(sys.executable).parent / "mlops")
DAY = dt.datetime(2024, 5, 20, tzinfo=dt.UTC)


def _upload(azurite_port: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLOPS_AZURITE_PORT": str(azurite_port)}
    return subprocess.run([MLOPS, "data", "upload", *args], capture_output=True, text=True, timeout=120,
                          env=env, check=False)


def test_an_uploaded_export_goes_through_prepare_dataset(tmp_path: Path, azurite_port: int, datalake,
                                                         airflow_services):
    from airflow.dag_processing.dagbag import DagBag

    export = tmp_path / "my-export.csv"
    export.write_bytes(synthetic.to_raw_bytes(synthetic.generate(synthetic.SyntheticConfig(rows=800, seed=3))))
    result = _upload(azurite_port, "--input", str(export), "--date", f"{DAY:%Y-%m-%d}")
    assert result.returncode == 0, result.stderr
    raw = BlobRef(RAW_CONTAINER, dataset_path(DAY))
    assert f"to {raw}" in result.stderr and "trigger prepare_dataset for logical date 2024-05-20" in result.stderr
    assert datalake.read(raw) == export.read_bytes()  # the file as it is, not a rewrite

    again = _upload(azurite_port, "--input", str(export), "--date", f"{DAY:%Y-%m-%d}")
    assert again.returncode == 2 and f"{raw} already exists in the data lake; pass --replace" in again.stderr
    assert _upload(azurite_port, "--input", str(export), "--date", f"{DAY:%Y-%m-%d}", "--replace").returncode == 0

    run = DagBag().get_dag("prepare_dataset").test(logical_date=DAY)
    assert run.state == "success"
    prepared = datalake.read(BlobRef(PREPROCESSED_CONTAINER, dataset_path(DAY))).decode("utf-8").splitlines()
    assert 700 < len(prepared) - 1 <= 800


def test_a_bad_export_is_refused_before_upload(tmp_path: Path, azurite_port: int, datalake):
    day = DAY + dt.timedelta(days=1)
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"ROAZ_REGIO;SPECIALISME\r\nNetwerk Acute Zorg West;Orthopedie (305)\r\n")
    result = _upload(azurite_port, "--input", str(bad), "--date", f"{day:%Y-%m-%d}")
    assert result.returncode == 2
    assert f"{bad}: missing required column(s) WACHTTIJD, TYPE_WACHTTIJD, TYPE_ZORGINSTELLING" in result.stderr
    assert not datalake.exists(BlobRef(RAW_CONTAINER, dataset_path(day)))
