"""`mlops data upload` against a real Azurite: a user's own export goes where prepare_dataset
reads it and through the pipeline; a bad file is refused before anything is uploaded."""

from __future__ import annotations

import datetime as dt
import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_project.datalake import PREPROCESSED_CONTAINER, RAW_CONTAINER, BlobRef, dataset_path
from airflow_project.host.net import free_port
from airflow_project.wachttijden import synthetic

pytestmark = pytest.mark.integration

MLOPS = str(Path(sys.executable).parent / "mlops")
DAY = dt.datetime(2024, 5, 20, tzinfo=dt.UTC)


def _upload(azurite_port: int, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLOPS_AZURITE_PORT": str(azurite_port), **(env or {})}
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


def test_an_export_the_data_gate_would_stop_is_warned_about_and_refused_with_strict(tmp_path: Path,
                                                                                    azurite_port: int, datalake):
    day = DAY + dt.timedelta(days=2)
    raw = BlobRef(RAW_CONTAINER, dataset_path(day))
    broken = tmp_path / "broken.csv"
    broken.write_bytes(synthetic.to_raw_bytes(synthetic.generate(
        synthetic.SyntheticConfig(rows=800, seed=4, unusable_share=0.3))))
    unreachable = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}  # usable share only
    strict = _upload(azurite_port, "--input", str(broken), "--date", f"{day:%Y-%m-%d}", "--strict", env=unreachable)
    assert strict.returncode == 2, strict.stderr
    assert "refused (--strict), nothing uploaded: " in strict.stderr
    assert "would fail prepare_dataset's data gate (drift not checked: MLflow at http://127.0.0.1:" in strict.stderr
    assert "usable_share 0.6" in strict.stderr and "is below min_usable_share 0.800" in strict.stderr
    assert not datalake.exists(raw)

    warned = _upload(azurite_port, "--input", str(broken), "--date", f"{day:%Y-%m-%d}", env=unreachable)
    assert warned.returncode == 0, warned.stderr
    warning = next(line for line in warned.stderr.splitlines() if line.startswith("mlops data upload: warning: "))
    assert "is below min_usable_share 0.800" in warning and warning.endswith("uploading anyway (--strict refuses such a file)")
    assert datalake.exists(raw)


def test_a_gzip_file_is_named_as_such(tmp_path: Path, azurite_port: int):
    packed = tmp_path / "export.csv.gz"
    packed.write_bytes(gzip.compress(synthetic.to_raw_bytes(synthetic.generate(synthetic.SyntheticConfig(rows=50)))))
    result = _upload(azurite_port, "--input", str(packed), "--date", f"{DAY:%Y-%m-%d}")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"mlops: error: {packed}: is gzip-compressed (decompress it first: gunzip), "
                                     "not a ';'-separated text export")
