"""What `mlops up` does after deploying: send a little traffic through the mirror router,
wait until the capture process has written it to the data lake, run `monitor_serving` once
and show its headline with a link to its MLflow run."""

from __future__ import annotations

import datetime as dt
import time

import httpx

from airflow_project.local.airflow_api import AirflowClient
from airflow_project.local.config import MONITOR_DAG, LocalConfig
from airflow_project.local.errors import PlatformError
from airflow_project.local.summary import Endpoints, Reporter

REQUESTS = 200
INSTANCES = 5
"""Rows per request: 1,000 served rows, enough for the drift of every feature to be gated
(PSI noise below half max_drift, `monitoring.analysis`)."""
CAPTURE_WAIT_S = 60.0


def send_traffic(config: LocalConfig, endpoints: Endpoints, day: dt.date) -> int:
    """REQUESTS requests of rows of the day's preprocessed export through the mirror router
    (the primary answers, the shadow gets a copy); the requests answered."""
    from airflow_project.data_steps import read_prepared
    from airflow_project.datalake import PREPROCESSED_CONTAINER, BlobRef, DataLake, dataset_path
    from airflow_project.wachttijden.schema import FEATURES

    lake = DataLake.from_connection_string(config.azurite_connection_string)
    frame = read_prepared(lake, BlobRef(PREPROCESSED_CONTAINER, dataset_path(day)))
    rows = frame.loc[:, list(FEATURES)].astype(str).sample(REQUESTS * INSTANCES, replace=True, random_state=0)
    records = rows.to_dict(orient="records")
    with httpx.Client(timeout=30.0, trust_env=False) as http:
        for i in range(REQUESTS):
            response = http.post(endpoints.mirror_v1, json={"instances": records[i * INSTANCES:(i + 1) * INSTANCES]})
            if response.status_code != 200:
                raise PlatformError(f"POST {endpoints.mirror_v1} answered HTTP {response.status_code}: "
                                    f"{response.text[:300]}")
    return REQUESTS


def wait_for_capture(config: LocalConfig, namespace: str, read_before: int, expected: int) -> dict:
    """Until the capture process has written what it had read before plus `expected` more
    predictions (or the wait is over)."""
    from airflow_project.serving.targets.local import read_capture_status

    deadline = time.monotonic() + CAPTURE_WAIT_S
    status: dict = {}
    while time.monotonic() < deadline:
        status = read_capture_status(config.root, namespace) or {}
        if status.get("written", 0) + status.get("dropped", 0) >= read_before + expected \
                and not status.get("buffered"):
            break
        time.sleep(0.5)
    return status


def watch_serving(api: AirflowClient, config: LocalConfig, endpoints: Endpoints, day: dt.date,
                  report: Reporter, deadline: float) -> list[str]:
    """Traffic, capture, one monitor_serving run; the summary's lines."""
    from airflow_project.local import job
    from airflow_project.local.models import mlflow_client, runs_url
    from airflow_project.monitoring.tracking import HEADLINE_TAG, MONITORING_EXPERIMENT
    from airflow_project.serving.targets.local import read_capture_status

    namespace = endpoints.namespace
    # what the capture process has read so far (the smoke tests' predictions, perhaps not written yet)
    before = (read_capture_status(config.root, namespace) or {}).get("captured", 0)
    sent = send_traffic(config, endpoints, day)
    status = wait_for_capture(config, namespace, before, 2 * sent)  # the primary's lines and the shadow's
    report(f"sent {sent} requests ({sent * INSTANCES} rows) through the mirror router; capture wrote "
           f"{status.get('written', 0) - before} predictions to {status.get('container', '?')}, "
           f"{status.get('dropped', 0)} dropped")
    job.wait_for_dags(api, report, deadline, dag_ids=(*job.JOB_DAGS, MONITOR_DAG))
    run_id = f"mlops_up__monitor__{dt.datetime.now(dt.UTC):%Y-%m-%dT%H-%M-%S}"
    run = job._triggered(MONITOR_DAG, api.trigger(MONITOR_DAG, None, note="triggered by mlops up",
                                                  conf={"namespace": namespace}, run_id=run_id), conflict=False)
    report(f"triggered {MONITOR_DAG} run {run_id}")
    try:
        job.follow_run(api, MONITOR_DAG, run, report, deadline)
        outcome = ""
    except PlatformError as exc:  # a crossed threshold: shown, and retraining was requested
        outcome = f" (the run failed: {str(exc).splitlines()[0]})"
    client = mlflow_client(config)
    experiment = client.get_experiment_by_name(MONITORING_EXPERIMENT)
    runs = [] if experiment is None else client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.airflow_run_id = '{run_id}'", max_results=1)
    if not runs:
        return [f"  Monitoring  {MONITOR_DAG} run {run_id} logged no report{outcome}"]
    mlflow_run = runs[0]
    return [f"  Monitoring  {MONITOR_DAG} run {run_id}: {mlflow_run.data.tags.get(HEADLINE_TAG, '')}{outcome}",
            f"              report: {runs_url(config, experiment.experiment_id)}/{mlflow_run.info.run_id}"]
