"""Defaults every DAG shares (light: imported by DAG files at parse time)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.sdk import Param

START_DATE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

# Tasks talk to blob storage, MLflow and Kubernetes: transient failures are retried
# with exponential backoff. Bad input fails at once instead (AirflowFailException).
IO_RETRIES = {
    "retries": 2,
    "retry_delay": dt.timedelta(seconds=10),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=2),
}

DAG_DEFAULTS = {"start_date": START_DATE, "catchup": False, "max_active_runs": 1, "default_args": IO_RETRIES}
"""What every DAG here shares: the start date, no catch-up, one run at a time, I/O retries."""


def serving_namespace_param() -> Param:
    """The deploy DAGs' optional namespace: null (not "") so the trigger form accepts the default."""
    from airflow.sdk import Param

    return Param(
        None, type=["null", "string"],
        title="Namespace (optional)",
        description="Serving namespace. Empty: MLOPS_SERVING_NAMESPACE of the deployment.",
    )
