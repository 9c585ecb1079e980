"""Assets that connect the pipelines: prepare_dataset produces, train_model and
monitor_serving consume; monitor_serving asks train_model to retrain."""

from __future__ import annotations

from airflow.sdk import Asset

from airflow_project.datalake import DATASET, PREPROCESSED_CONTAINER

# The event's extra carries {"path": "preprocessed/wachttijden/YYYY/MM/DD/wachttijden.csv"}.
PREPROCESSED_DATASET = Asset(
    "wachttijden_preprocessed",
    uri=f"wasb://{PREPROCESSED_CONTAINER}@datalake/{DATASET}",
    group="wachttijden",
)

# Emitted by monitor_serving when served traffic crosses a threshold; extra:
# {"path": <the labelled preprocessed export>, "reasons": [...], "monitoring_run": <MLflow run id>}.
RETRAINING_REQUESTED = Asset(
    "wachttijden_retraining_requested",
    uri=f"wasb://{PREPROCESSED_CONTAINER}@datalake/{DATASET}/retraining",
    group="wachttijden",
)
