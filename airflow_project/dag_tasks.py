"""The bodies of DAG tasks: Airflow context in, pipeline steps out (imported inside tasks)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from airflow_project.datalake import RAW_CONTAINER, BlobRef, DataLake, dataset_path

log = logging.getLogger(__name__)


def data_lake() -> DataLake:
    return DataLake.from_airflow()


def run_date(context: dict[str, Any]):
    """The logical date, or when the run was due for runs triggered without one."""
    return context.get("logical_date") or context["dag_run"].run_after


def raw_input(context: dict[str, Any]) -> BlobRef:
    override = context["params"].get("raw_path")
    if override:
        return BlobRef(RAW_CONTAINER, override.strip().lstrip("/"))
    return BlobRef(RAW_CONTAINER, dataset_path(run_date(context)))


@contextlib.contextmanager
def fail_on_bad_data() -> Iterator[None]:
    """Bad input will not get better on retry: fail the task at once, with the message."""
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_project.datalake import BlobNotFoundError
    from airflow_project.wachttijden.dataset import DataValidationError

    try:
        yield
    except (DataValidationError, BlobNotFoundError, ValueError) as exc:
        raise AirflowFailException(str(exc)) from exc


def training_input(context: dict[str, Any]) -> str:
    from airflow_project.datalake import CONTAINERS, PREPROCESSED_CONTAINER
    from airflow_project.pipeline_steps import latest_preprocessed

    explicit = (context["params"].get("input_path") or "").strip().lstrip("/")
    if explicit:
        if explicit.split("/", 1)[0] not in CONTAINERS:
            explicit = f"{PREPROCESSED_CONTAINER}/{explicit}"
        return str(BlobRef.parse(explicit))
    for events in (context.get("triggering_asset_events") or {}).values():
        for event in reversed(list(events)):
            path = (event.extra or {}).get("path")
            if path:
                log.info("training on %s from asset event", path)
                return str(BlobRef.parse(path))
    ref = latest_preprocessed(data_lake())
    log.info("no input given and no asset event: training on the newest dataset %s", ref)
    return str(ref)


def train_from_lake(path: str, context: dict[str, Any]) -> dict[str, Any]:
    from airflow_project.registry import train_and_register
    from airflow_project.wachttijden.dataset import read_prepared
    from airflow_project.wachttijden.training import TrainingConfig

    params = context["params"]
    config = TrainingConfig(
        estimator=params["estimator"],
        test_size=float(params["test_size"]),
        random_seed=int(params["random_seed"]),
    )
    ref = BlobRef.parse(path)
    frame = read_prepared(data_lake().read(ref), str(ref))
    result = train_and_register(
        frame, config, source=str(ref),
        run_name=f"{context['dag_run'].run_id}",
        tags={"airflow_dag_id": context["dag"].dag_id, "airflow_run_id": context["dag_run"].run_id},
    )
    return {"version": result.version, "promoted": result.promoted, "decision": result.decision,
            "run_id": result.run_id, "metrics": result.metrics}
