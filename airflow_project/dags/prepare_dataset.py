"""
### Prepare the waiting-time dataset

Reads the NZa export for the run's logical date from the data lake
(`raw/wachttijden/<YYYY>/<MM>/<DD>/wachttijden.csv`), keeps the target and the
four features as found (`intermediate/.../wachttijden.parquet`), drops rows
without a usable waiting time and fills the institution type
(`preprocessed/.../wachttijden.csv`). The last task emits the
`wachttijden_preprocessed` asset event, which starts `train_model`.

Set the **raw_path** param to process another raw file than the logical date's.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from airflow_project.assets import PREPROCESSED_DATASET
from airflow_project.dag_defaults import DAG_DEFAULTS


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

    @task(outlets=[PREPROCESSED_DATASET])
    def fix_missing_values(intermediate: str, *, outlet_events=None) -> str:
        """Drop rows without a numeric waiting time, fill TYPE_ZORGINSTELLING."""
        from airflow_project.data_steps import fix_missing_values as step
        from airflow_project.datalake import BlobRef
        from airflow_project.task_context import data_lake, fail_on_bad_input

        with fail_on_bad_input():
            result = step(data_lake(), BlobRef.parse(intermediate))
        outlet_events[PREPROCESSED_DATASET].extra = {"path": result.output, "rows": result.rows}
        return result.output

    fix_missing_values(select_features())


prepare_dataset()
