"""What a version means, for real: prepare_dataset and train_model with dag.test() on Azurite
and an MLflow server with an empty registry (this module's own).

One story: a current export trains version 1 (champion and challenger); prepare_dataset
again on the same, unchanged raw export writes nothing and says `unchanged` in its result
and its asset event; train_model again on that data registers nothing and names version 1
(the Param force_retrain does register one); then the README's example of a user's own,
older export (2024-03-09): its version is registered and tagged as a backfill, and every
alias stays where it was; `mlops up` and deploy_traffic_mirroring order versions by the
export date, not by number.
"""

from __future__ import annotations

import datetime as dt

import pytest

from airflow_project import lineage
from airflow_project.data_tracking import DATA_EXPERIMENT
from airflow_project.datalake import PREPROCESSED_CONTAINER, RAW_CONTAINER, BlobRef, dataset_path
from airflow_project.registry import EXPERIMENT, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND
from airflow_project.wachttijden import synthetic
from airflow_project.wachttijden.schema import MODEL_NAME
from tests.integration.pipelines.pipeline_helpers import pipeline_dag

pytestmark = pytest.mark.integration

CURRENT = dt.datetime(2026, 6, 10, tzinfo=dt.UTC)
OLDER = dt.datetime(2024, 3, 9, tzinfo=dt.UTC)  # the README's example of a user's own export
ROWS = 3000


def _xcom(run, task_id: str, key: str = "return_value"):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id, task_ids=task_id,
                                                 key=key)).first()
        assert row is not None, f"no XCom {key} of {run.dag_id}.{task_id} in {run.run_id}"
        return XComModel.deserialize_value(row)


def _asset_events(run) -> list[dict]:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(select(AssetEvent).where(AssetEvent.source_run_id == run.run_id)).all()
        return [dict(e.extra or {}) for e in events]


def _preprocessed(day: dt.datetime) -> str:
    return str(BlobRef(PREPROCESSED_CONTAINER, dataset_path(day)))


def _versions(client) -> list[str]:
    return sorted((v.version for v in client.search_model_versions(f"name='{MODEL_NAME}'")), key=int)


def _aliases(client) -> dict[str, str]:
    return dict(client.get_registered_model(MODEL_NAME).aliases)


@pytest.fixture(scope="module")
def current(services: str, datalake, client) -> dict:
    """The current export, prepared and trained: version 1, champion and challenger."""
    datalake.write(BlobRef(RAW_CONTAINER, dataset_path(CURRENT)),
                   synthetic.to_raw_bytes(synthetic.generate(synthetic.SyntheticConfig(rows=ROWS, seed=31))))
    prepare = pipeline_dag("prepare_dataset").test(logical_date=CURRENT)
    assert prepare.state == "success"
    path = _preprocessed(CURRENT)
    train = pipeline_dag("train_model").test(logical_date=CURRENT, run_conf={"input_path": path})
    assert train.state == "success"
    assert _versions(client) == ["1"] and _aliases(client) == {"champion": "1", "challenger": "1"}
    return {"prepare": prepare, "path": path}


def test_the_first_preparation_writes_and_says_so(current) -> None:
    result = _xcom(current["prepare"], "fix_missing_values")
    assert result["path"] == current["path"] and result["unchanged"] is False
    [extra] = _asset_events(current["prepare"])
    assert extra["path"] == current["path"] and extra["unchanged"] is False


def test_prepare_again_on_an_unchanged_export_says_unchanged(current, datalake) -> None:
    ref = BlobRef.parse(current["path"])
    before = datalake.client.get_blob_client(ref.container, ref.path).get_blob_properties()
    again = pipeline_dag("prepare_dataset").test(logical_date=CURRENT)
    assert again.state == "success"
    result = _xcom(again, "fix_missing_values")
    assert result["unchanged"] is True and result["path"] == current["path"]
    [extra] = _asset_events(again)
    assert extra["unchanged"] is True and extra["sha256"] == result["sha256"]
    after = datalake.client.get_blob_client(ref.container, ref.path).get_blob_properties()
    assert after.etag == before.etag  # nothing was written


