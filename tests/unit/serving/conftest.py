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
def client(model):
    """KServe's own app with our model and guards, exactly as `serve()` builds it."""
    from fastapi.testclient import TestClient
    from kserve import ModelServer
    from kserve import model_server as kserve_model_server
    from kserve.protocol.rest.server import RESTServer

    from airflow_project.serving.server import harden_dataplane, install_guards

    server = ModelServer(http_port=0, enable_grpc=False)
    server.register_model(model)
    install_guards(kserve_model_server.app, MAX_BODY)
    harden_dataplane(server.dataplane)
    RESTServer(kserve_model_server.app, server.dataplane, server.model_repository_extension, 0).create_application()
    with TestClient(kserve_model_server.app, raise_server_exceptions=False) as c:
        yield c
