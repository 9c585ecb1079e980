"""The data gate and the backtest for real: prepare_dataset and train_model with dag.test()
on Azurite and an MLflow server with an empty registry (this module's own).

One story, export by export: a first clean export passes without a baseline and trains the
champion; a drifted export fails the gate with the measures in the message and writes
nothing to `preprocessed`; the same drifted export passes with an override, which MLflow
records; a second clean export passes against the champion's data; training on it first
backtests the champion on it, and the promotion decision and the model cards use that.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path

import pytest

from airflow_project.data_tracking import DATA_EXPERIMENT, PLOT_ARTIFACT, REPORT_ARTIFACT
from airflow_project.datalake import PREPROCESSED_CONTAINER, RAW_CONTAINER, BlobRef, dataset_path
from airflow_project.registry import BACKTEST_METRIC
from airflow_project.wachttijden import synthetic
from airflow_project.wachttijden.schema import MODEL_NAME
from tests.integration.pipelines.pipeline_helpers import pipeline_dag

pytestmark = pytest.mark.integration

FIRST = dt.datetime(2025, 6, 2, tzinfo=dt.UTC)
DRIFTED = FIRST + dt.timedelta(days=1)
OVERRIDDEN = FIRST + dt.timedelta(days=2)
SECOND = FIRST + dt.timedelta(days=3)
ROWS = 3000


def _upload(lake, day: dt.datetime, config: synthetic.SyntheticConfig) -> None:
    lake.write(BlobRef(RAW_CONTAINER, dataset_path(day)), synthetic.to_raw_bytes(synthetic.generate(config)))


def _preprocessed(day: dt.datetime) -> BlobRef:
    return BlobRef(PREPROCESSED_CONTAINER, dataset_path(day))


def _data_runs(client, day: dt.datetime) -> list:
    experiment = client.get_experiment_by_name(DATA_EXPERIMENT)
    export = f"{RAW_CONTAINER}/{dataset_path(day)}"
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.export = '{export}'",
                              order_by=["attributes.start_time DESC"])


def _report(client, run) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(client.download_artifacts(run.info.run_id, REPORT_ARTIFACT, tmp)).read_text())


@pytest.fixture(scope="module")
def champion(services: str, datalake, client) -> dict:
    """The first export: prepared without a baseline, then trained: version 1, champion."""
    _upload(datalake, FIRST, synthetic.SyntheticConfig(rows=ROWS, seed=11))
    assert pipeline_dag("prepare_dataset").test(logical_date=FIRST).state == "success"
    path = str(_preprocessed(FIRST))
    assert pipeline_dag("train_model").test(logical_date=FIRST, run_conf={"input_path": path}).state == "success"
    version = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert version.version == "1"
    return {"version": version, "path": path}


def test_first_export_passes_with_the_baseline_checks_not_applicable(champion, client):
    [run] = _data_runs(client, FIRST)
    assert run.data.tags["gate"] == "passed"
    assert run.data.tags["baseline"] == "not applicable: no champion yet, the first model"
    assert run.data.tags["preprocessed"] == champion["path"]
    assert 0.9 < run.data.metrics["usable_share"] < 1.0 and "drift" not in run.data.metrics
    report = _report(client, run)
    assert report["passed"] is True and report["drift"] is None and report["baseline"]["applicable"] is False
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {PLOT_ARTIFACT}
    # the champion has a model card, with the data report's drop counts
    card = champion["version"].description
    assert card.startswith(f"# Model card: {MODEL_NAME} version 1")
    assert f"- Raw export: {ROWS:,} rows, {int(run.data.metrics['rows_usable']):,} usable" in card
    assert "promoted: no champion yet" in card


def test_drifted_export_fails_the_gate_with_the_measures_and_writes_nothing(champion, datalake, client, capfd):
    _upload(datalake, DRIFTED, synthetic.DRIFTED.__class__(
        **{**synthetic.DRIFTED.__dict__, "rows": ROWS, "seed": 12}))
    run = pipeline_dag("prepare_dataset").test(logical_date=DRIFTED)
    assert run.state == "failed"
    log = "".join(capfd.readouterr())
    raw = f"raw/{dataset_path(DRIFTED)}"
    assert f"{raw}: data gate failed, nothing written to preprocessed/{dataset_path(DRIFTED)}: usable_share 0.6" in log
    assert "is below min_usable_share 0.800" in log
    assert "is above max_drift 0.200 (PSI against champion v1's training data" in log
    assert "SPECIALISME" in log and "WACHTTIJD" in log
    assert "run again with the param gate_override set to the reason" in log
    assert not datalake.exists(_preprocessed(DRIFTED))
    states = {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}
    assert states["validate_export"] == ("failed", 1)  # no retry
    assert states["fix_missing_values"][0] == "upstream_failed"

    [data_run] = _data_runs(client, DRIFTED)
    assert data_run.data.tags["gate"] == "failed"
    report = _report(client, data_run)
    assert report["passed"] is False and len(report["reasons"]) == 2
    assert report["new_categories"]["SPECIALISME"]["301 - Oogheelkunde"] > 0
    assert data_run.data.metrics["drift"] > 1.0


def test_override_lets_one_run_through_and_is_recorded(champion, datalake, client):
    _upload(datalake, OVERRIDDEN, synthetic.SyntheticConfig(rows=ROWS, seed=13, target_shift_weeks=4.0))
    reason = "test: a known shift, checked by the test suite"
    run = pipeline_dag("prepare_dataset").test(logical_date=OVERRIDDEN, run_conf={"gate_override": reason})
    assert run.state == "success"
    assert datalake.exists(_preprocessed(OVERRIDDEN))
    [data_run] = _data_runs(client, OVERRIDDEN)
    assert data_run.data.tags["gate"] == "overridden"
    assert data_run.data.tags["gate_override"] == reason
    assert _report(client, data_run)["override"] == reason


def test_clean_export_passes_against_the_champions_data(champion, datalake, client):
    _upload(datalake, SECOND, synthetic.SyntheticConfig(rows=ROWS, seed=14))
    assert pipeline_dag("prepare_dataset").test(logical_date=SECOND).state == "success"
    assert datalake.exists(_preprocessed(SECOND))
    [data_run] = _data_runs(client, SECOND)
    assert data_run.data.tags["gate"] == "passed"
    assert data_run.data.tags["baseline"] == f"champion v1's training data {champion['path']}"
    assert data_run.data.metrics["drift"] < 0.2
    assert data_run.data.metrics["new_categories"] == 0


def test_champion_is_backtested_on_the_second_export_before_training(champion, datalake, client):
    path = str(_preprocessed(SECOND))
    if not datalake.exists(_preprocessed(SECOND)):  # this test alone: prepare the export first
        _upload(datalake, SECOND, synthetic.SyntheticConfig(rows=ROWS, seed=14))
        assert pipeline_dag("prepare_dataset").test(logical_date=SECOND).state == "success"
    run = pipeline_dag("train_model").test(logical_date=SECOND, run_conf={"input_path": path})
    assert run.state == "success"
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert tis["backtest"].end_date <= tis["train_and_register"].start_date

    v1 = champion["version"]
    [point] = client.get_metric_history(v1.run_id, BACKTEST_METRIC)
    assert point.step == 20250605
    assert 0.3 < point.value < 3.0
    v1_card = client.get_model_version(MODEL_NAME, "1").description
    assert f"| 2025-06-05 | `{path}` | {point.value:.4f} | " in v1_card

    v2 = client.get_model_version_by_alias(MODEL_NAME, "challenger")
    assert v2.version == "2"
    new_run = client.get_run(v2.run_id)
    assert new_run.data.metrics["champion_backtest_mae"] == pytest.approx(point.value)
    decision = new_run.data.tags["promotion_decision"]
    assert f"v1's backtest mae {point.value:.4f} on the unseen export of 2025-06-05" in decision
    assert "margin 10%" in decision
    assert v2.tags["promotion_decision"] == decision
    card = v2.description
    assert card.startswith(f"# Model card: {MODEL_NAME} version 2") and decision in card
    assert f"- v1 (champion, challenger): backtest_mae {point.value:.3f} on" in card
    assert "(export date 2025-06-05)" in card
    assert {a.path for a in client.list_artifacts(v2.run_id)} >= {"model_card.md"}
    datasets = new_run.inputs.dataset_inputs
    assert [d.dataset.name for d in datasets] == [MODEL_NAME]
    assert datasets[0].dataset.source.endswith(f'{path}"}}')


def test_a_rewritten_or_deleted_baseline_is_not_taken_for_the_champions_data(champion, datalake, client):
    """Runs last: it rewrites, then deletes, the champion's training data in the lake."""
    current = client.get_model_version_by_alias(MODEL_NAME, "champion")
    trained_on = BlobRef.parse(client.get_run(current.run_id).data.params["input"])
    original = datalake.read(trained_on)
    header, *rows = original.decode("utf-8").splitlines()
    try:
        datalake.write(trained_on, "\n".join([header, *rows[: len(rows) // 2]]).encode("utf-8") + b"\n")
        day = SECOND + dt.timedelta(days=1)
        _upload(datalake, day, synthetic.SyntheticConfig(rows=ROWS, seed=15))
        assert pipeline_dag("prepare_dataset").test(logical_date=day).state == "success"
        [data_run] = _data_runs(client, day)
        assert data_run.data.tags["baseline"].startswith(
            f"not applicable: {trained_on} changed since champion v{current.version} was trained on it (digest ")
        assert "drift" not in data_run.data.metrics

        datalake.delete(trained_on)
        day += dt.timedelta(days=1)
        _upload(datalake, day, synthetic.SyntheticConfig(rows=ROWS, seed=16))
        assert pipeline_dag("prepare_dataset").test(logical_date=day).state == "success"
        [data_run] = _data_runs(client, day)
        assert data_run.data.tags["baseline"] == (
            f"not applicable: champion v{current.version}'s training data {trained_on} no longer exists")
    finally:
        datalake.write(trained_on, original)
