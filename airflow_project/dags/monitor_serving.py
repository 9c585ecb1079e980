"""
### Watch what is served

Daily, and whenever `prepare_dataset` publishes a new export (asset
`wachttijden_preprocessed`): reads the requests and responses captured since the last
run (container `serving-logs`, the layout KServe's InferenceService logger writes; locally
the capture process beside the model servers writes the same), and reports per served
version:

- **input drift**: PSI of each feature against the data the version was trained on, new
  and missing categories (the data gate's functions);
- **prediction drift**: PSI of the served predictions against the version's own
  predictions on its training rows;
- **realised MAE**: each served request scored against the newest labelled export's
  waiting times for its feature combination, next to the version's hold-out MAE;
- **shadow agreement**: the primary's and the shadow's answers to the same requests,
  joined by request id.

The report is a run of the MLflow experiment `wachttijden-monitoring` (metrics per version,
step = the export or window date; the report and two plots as artifacts). When the primary
crosses **max_drift** or **max_mae_ratio**, `request_retraining` emits the asset
`wachttijden_retraining_requested` (which starts `train_model` on the labelled export) and
`check_thresholds` fails with the reasons.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from airflow_project.assets import PREPROCESSED_DATASET, RETRAINING_REQUESTED
from airflow_project.dag_defaults import DAG_DEFAULTS, serving_namespace_param
from airflow_project.monitoring.thresholds import DEFAULT_MAX_MAE_RATIO
from airflow_project.wachttijden.schema import DEFAULT_MAX_DRIFT

if TYPE_CHECKING:
    from airflow_project.monitoring.steps import MonitoringResult


@dag(
    dag_id="monitor_serving",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("@daily", timezone="UTC"),
                                 assets=PREPROCESSED_DATASET),
    **DAG_DEFAULTS,
    tags=["wachttijden", "serving", "monitoring"],
    doc_md=__doc__,
    params={
        "max_drift": Param(
            DEFAULT_MAX_DRIFT, type="number", exclusiveMinimum=0, title="Maximum drift",
            description="Fail when the PSI of a served feature or of the served predictions against the "
            "version's training data is above this (the data gate's threshold).",
        ),
        "max_mae_ratio": Param(
            DEFAULT_MAX_MAE_RATIO, type="number", exclusiveMinimum=0, title="Maximum realised / hold-out MAE",
            description="Fail when the realised MAE on served traffic is more than this many times the "
            "version's hold-out MAE (1 + the promotion rule's backtest margin).",
        ),
        "namespace": serving_namespace_param(),
        "labels_path": Param(
            None, type=["null", "string"], title="Labelled export (optional)",
            description="A preprocessed export whose waiting times score the served predictions, e.g. "
            "preprocessed/wachttijden/2024/02/29/wachttijden.csv. Empty: the triggering export, else the newest.",
        ),
        "lookback_hours": Param(
            24, type="integer", minimum=1, maximum=24 * 90, title="First window (hours)",
            description="Without an earlier monitoring run: how far back the first window reaches.",
        ),
    },
)
def monitor_serving():
    @task
    def monitor(*, params: dict, dag_run=None, triggering_asset_events=None) -> MonitoringResult:
        """The report for the window since the last run, logged to MLflow."""
        import datetime as dt

        from airflow_project.monitoring.steps import monitor as step
        from airflow_project.monitoring.thresholds import MonitorThresholds
        from airflow_project.serving.targets import default_namespace
        from airflow_project.task_context import asset_event_path, data_lake, fail_on_bad_input

        with fail_on_bad_input():
            thresholds = MonitorThresholds(float(params["max_drift"]), float(params["max_mae_ratio"]))
            result, _ = step(data_lake(), thresholds, end=dt.datetime.now(dt.UTC),
                             lookback=dt.timedelta(hours=int(params["lookback_hours"])),
                             namespace=params["namespace"] or default_namespace(),
                             event_path=params["labels_path"] or asset_event_path(triggering_asset_events),
                             run_name=dag_run.run_id,
                             tags={"airflow_dag_id": dag_run.dag_id, "airflow_run_id": dag_run.run_id})
        return result

    @task(outlets=[RETRAINING_REQUESTED])
    def request_retraining(result: MonitoringResult, *, outlet_events=None) -> str:
        """Emit the asset that starts train_model on the labelled export (skipped when all holds)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from airflow_project.monitoring.steps import retraining_request

        extra = retraining_request(result)
        if extra is None:
            raise AirflowSkipException("every threshold holds: no retraining")
        outlet_events[RETRAINING_REQUESTED].extra = extra
        return f"retraining requested on {extra['path']}"

    @task(trigger_rule="none_failed")
    def check_thresholds(result: MonitoringResult) -> str:
        """Fail the run, with the reasons, when a threshold was crossed."""
        from airflow.sdk.exceptions import AirflowFailException

        from airflow_project.monitoring.steps import ThresholdsCrossed, check

        try:
            check(result)
        except ThresholdsCrossed as exc:
            raise AirflowFailException(str(exc)) from exc
        return result["headline"]

    result = monitor()
    request_retraining(result) >> check_thresholds(result)


monitor_serving()
