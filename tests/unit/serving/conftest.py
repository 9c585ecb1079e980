"""Fixtures for the serving unit tests: a small pipeline fitted in-process on synthetic
data and the real KServe FastAPI app (in-process, via TestClient)."""

from __future__ import annotations

import pytest

from airflow_project.wachttijden import dataset, synthetic
from airflow_project.wachttijden.training import TrainingConfig, train


def training_frame(rows: int = 3000, seed: int = 42):
    raw = synthetic.to_raw_bytes(synthetic.generate(synthetic.SyntheticConfig(rows=rows, seed=seed)))
    frame, _ = dataset.prepare(raw, "t")
    return frame


@pytest.fixture(scope="session")
def frame():
    return training_frame()


@pytest.fixture(scope="session")
def pipeline(frame):
    return train(frame, TrainingConfig(estimator="decision_tree")).pipeline


@pytest.fixture(scope="session")
def model(pipeline):
    from airflow_project.serving.predictor import WachttijdenModel

    m = WachttijdenModel("wachttijden", pipeline=pipeline, model_version="7")
    m.load()
    return m


MAX_BODY = 64 * 1024


@pytest.fixture(scope="session")
def max_body() -> int:
    return MAX_BODY


@pytest.fixture(scope="session")
def served(model):
    """What `serve()` serves, built by the same `build_app()`: KServe's model server and app
    with our guards, behind the fast path."""
    from airflow_project.serving.server import build_app

    return build_app(model, MAX_BODY, http_port=0)


@pytest.fixture(scope="session")
def client(served):
    """The predictor as a client sees it: fast path first, KServe for everything else."""
    from fastapi.testclient import TestClient

    with TestClient(served.app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
def kserve_client(served):
    """KServe's own app alone (no fast path): what the fast path must answer exactly like."""
    from fastapi.testclient import TestClient

    with TestClient(served.kserve_app, raise_server_exceptions=False) as c:
        yield c
