"""The job part of `mlops up` against a fake Airflow API: reuse, retry, progress, failures."""

from __future__ import annotations

import datetime as dt
import io
import time
from typing import Any

import httpx
import pytest

from airflow_project.local import airflow_api, errors, job, summary

LOGICAL = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)


class FakeApi:
    base_url = "http://127.0.0.1:8080"

    def __init__(self) -> None:
        self.existing: list[list[dict[str, Any]]] = []  # successive answers of runs_for_logical_date
        self.trigger_status = 201
        self.triggered: list[dt.datetime] = []
        self.cleared: list[tuple[str, str]] = []
        self.run_states: dict[str, list[str]] = {}  # run_id -> successive states
        self.tasks: dict[str, list[list[dict[str, Any]]]] = {}
        self.asset_runs: list[dict[str, Any]] = []
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.log = "INFO start\nERROR Task failed with exception\n  ValueError: bad rows"

    def runs_for_logical_date(self, dag_id: str, logical_date: dt.datetime) -> list[dict[str, Any]]:
        return self.existing.pop(0) if self.existing else []

    def trigger(self, dag_id: str, logical_date: dt.datetime, note: str | None = None) -> httpx.Response:
        self.triggered.append(logical_date)
        body = {"dag_run_id": "manual__1", "state": "queued"}
        return httpx.Response(self.trigger_status, json=body if self.trigger_status == 201 else {"detail": "x"})

    def clear_failed(self, dag_id: str, run_id: str) -> None:
        self.cleared.append((dag_id, run_id))

    def get_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        states = self.run_states[run_id]
        state = states.pop(0) if len(states) > 1 else states[0]
        return {"dag_run_id": run_id, "state": state}

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        answers = self.tasks.get(run_id, [[]])
        return answers.pop(0) if len(answers) > 1 else answers[0]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        return self.log

    def runs(self, dag_id: str, **params: Any) -> list[dict[str, Any]]:
        return list(self.asset_runs)

    def upstream_asset_events(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.events.get(run_id, [])


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job.time, "sleep", lambda seconds: None)


@pytest.fixture()
def report() -> summary.Reporter:
    return summary.Reporter(io.StringIO())


def _out(report: summary.Reporter) -> str:
    return report.out.getvalue()  # type: ignore[attr-defined]


def test_triggers_when_there_is_no_run_for_the_day(report: summary.Reporter) -> None:
    api = FakeApi()
    run = job.ensure_prepare_run(api, LOGICAL, report)  # type: ignore[arg-type]
    assert run["dag_run_id"] == "manual__1"
    assert api.triggered == [LOGICAL]
    assert "triggered prepare_dataset run manual__1 (logical date 2026-01-02)" in _out(report)


def test_a_run_created_by_the_scheduler_meanwhile_is_followed(report: summary.Reporter) -> None:
    api = FakeApi()
    api.trigger_status = 409
    api.existing = [[], [{"dag_run_id": "scheduled__1", "state": "running"}]]
    run = job.ensure_prepare_run(api, LOGICAL, report)  # type: ignore[arg-type]
    assert run["dag_run_id"] == "scheduled__1"
    assert "is running: following it" in _out(report)


def test_a_succeeded_run_is_reused_and_a_failed_one_retried(report: summary.Reporter) -> None:
    api = FakeApi()
    api.existing = [[{"dag_run_id": "scheduled__1", "state": "success"}]]
    assert job.ensure_prepare_run(api, LOGICAL, report)["state"] == "success"  # type: ignore[arg-type]
    assert api.triggered == [] and api.cleared == []
    assert "already succeeded: reusing it (no new run)" in _out(report)

    api.existing = [[{"dag_run_id": "scheduled__1", "state": "failed"}]]
    api.run_states["scheduled__1"] = ["queued"]
    run = job.ensure_prepare_run(api, LOGICAL, report)  # type: ignore[arg-type]
    assert api.cleared == [("prepare_dataset", "scheduled__1")]
    assert run["state"] == "queued"
    assert api.triggered == []


def test_trigger_errors_other_than_conflict_are_reported(report: summary.Reporter) -> None:
    api = FakeApi()
    api.trigger_status = 400
    with pytest.raises(airflow_api.AirflowApiError, match="HTTP 400"):
        job.ensure_prepare_run(api, LOGICAL, report)  # type: ignore[arg-type]


def _ti(task_id: str, state: str | None, duration: float | None = None) -> dict[str, Any]:
    return {"task_id": task_id, "state": state, "duration": duration, "map_index": -1, "try_number": 1,
            "start_date": None}


def test_follow_run_prints_each_task_state_change(report: summary.Reporter) -> None:
    api = FakeApi()
    api.run_states["r1"] = ["running", "running", "success"]
    api.tasks["r1"] = [
        [_ti("a", "running"), _ti("b", None)],
        [_ti("a", "success", 2.0), _ti("b", "running")],
        [_ti("a", "success", 2.0), _ti("b", "success", 1.5)],
    ]
    run = job.follow_run(api, "prepare_dataset", {"dag_run_id": "r1"}, report,  # type: ignore[arg-type]
                               time.monotonic() + 60)
    assert run["state"] == "success"
    lines = [line.split("] ", 1)[1] for line in _out(report).splitlines()]
    assert lines == [
        "  prepare_dataset.a: running",
        "  prepare_dataset.a: success in 2.0s",
        "  prepare_dataset.b: running",
        "  prepare_dataset.b: success in 1.5s",
        "prepare_dataset run r1 succeeded (0s)",
    ]


