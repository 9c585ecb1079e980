"""The small Airflow REST client: login, re-login on 401, retries after a dropped connection."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest

from airflow_project.local import airflow_api, commands, stack
from airflow_project.local.airflow_api import AirflowApiError, AirflowClient
from airflow_project.local.config import LocalConfig


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(airflow_api.time, "sleep", lambda seconds: None)


def _client(handler) -> AirflowClient:
    return AirflowClient("http://af", "admin", "pw", transport=httpx.MockTransport(handler))


def test_login_then_bearer_token_and_relogin_on_401() -> None:
    calls: list[tuple[str, str, str | None]] = []
    tokens = iter(["t1", "t2"])

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, request.url.path, request.headers.get("authorization")))
        if request.url.path == "/auth/token":
            assert request.read() == b'{"username":"admin","password":"pw"}'
            return httpx.Response(201, json={"access_token": next(tokens)})
        if request.headers["authorization"] == "Bearer t1":
            return httpx.Response(401)
        return httpx.Response(200, json={"dag_id": "x", "is_paused": False})

    with _client(handler) as client:
        assert client.get_dag("x") == {"dag_id": "x", "is_paused": False}
    assert calls == [
        ("POST", "/auth/token", None),
        ("GET", "/api/v2/dags/x", "Bearer t1"),
        ("POST", "/auth/token", None),
        ("GET", "/api/v2/dags/x", "Bearer t2"),
    ]


def test_a_reset_connection_is_retried() -> None:
    attempts = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise httpx.ReadError("[Errno 104] Connection reset by peer")
        return httpx.Response(200, json={"dag_runs": [{"dag_run_id": "r"}]})

    with _client(handler) as client:
        assert client.runs("prepare_dataset") == [{"dag_run_id": "r"}]
    assert attempts["n"] == 2


def test_an_unreachable_api_is_a_clear_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with _client(handler) as client, pytest.raises(AirflowApiError, match="unreachable"):
        client.get_dag("x")
    with _client(handler) as client:
        assert client.health() is None


def test_failed_login_names_the_user() -> None:
    with _client(lambda request: httpx.Response(401, json={"detail": "bad"})) as client, \
            pytest.raises(AirflowApiError, match="login to Airflow as 'admin' failed: HTTP 401"):
        client.get_dag("x")


def test_api_errors_carry_the_status() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        return httpx.Response(500, text="Internal Server Error")

    with _client(handler) as client, pytest.raises(AirflowApiError) as failure:
        client.upstream_asset_events("train_model", "run/1")
    assert failure.value.status == 500


def test_an_unexpected_error_in_up_is_one_line_plus_a_traceback_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(stack, "check_prerequisites", lambda: None)

    def boom(*args: object, **kwargs: object) -> None:
        raise ValueError("something odd")

    monkeypatch.setattr(stack, "start_services", boom)
    config = LocalConfig(root=tmp_path)
    err = io.StringIO()
    assert commands.up(config, out=io.StringIO(), err=err) == 1
    lines = err.getvalue().splitlines()
    assert lines[0] == "mlops up: unexpected error: ValueError: something odd"
    assert "Traceback" in (config.logs / "mlops-up.log").read_text()
    assert "Traceback" not in err.getvalue()


def test_trigger_sends_conf_run_id_and_an_optional_logical_date() -> None:
    import datetime as dt
    import json

    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        assert request.url.path == "/api/v2/dags/train_model/dagRuns"
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"dag_run_id": "x"})

    with _client(handler) as client:
        client.trigger("train_model", dt.datetime(2026, 1, 2, tzinfo=dt.UTC), note="n")
        client.trigger("train_model", None, conf={"estimator": "random_forest"}, run_id="mlops_up__x")
    assert bodies[0] == {"logical_date": "2026-01-02T00:00:00Z", "conf": {}, "note": "n"}
    assert bodies[1] == {"logical_date": None, "conf": {"estimator": "random_forest"},
                         "dag_run_id": "mlops_up__x"}
