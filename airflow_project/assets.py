"""Assets that connect the pipelines: prepare_dataset produces, train_model consumes."""

from __future__ import annotations

from airflow.sdk import Asset

from airflow_project.datalake import DATASET, PREPROCESSED_CONTAINER

# The event's extra carries {"path": "preprocessed/wachttijden/YYYY/MM/DD/wachttijden.csv"}.
PREPROCESSED_DATASET = Asset(
    "wachttijden_preprocessed",
    uri=f"wasb://{PREPROCESSED_CONTAINER}@datalake/{DATASET}",
    group="wachttijden",
)