def test_train_again_on_identical_data_registers_nothing_and_names_the_version(current, client) -> None:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs_before = len(client.search_runs([experiment.experiment_id]))
    again = pipeline_dag("train_model").test(logical_date=CURRENT, run_conf={"input_path": current["path"]})
    assert again.state == "success"
    assert _xcom(again, "train_and_register", "registered") is False
    assert str(_xcom(again, "train_and_register", "version")) == "1"
    decision = _xcom(again, "train_and_register", "decision")
    assert decision.startswith("unchanged: version 1 was trained on identical data (digest ")
    assert "force_retrain" in decision
    assert _versions(client) == ["1"] and _aliases(client) == {"champion": "1", "challenger": "1"}
    assert len(client.search_runs([experiment.experiment_id])) == runs_before  # no MLflow run either


def test_force_retrain_registers_a_new_version(current, client) -> None:
    forced = pipeline_dag("train_model").test(logical_date=CURRENT, run_conf={"input_path": current["path"],
                                                                      "force_retrain": True})
    assert forced.state == "success"
    assert _xcom(forced, "train_and_register", "registered") is True
    assert _versions(client) == ["1", "2"]
    v2 = client.get_model_version(MODEL_NAME, "2")
    assert v2.tags[lineage.EXPORT_DATE_TAG] == "2026-06-10"
    assert v2.tags[lineage.TRAINING_KEY_TAG] == client.get_model_version(MODEL_NAME, "1").tags[
        lineage.TRAINING_KEY_TAG]
    # the same model on the same rows: not better than the champion, so the challenger only
    assert _aliases(client) == {"champion": "1", "challenger": "2"}


def test_an_older_export_is_registered_as_a_backfill_and_moves_no_alias(current, datalake, client) -> None:
    from airflow_project.local import models
    from airflow_project.local.config import LocalConfig, Ports

    aliases = _aliases(client)
    # as the README's example: `mlops data upload --date 2024-03-09`, then prepare_dataset for that date
    datalake.write(BlobRef(RAW_CONTAINER, dataset_path(OLDER)),
                   synthetic.to_raw_bytes(synthetic.generate(synthetic.SyntheticConfig(rows=ROWS, seed=32))))
    assert pipeline_dag("prepare_dataset").test(logical_date=OLDER).state == "success"
    run = pipeline_dag("train_model").test(logical_date=OLDER, run_conf={"input_path": _preprocessed(OLDER)})
    assert run.state == "success"
    skipped = _xcom(run, "backtest")["skipped"]
    assert {s["version"] for s in skipped} == set(aliases.values())
    assert all(s["reason"] == "trained on the export of 2026-06-10, not an earlier one" for s in skipped)

    new = str(_xcom(run, "train_and_register", "version"))
    assert _aliases(client) == aliases  # every alias where it was
    backfill = client.get_model_version(MODEL_NAME, new)
    assert backfill.tags[lineage.BACKFILL_TAG] == "true"
    assert backfill.tags[lineage.EXPORT_DATE_TAG] == "2024-03-09"
    decision = backfill.tags["promotion_decision"]
    assert decision.startswith("backfill: trained on the export of 2024-03-09, older than champion v1's export "
                               "of 2026-06-10; registered, no alias moved")
    assert decision in backfill.description  # the model card states the rule
    assert "versions are ordered by the export date of their training data" in backfill.description

    # `mlops up` and deploy_traffic_mirroring order by the export date: the backfill, the
    # highest number, is the oldest version
    state = models.registry_state(LocalConfig(ports=Ports(mlflow=int(client.tracking_uri.rsplit(":", 1)[1]))))
    assert state.newest_first[-1] == int(new)
    assert models.serving_versions(state) == (1, 2)


def test_data_runs_are_named_by_export_date_and_experiments_open_as_model_training(current, client) -> None:
    data = client.get_experiment_by_name(DATA_EXPERIMENT)
    names = {r.info.run_name for r in client.search_runs([data.experiment_id])}
    assert "export 2026-06-10" in names
    for name in (EXPERIMENT, DATA_EXPERIMENT):
        assert client.get_experiment_by_name(name).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
