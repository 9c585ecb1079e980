"""
### Train and register the waiting-time model

Runs when `prepare_dataset` publishes a new preprocessed dataset (asset
`wachttijden_preprocessed`), when `monitor_serving` finds the served model slipping (asset
`wachttijden_retraining_requested`, on the labelled export it names), or by hand. Trains on a seeded split, evaluates
against a mean-predictor baseline, logs params, metrics, signature, input
example and a predicted-vs-actual plot to MLflow, and registers model
`wachttijden` with a model card (the version's description). Before training, the
current champion and challenger are **backtested** on the new dataset, which neither
has seen (metric `backtest_mae` of their runs, one point per export). The new version
becomes **challenger**; it becomes **champion** only when its hold-out MAE beats the
champion's on the same rows and the champion's latest backtest does not beat that MAE
by more than the stated margin (10%, `registry.BACKTEST_MARGIN`). The decision is the tag `promotion_decision`.

Versions are ordered by the **export date** of their training data: a version trained on
an export older than the champion's is a **backfill** (tag `backfill`): registered, no
alias moved. Training on identical data with the same configuration as a registered
version registers nothing and names that version (**force_retrain** trains anyway).

Input, first that applies: the **input_path** param, the triggering asset
event's path, the newest dataset in the `preprocessed` container.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import Param, dag, task

from airflow_project.assets import PREPROCESSED_DATASET, RETRAINING_REQUESTED
from airflow_project.dag_defaults import DAG_DEFAULTS

if TYPE_CHECKING:
    from airflow_project.backtest import BacktestResult
    from airflow_project.data_steps import TrainingResult


@dag(
    dag_id="train_model",
    schedule=PREPROCESSED_DATASET | RETRAINING_REQUESTED,
    **DAG_DEFAULTS,
    tags=["wachttijden", "training", "mlflow"],
    doc_md=__doc__,
    params={
        "estimator": Param(
            "decision_tree",
            enum=["decision_tree", "random_forest", "gradient_boosting", "linear"],
            title="Estimator",
            description="Regressor after the one-hot encoder.",
        ),
        "test_size": Param(
            0.2, type="number", exclusiveMinimum=0, exclusiveMaximum=1,
            title="Test size", description="Share of rows held out for evaluation.",
        ),
        "random_seed": Param(
            42, type="integer", minimum=0,
            title="Random seed", description="Seed of the split and the estimator.",
        ),
        "input_path": Param(
            None, type=["null", "string"],
            title="Input (optional)",
            description="Preprocessed dataset, e.g. "
            "preprocessed/wachttijden/2024/01/31/wachttijden.csv. Empty: the asset event's.",
        ),
        "force_retrain": Param(
            False, type="boolean",
            title="Force a new version",
            description="Train and register even when a registered version was trained on identical "
            "data with the same estimator, test size and seed (by default that version is named, "
            "nothing new is registered).",
        ),
    },
)
def train_model():
    @task
    def resolve_input(*, params: dict, triggering_asset_events=None) -> str:
        """Which preprocessed dataset to train on."""
        from airflow_project.data_steps import training_input
        from airflow_project.task_context import asset_event_path, data_lake

        return training_input(data_lake(), params.get("input_path"), asset_event_path(triggering_asset_events))

    @task
    def backtest(path: str) -> BacktestResult:
        """Score champion and challenger on the new dataset before training on it."""
        from airflow_project.data_steps import backtest as step
        from airflow_project.task_context import data_lake, fail_on_bad_input

        with fail_on_bad_input():
            return step(data_lake(), path)

    @task(multiple_outputs=True)
    def train_and_register(path: str, scores: BacktestResult, *, params: dict, dag_run=None) -> TrainingResult:
        """Train, evaluate, log to MLflow, register with a model card and apply the promotion rule
        (or name the version an identical training already registered)."""
        from airflow_project.data_steps import train
        from airflow_project.task_context import data_lake, fail_on_bad_input
        from airflow_project.wachttijden.training import TrainingConfig

        with fail_on_bad_input():
            config = TrainingConfig(params["estimator"], float(params["test_size"]), int(params["random_seed"]))
            return train(data_lake(), path, config, run_name=dag_run.run_id, backtest=scores,
                         tags={"airflow_dag_id": dag_run.dag_id, "airflow_run_id": dag_run.run_id},
                         force=bool(params.get("force_retrain")))

    path = resolve_input()
    train_and_register(path, backtest(path))


train_model()
