"""Every DAG file imports cleanly, quickly, and declares what the UI shows."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from airflow_project.assets import PREPROCESSED_DATASET, RETRAINING_REQUESTED
from airflow_project.local.config import DAGS_FOLDER
from airflow_project.monitoring.thresholds import DEFAULT_MAX_MAE_RATIO
from airflow_project.wachttijden.schema import DEFAULT_MAX_DRIFT

EXPECTED_DAGS = {"prepare_dataset", "train_model", "deploy_model", "deploy_traffic_mirroring", "monitor_serving"}
OPTIONAL_DAGS: set[str] = set()
HEAVY_MODULES = {"pandas", "numpy", "sklearn", "mlflow", "kubernetes", "azure", "kserve", "matplotlib"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_expected_dag_ids(dagbag):
    assert EXPECTED_DAGS <= set(dagbag.dag_ids) <= EXPECTED_DAGS | OPTIONAL_DAGS


def test_parse_time_per_file_is_reported(dagbag, record_property):
    stats = {stat.file: stat.duration.total_seconds() for stat in dagbag.dagbag_stats}
    for file, seconds in sorted(stats.items()):
        record_property(f"parse_seconds:{file}", seconds)
        print(f"parse time {file}: {seconds * 1000:.0f} ms")
    assert {f"{dag_id}.py" for dag_id in EXPECTED_DAGS} <= set(stats)


@pytest.mark.parametrize("path", sorted(DAGS_FOLDER.glob("*.py")), ids=lambda p: p.name)
def test_dag_files_import_nothing_heavy_at_top_level(path: Path):
    tree = ast.parse(path.read_text())
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = {alias.name for node in top_level if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module or "" for node in top_level if isinstance(node, ast.ImportFrom)}
    heavy = {name for name in names if name.split(".")[0] in HEAVY_MODULES}
    assert not heavy, f"{path.name} imports {heavy} at parse time; import inside the task"
    assert "Variable" not in path.read_text(), "no Variable.get at parse time"


def test_dags_have_docs_tags_and_retries(dagbag):
    for dag_id in EXPECTED_DAGS:
        dag = dagbag.dags[dag_id]
        assert dag.doc_md and dag.tags, dag_id
        assert all(task.retries >= 1 for task in dag.tasks), dag_id
        assert dag.catchup is False


def test_every_param_has_title_and_description(dagbag):
    for dag_id in dagbag.dag_ids:
        params = dagbag.dags[dag_id].params
        for name in params:
            param = params.get_param(name)
            assert param.schema.get("title") and param.description, f"{dag_id}.{name}"


def _ui_requires(schema: dict) -> bool:
    """The Airflow 3 trigger form's rule (airflow-core/src/airflow/ui, flexibleForm `isRequired`):
    a Param is required when its schema has a `type` that does not include "null"."""
    kind = schema.get("type")
    return bool(kind) and (not isinstance(kind, list) or "null" not in kind)


def _every_param(dagbag):
    for dag_id in sorted(dagbag.dag_ids):
        params = dagbag.dags[dag_id].params
        for name in params:
            yield dag_id, name, params.get_param(name)


def test_every_dag_triggers_from_the_ui_with_its_defaults(dagbag):
    """The trigger form keeps its Trigger button disabled while a required field is empty
    (null, undefined or ""); the REST API and scheduled runs need defaults that validate.
    So: every default validates against its schema, and a Param whose default is empty is
    optional (`type: ["null", ...]`)."""
    from airflow.sdk.definitions.param import ParamValidationError

    problems = []
    for dag_id, name, param in _every_param(dagbag):
        try:
            param.resolve(suppress_exception=False)
        except ParamValidationError as exc:
            problems.append(f"{dag_id}.{name}: default {param.value!r} does not validate: {exc}")
        if _ui_requires(param.schema) and param.value in (None, ""):
            problems.append(f"{dag_id}.{name}: required in the trigger form but its default "
                            f"{param.value!r} counts as missing; make it type [\"null\", ...]")
    assert not problems, "\n".join(problems)
    for dag_id in dagbag.dag_ids:
        dagbag.dags[dag_id].params.validate()  # what a trigger with the defaults does


def test_the_ui_rule_is_what_the_check_applies():
    assert _ui_requires({"type": "string"}) and _ui_requires({"type": ["string"]})
    assert not _ui_requires({"type": ["null", "string"]}) and not _ui_requires({"enum": ["a"]})


def test_train_model_is_scheduled_on_the_prepared_asset(dagbag):

    prepare = dagbag.dags["prepare_dataset"]
    train = dagbag.dags["train_model"]
    outlets = prepare.get_task("fix_missing_values").outlets
    assert PREPROCESSED_DATASET in outlets
    scheduled_on = {asset.name for asset in train.timetable.asset_condition.objects}
    assert scheduled_on == {PREPROCESSED_DATASET.name, RETRAINING_REQUESTED.name}


def test_monitor_serving_runs_daily_and_on_each_export_and_can_request_retraining(dagbag):
    from airflow.sdk import AssetOrTimeSchedule

    monitor = dagbag.dags["monitor_serving"]
    assert isinstance(monitor.timetable, AssetOrTimeSchedule)
    assert monitor.timetable.asset_condition == PREPROCESSED_DATASET
    assert monitor.timetable.timetable.expression == "0 0 * * *"
    assert RETRAINING_REQUESTED in monitor.get_task("request_retraining").outlets
    params = monitor.params
    assert params["max_drift"] == DEFAULT_MAX_DRIFT and params["max_mae_ratio"] == DEFAULT_MAX_MAE_RATIO