def test_a_failed_run_reports_the_failing_task_and_its_log_tail(report: summary.Reporter) -> None:
    api = FakeApi()
    api.run_states["r1"] = ["failed"]
    api.tasks["r1"] = [[_ti("select_features", "failed"), _ti("fix_missing_values", "upstream_failed")]]
    with pytest.raises(errors.PlatformError) as failure:
        job.follow_run(api, "prepare_dataset", {"dag_run_id": "r1"}, report,  # type: ignore[arg-type]
                             time.monotonic() + 60)
    message = str(failure.value)
    assert message.startswith("prepare_dataset run r1 failed (failed task: select_features)")
    assert "log of prepare_dataset.select_features (try 1)" in message
    assert "ValueError: bad rows" in message
    assert "http://127.0.0.1:8080/dags/prepare_dataset/runs/r1" in message


def test_a_stuck_run_times_out_naming_unfinished_tasks(report: summary.Reporter) -> None:
    api = FakeApi()
    api.run_states["r1"] = ["running"]
    api.tasks["r1"] = [[_ti("a", "success", 1.0), _ti("b", "running")]]
    with pytest.raises(TimeoutError, match="unfinished tasks: b") as failure:
        job.follow_run(api, "train_model", {"dag_run_id": "r1"}, report,  # type: ignore[arg-type]
                             time.monotonic() - 1)
    assert "log of train_model.b" in str(failure.value)


def test_the_train_run_is_the_one_fed_by_our_prepare_run(report: summary.Reporter) -> None:
    api = FakeApi()
    api.asset_runs = [
        {"dag_run_id": "asset_2", "state": "running"},
        {"dag_run_id": "asset_1", "state": "success"},
    ]
    api.events = {
        "asset_2": [{"source_dag_id": "prepare_dataset", "source_run_id": "other"}],
        "asset_1": [{"source_dag_id": "prepare_dataset", "source_run_id": "ours"}],
    }
    run = job.find_asset_run(api, "ours", report, time.monotonic() + 60)  # type: ignore[arg-type]
    assert run["dag_run_id"] == "asset_1"
    assert "already succeeded: reusing it" in _out(report)


def test_no_train_run_from_the_asset_event_is_a_clear_error(report: summary.Reporter) -> None:
    api = FakeApi()
    with pytest.raises(errors.PlatformError, match="no train_model run was created from the Asset event"):
        job.find_asset_run(api, "ours", report, time.monotonic() + 60, wait=0)  # type: ignore[arg-type]


def test_upstream_events_answering_500_until_the_run_starts_is_retried(report: summary.Reporter) -> None:
    """Airflow 3.3.2 fails that endpoint while the asset-triggered run is still queued."""
    api = FakeApi()
    api.asset_runs = [{"dag_run_id": "asset_1", "state": "queued"}]
    calls = {"n": 0}

    def events(dag_id: str, run_id: str) -> list[dict[str, Any]]:
        calls["n"] += 1
        if calls["n"] < 3:
            raise airflow_api.AirflowApiError("HTTP 500", 500)
        return [{"source_dag_id": "prepare_dataset", "source_run_id": "ours"}]

    api.upstream_asset_events = events  # type: ignore[method-assign]
    run = job.find_asset_run(api, "ours", report, time.monotonic() + 60)  # type: ignore[arg-type]
    assert run["dag_run_id"] == "asset_1"
    assert calls["n"] == 3


class DagsApi(FakeApi):
    def __init__(self, dags: dict[str, dict[str, Any] | None], errors: list[dict[str, Any]]) -> None:
        super().__init__()
        self.dags = dags
        self.errors = errors
        self.unpaused: list[str] = []

    def get_dag(self, dag_id: str) -> dict[str, Any] | None:
        return self.dags.get(dag_id)

    def import_errors(self) -> list[dict[str, Any]]:
        return self.errors

    def unpause(self, dag_id: str) -> None:
        self.unpaused.append(dag_id)


def test_paused_dags_are_unpaused(report: summary.Reporter) -> None:
    api = DagsApi({"prepare_dataset": {"is_paused": True}, "train_model": {"is_paused": False}}, [])
    job.wait_for_dags(api, report, time.monotonic() + 60)  # type: ignore[arg-type]
    assert api.unpaused == ["prepare_dataset"]
    assert "DAGs are parsed" in _out(report)


def test_a_dag_import_error_is_shown_and_fails_the_wait(report: summary.Reporter) -> None:
    error = {"filename": "/x/dags/train_model.py", "timestamp": "t",
             "stack_trace": "Traceback ...\nModuleNotFoundError: No module named 'nope'"}
    api = DagsApi({"prepare_dataset": {"is_paused": False}}, [error])
    with pytest.raises(errors.PlatformError) as failure:
        job.wait_for_dags(api, report, time.monotonic() + 60, wait_with_errors=0)  # type: ignore[arg-type]
    assert "DAG(s) train_model not found" in str(failure.value)
    assert "No module named 'nope'" in str(failure.value)
    assert "DAG import error in /x/dags/train_model.py: ModuleNotFoundError" in _out(report)


def test_summary_shows_the_data_report_headline_and_its_run():
    from airflow_project.local.models import DataReport
    from airflow_project.local.summary import format_data_report

    data = DataReport(export="raw/wachttijden/2026/01/02/wachttijden.csv",
                      headline="19,400 of 20,000 rows usable (97.0%, min 80%); gate passed",
                      url="http://127.0.0.1:5000/#/experiments/2/runs/abc")
    assert format_data_report(data) == [
        ("  Data        raw/wachttijden/2026/01/02/wachttijden.csv: 19,400 of 20,000 rows usable (97.0%, min 80%); "
        "gate passed"),
        "              data checks: http://127.0.0.1:5000/#/experiments/2/runs/abc",
    ]
    assert format_data_report(None) == []
