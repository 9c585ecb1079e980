"""
### Prepare the waiting-time dataset

Reads the NZa export for the run's logical date from the data lake
(`raw/wachttijden/<YYYY>/<MM>/<DD>/wachttijden.csv`), keeps the target and the
four features as found (`intermediate/.../wachttijden.parquet`), **checks the export**
against the data the champion was trained on, drops rows without a usable waiting
time and fills the institution type (`preprocessed/.../wachttijden.csv`). The last task
emits the `wachttijden_preprocessed` asset event, which starts `train_model`. A rerun on
an unchanged export writes nothing: its result and the asset event say `unchanged`
(and `train_model` then registers nothing new).

The data gate (`validate_export`) fails the run, without retry and before anything is
written to `preprocessed`, when fewer than **min_usable_share** of the rows are usable or
the drift (PSI of the waiting time or of a feature against the champion's training data)
is above **max_drift**. Its report is a run of the MLflow experiment `wachttijden-data`.
Set **gate_override** to a reason to let one run through a failed gate (recorded there).

Set the **raw_path** param to process another raw file than the logical date's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import Param, dag, task

from airflow_project.assets import PREPROCESSED_DATASET
from airflow_project.dag_defaults import DAG_DEFAULTS
from airflow_project.wachttijden.schema import DEFAULT_MAX_DRIFT, DEFAULT_MIN_USABLE_SHARE

if TYPE_CHECKING:
    from airflow_project.data_steps import ExportCheckResult, PreparedResult


@dag(
    dag_id="prepare_dataset",
    schedule="@daily",
    **DAG_DEFAULTS,
    tags=["wachttijden", "data"],
    doc_md=__doc__,
    params={
        "raw_path": Param(
            None,
            type=["null", "string"],
            title="Raw file (optional)",
            description="Path inside the 'raw' container, e.g. "
            "wachttijden/2024/01/31/wachttijden.csv. Empty: the logical date's file.",
        ),
        "min_usable_share": Param(
            None,
            type=["null", "number"], minimum=0, maximum=1,
            title="Data gate: minimum usable share (optional)",
            description="Fail when a smaller share of the export's rows is usable (numeric, "
            f"non-negative waiting time and all features). Empty: {DEFAULT_MIN_USABLE_SHARE}.",
        ),
        "max_drift": Param(
            None,
            type=["null", "number"], exclusiveMinimum=0,
            title="Data gate: maximum drift (optional)",
            description="Fail when the PSI of the waiting time or of a feature against the "
            f"champion's training data is above this. Empty: {DEFAULT_MAX_DRIFT}.",
        ),
        "gate_override": Param(
            None,
            type=["null", "string"],
            title="Data gate: override for this run (optional)",
            description="A reason, e.g. 'NZa renamed specialisms, checked by <name>': this run "
            "continues even when the data gate fails; the reason is recorded in the MLflow "
            "data run. Empty: a failed gate stops the run.",
        ),
    },
)
def prepare_dataset():
    @task
    def select_features(*, params: dict, logical_date=None, dag_run=None) -> str:
        """Keep WACHTTIJD and the four features of the raw export."""
        from airflow_project.data_steps import raw_input
        from airflow_project.data_steps import select_features as step
        from airflow_project.task_context import data_lake, fail_on_bad_input, run_date

        with fail_on_bad_input():
            return step(data_lake(), raw_input(params.get("raw_path"), run_date(logical_date, dag_run))).output

    @task
    def validate_export(intermediate: str, *, params: dict, logical_date=None, dag_run=None) -> ExportCheckResult:
        """The data gate: usable rows, new/missing categories, drift against the champion's data."""
        from airflow_project.data_steps import raw_input
        from airflow_project.data_steps import validate_export as step
        from airflow_project.datalake import BlobRef
        from airflow_project.task_context import data_lake, fail_on_bad_input, run_date
        from airflow_project.wachttijden.export_checks import GateThresholds

        with fail_on_bad_input():
            thresholds = GateThresholds.from_optional(params.get("min_usable_share"), params.get("max_drift"))
            return step(data_lake(), BlobRef.parse(intermediate),
                        raw_input(params.get("raw_path"), run_date(logical_date, dag_run)), thresholds,
                        override=params.get("gate_override"),
                        tags={"airflow_dag_id": dag_run.dag_id, "airflow_run_id": dag_run.run_id})

    @task(outlets=[PREPROCESSED_DATASET])
    def fix_missing_values(intermediate: str, *, outlet_events=None) -> PreparedResult:
        """Drop rows without a numeric waiting time, fill TYPE_ZORGINSTELLING (unchanged: nothing written)."""
        from airflow_project.data_steps import fix_missing_values as step
        from airflow_project.datalake import BlobRef
        from airflow_project.task_context import data_lake, fail_on_bad_input

        with fail_on_bad_input():
            result = step(data_lake(), BlobRef.parse(intermediate))
        outlet_events[PREPROCESSED_DATASET].extra = dict(result)
        return result

    intermediate = select_features()
    validate_export(intermediate) >> fix_missing_values(intermediate)


prepare_dataset()
