"""Locust users for the wachttijden endpoints. Run only through `locust` (a subprocess).

- `PredictorUser`: the KServe predictor, V1 `/v1/models/<m>:predict` and V2
  `/v2/models/<m>/infer` (pandas content type), mixed by LOADTEST_V2_SHARE.
- `GraphUser`: the InferenceGraph router (the router ignores the path; V1 body).

Targets, Host headers and the payload size come from `loadtest.settings` (environment
variables). Every response is checked: status 200 and one prediction per row,
otherwise the request counts as a failure. Pick the users with the class names on the
command line (the Makefile's TARGET switch does this) or `--class-picker` in the web UI.
"""

from __future__ import annotations

import json
import random
import sys
from itertools import count
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: `loadtest`

from locust import FastHttpUser, between, task

from loadtest import payloads
from loadtest.settings import Settings

SETTINGS = Settings.from_env()
BATCHES = payloads.pool(size=512, rows_per_request=SETTINGS.rows)
V1_BODIES = payloads.encoded(BATCHES, "v1")
V2_BODIES = payloads.encoded(BATCHES, "v2")
_TICKET = count()


def _headers(host_header: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if host_header:
        headers["Host"] = host_header
    return headers


def _check(response, expected_rows: int, protocol: str) -> None:
    """Mark the response failed unless it is a 200 with one prediction per row."""
    if response.status_code != 200:
        response.failure(f"HTTP {response.status_code}: {response.text[:200] if response.text else ''}")
        return
    try:
        body = json.loads(response.content)
        if protocol == "v1":
            predictions = body["predictions"]
        else:
            predictions = next(o for o in body["outputs"] if o["name"] == "predictions")["data"]
    except (ValueError, KeyError, TypeError, StopIteration) as exc:
        response.failure(f"unexpected body ({type(exc).__name__}): {response.text[:200]}")
        return
    if len(predictions) != expected_rows or not all(isinstance(p, (int, float)) for p in predictions):
        response.failure(f"expected {expected_rows} numeric predictions, got {predictions!r:.200}")
        return
    response.success()


class PredictorUser(FastHttpUser):
    """The KServe predictor, V1 and V2."""

    host = SETTINGS.predictor_url
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        self.headers = _headers(SETTINGS.host_header)
        self.rng = random.Random(next(_TICKET))

    @task
    def predict(self) -> None:
        i = self.rng.randrange(len(BATCHES))
        if self.rng.random() < SETTINGS.v2_share:
            path, body, protocol, name = SETTINGS.v2_path(), V2_BODIES[i], "v2", "predictor V2 infer"
        else:
            path, body, protocol, name = SETTINGS.v1_path(), V1_BODIES[i], "v1", "predictor V1 predict"
        with self.client.post(path, data=body, headers=self.headers, name=name,
                              catch_response=True) as response:
            _check(response, len(BATCHES[i]), protocol)


class GraphUser(FastHttpUser):
    """The InferenceGraph (local router or KServe router behind the ingress), V1 body."""

    host = SETTINGS.graph_url
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        self.headers = _headers(SETTINGS.graph_host_header)
        self.rng = random.Random(10_000 + next(_TICKET))

    @task
    def graph(self) -> None:
        i = self.rng.randrange(len(BATCHES))
        with self.client.post("/", data=V1_BODIES[i], headers=self.headers, name="graph V1",
                              catch_response=True) as response:
            _check(response, len(BATCHES[i]), "v1")
