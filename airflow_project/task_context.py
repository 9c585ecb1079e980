"""The Airflow side of task bodies: the data lake behind the Airflow connection, the run's
date, the path an asset event carries, and failing a task at once on bad input.

Imported inside tasks only; everything else a task does lives in the Airflow-free
`data_steps` and `deploy_steps`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any

from airflow_project.datalake import DataLake


def data_lake() -> DataLake:
    return DataLake.from_airflow()


def run_date(logical_date: dt.datetime | None, dag_run: Any) -> dt.datetime:
    """The logical date, or when the run was due for runs triggered without one."""
    return logical_date or dag_run.run_after


def asset_event_path(triggering_asset_events: Mapping[Any, Any] | None) -> str | None:
    """The dataset path in the newest triggering asset event's extra, if any."""
    for events in (triggering_asset_events or {}).values():
        for event in reversed(list(events)):
            path = (event.extra or {}).get("path")
            if path:
                return str(path)
    return None


@contextlib.contextmanager
def fail_on_bad_input() -> Iterator[None]:
    """Bad input (a file breaking the data contract, a Param naming a blob or model version
    that does not exist) will not get better on retry: fail the task at once, with the message."""
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_project.datalake import BlobNotFoundError
    from airflow_project.registry import ModelVersionNotFound
    from airflow_project.wachttijden.dataset import DataValidationError

    try:
        yield
    except (DataValidationError, BlobNotFoundError, ModelVersionNotFound, ValueError) as exc:
        raise AirflowFailException(str(exc)) from exc
