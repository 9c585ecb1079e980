"""prepare_dataset and train_model run for real with dag.test() against Azurite and MLflow."""

from __future__ import annotations

import datetime as dt

import pytest

from airflow_project.datalake import (
    INTERMEDIATE_CONTAINER,
    PREPROCESSED_CONTAINER,
    RAW_CONTAINER,
    BlobRef,
    dataset_path,
)
from airflow_project.wachttijden import synthetic
from airflow_project.wachttijden.dataset import read_intermediate
from airflow_project.wachttijden.schema import COLUMNS, MODEL_NAME
from tests.integration.pipelines.pipeline_helpers import pipeline_dag

pytestmark = pytest.mark.integration

DAY = dt.datetime(2024, 3, 7, tzinfo=dt.UTC)


def _upload_raw(lake, day: dt.datetime, rows: int = 3000, seed: int = 1) -> BlobRef:
    ref = BlobRef(RAW_CONTAINER, dataset_path(day))
    frame = synthetic.generate(synthetic.SyntheticConfig(rows=rows, seed=seed))
    lake.write(ref, synthetic.to_raw_bytes(frame))
    return ref


def test_prepare_dataset_writes_both_stages_at_logical_date_paths(datalake, airflow_services):
    _upload_raw(datalake, DAY)
    run = pipeline_dag("prepare_dataset").test(logical_date=DAY)
    assert run.state == "success"

    intermediate_path = "wachttijden/2024/03/07/wachttijden.parquet"
    intermediate = read_intermediate(
        datalake.read(BlobRef(INTERMEDIATE_CONTAINER, intermediate_path)), intermediate_path
    )
    path = "wachttijden/2024/03/07/wachttijden.csv"
    preprocessed = datalake.read(BlobRef(PREPROCESSED_CONTAINER, path)).decode("utf-8")
    assert list(intermediate.columns) == list(COLUMNS)
    assert preprocessed.splitlines()[0] == ";".join(COLUMNS)
    # about 3% of generated targets are empty: dropped from preprocessed only
    assert len(preprocessed.splitlines()) - 1 < len(intermediate) == 3000


def test_prepare_dataset_rerun_for_same_date_gives_same_output(datalake, airflow_services):
    day = DAY + dt.timedelta(days=1)
    _upload_raw(datalake, day, seed=5)
    ref = BlobRef(PREPROCESSED_CONTAINER, dataset_path(day))
    assert pipeline_dag("prepare_dataset").test(logical_date=day).state == "success"
    first = datalake.read(ref)
    assert pipeline_dag("prepare_dataset").test(logical_date=day).state == "success"
    assert datalake.read(ref) == first


def test_broken_raw_file_fails_with_message_and_writes_nothing(datalake, airflow_services, capfd):
    day = DAY + dt.timedelta(days=2)
    raw = BlobRef(RAW_CONTAINER, dataset_path(day))
    datalake.write(raw, b"ROAZ_REGIO;SPECIALISME\r\nNetwerk Acute Zorg West;Orthopedie (305)\r\n")
    run = pipeline_dag("prepare_dataset").test(logical_date=day)
    assert run.state == "failed"
    task_log = "".join(capfd.readouterr())
    assert (
        "raw/wachttijden/2024/03/09/wachttijden.csv: missing required column(s) "
        "WACHTTIJD, TYPE_WACHTTIJD, TYPE_ZORGINSTELLING" in task_log
    )
    assert datalake.list(INTERMEDIATE_CONTAINER, "wachttijden/2024/03/09/") == []
    assert not datalake.exists(BlobRef(PREPROCESSED_CONTAINER, dataset_path(day)))


def test_train_model_logs_and_registers_with_alias(datalake, airflow_services):
    from mlflow import MlflowClient

    day = DAY + dt.timedelta(days=3)
    _upload_raw(datalake, day, rows=4000, seed=9)
    assert pipeline_dag("prepare_dataset").test(logical_date=day).state == "success"
    input_path = f"{PREPROCESSED_CONTAINER}/{dataset_path(day)}"

    run = pipeline_dag("train_model").test(logical_date=day, run_conf={"input_path": input_path})
    assert run.state == "success"

    client = MlflowClient(airflow_services["mlflow"])
    challenger = client.get_model_version_by_alias(MODEL_NAME, "challenger")
    mlflow_run = client.get_run(challenger.run_id)
    assert {"r2", "mae", "rmse", "baseline_mae"} <= set(mlflow_run.data.metrics)
    assert mlflow_run.data.metrics["mae"] < mlflow_run.data.metrics["baseline_mae"]
    assert mlflow_run.data.params["input"] == input_path
    assert mlflow_run.data.params["estimator"] == "decision_tree"
    assert mlflow_run.data.tags["promotion_decision"]
    artifacts = {a.path for a in client.list_artifacts(challenger.run_id, "plots")}
    assert artifacts == {"plots/predicted_vs_actual.png"}
