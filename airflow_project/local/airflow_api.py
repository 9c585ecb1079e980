"""A tiny client for the Airflow 3 REST API (v2), just what `mlops up` needs.

Authentication is Airflow's simple auth manager: `POST /auth/token` with the
admin user and the password Airflow generated into `passwords.json` returns a
JWT, sent as a bearer token on every `/api/v2` call.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, Self
from urllib.parse import quote

import httpx

TERMINAL_RUN_STATES = frozenset({"success", "failed"})
FAILED_TASK_STATES = frozenset({"failed", "upstream_failed"})


class AirflowApiError(RuntimeError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def iso(moment: dt.datetime) -> str:
    """An aware datetime as the ISO form the API expects (UTC, `Z`)."""
    if moment.tzinfo is None:
        raise ValueError("datetime must be timezone-aware")
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class AirflowClient:
    def __init__(self, base_url: str, username: str, password: str | None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, trust_env=False,
                                  transport=transport)
        self._token: str | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing
    def health(self) -> dict[str, Any] | None:
        """`GET /api/v2/monitor/health` (no authentication); None when unreachable."""
        try:
            response = self._http.get("/api/v2/monitor/health", timeout=5)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        return response.json()

    def login(self) -> str:
        if self.password is None:
            raise AirflowApiError("the Airflow admin password file does not exist yet")
        try:
            response = self._http.post(
                "/auth/token", json={"username": self.username, "password": self.password}
            )
        except httpx.TransportError as exc:
            raise AirflowApiError(f"Airflow API at {self.base_url} unreachable: {exc}") from exc
        if response.status_code not in (200, 201):
            raise AirflowApiError(
                f"login to Airflow as {self.username!r} failed: HTTP {response.status_code} {response.text[:200]}"
            )
        self._token = response.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call: logs in when needed, again once on 401, and retries transport errors.

        The api-server drops the connection after an unhandled error (HTTP 500), so
        the next call on that kept-alive connection can fail with a reset: retried.
        """
        if self._token is None:
            self.login()
        extra_headers = kwargs.pop("headers", {})
        relogged = False
        attempt = 0
        while True:
            attempt += 1
            headers = {"Authorization": f"Bearer {self._token}", **extra_headers}
            try:
                response = self._http.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                if attempt >= 3:
                    raise AirflowApiError(
                        f"{method} {path}: Airflow API at {self.base_url} unreachable: {exc}"
                    ) from exc
                time.sleep(0.5 * attempt)
                continue
            if response.status_code == 401 and not relogged:
                relogged = True
                self.login()
                continue
            return response

    def _json(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if response.status_code not in ok:
            raise AirflowApiError(
                f"{method} {path}: HTTP {response.status_code} {response.text[:300]}", response.status_code
            )
        return response.json()

    # ------------------------------------------------------------------ DAGs
    def get_dag(self, dag_id: str) -> dict[str, Any] | None:
        response = self.request("GET", f"/api/v2/dags/{quote(dag_id)}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise AirflowApiError(f"GET dag {dag_id}: HTTP {response.status_code} {response.text[:300]}")
        return response.json()

    def import_errors(self) -> list[dict[str, Any]]:
        return self._json("GET", "/api/v2/importErrors").get("import_errors", [])

    def unpause(self, dag_id: str) -> dict[str, Any]:
        return self._json("PATCH", f"/api/v2/dags/{quote(dag_id)}", json={"is_paused": False})

    # ------------------------------------------------------------------ runs
    def runs(self, dag_id: str, **params: Any) -> list[dict[str, Any]]:
        params.setdefault("limit", 100)
        data = self._json("GET", f"/api/v2/dags/{quote(dag_id)}/dagRuns", params=params)
        return data.get("dag_runs", [])

    def runs_for_logical_date(self, dag_id: str, logical_date: dt.datetime) -> list[dict[str, Any]]:
        stamp = iso(logical_date)
        return self.runs(dag_id, logical_date_gte=stamp, logical_date_lte=stamp)

    def get_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self._json("GET", f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}")

    def trigger(self, dag_id: str, logical_date: dt.datetime | None, note: str | None = None, *,
                conf: dict[str, Any] | None = None, run_id: str | None = None) -> httpx.Response:
        """Trigger a run; the caller handles 409 (a run for that logical date or run id exists).

        `logical_date=None` triggers a run without a logical date (Airflow 3: any number of
        those per DAG); `conf` becomes the run's params; `run_id` names the run (else Airflow's
        `manual__<time>`).
        """
        body: dict[str, Any] = {
            "logical_date": None if logical_date is None else iso(logical_date), "conf": dict(conf or {}),
        }
        if run_id:
            body["dag_run_id"] = run_id
        if note:
            body["note"] = note
        return self.request("POST", f"/api/v2/dags/{quote(dag_id)}/dagRuns", json=body)

    def clear_failed(self, dag_id: str, run_id: str) -> Any:
        return self._json(
            "POST", f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}/clear",
            json={"dry_run": False, "only_failed": True},
        )

    def upstream_asset_events(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        data = self._json(
            "GET", f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}/upstreamAssetEvents"
        )
        return data.get("asset_events", [])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        data = self._json(
            "GET", f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}/taskInstances",
            params={"limit": 100},
        )
        return data.get("task_instances", [])

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        """The task's log as plain text lines (empty when there is none)."""
        response = self.request(
            "GET",
            f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}/taskInstances/"
            f"{quote(task_id)}/logs/{try_number}",
            params={"full_content": "true"}, headers={"Accept": "application/json"},
        )
        if response.status_code != 200:
            return ""
        return format_log_content(response.json().get("content"))


def format_log_content(content: Any) -> str:
    """Structured log records from the API -> `LEVEL event` lines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    lines: list[str] = []
    for record in content:
        if isinstance(record, str):
            if not record.startswith(("::group::", "::endgroup::")):
                lines.append(record)
            continue
        if not isinstance(record, dict):
            continue
        event = str(record.get("event", ""))
        if event.startswith(("::group::", "::endgroup::")):  # UI folding markers
            continue
        level = str(record.get("level", "")).upper()
        lines.append(f"{level} {event}".strip() if level else event)
        error = record.get("error_detail")
        if error:
            for item in error if isinstance(error, list) else [error]:
                if isinstance(item, dict):
                    lines.append(f"  {item.get('exc_type', '')}: {item.get('exc_value', '')}")
    return "\n".join(lines)
