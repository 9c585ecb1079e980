"""Integration fixtures: a real `mlflow server` (SQLite + local proxied artifacts) with a
registered `wachttijden` model (champion + challenger, skops), real predictor processes
(`python -m airflow_project.serving`) and real router processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 90.0, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered:\n{tail}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Proc:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path):
        self.proc, self.url, self.log = proc, url, log

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = tmp / "mlflow.log"
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
         "--artifacts-destination", str(tmp / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=_env(), cwd=tmp,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc, timeout=120, log=log)
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def registered(mlflow_server):
    """Two versions of `wachttijden`: v1 champion (depth-12 tree), v2 challenger (depth-3 tree)."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient
    from sklearn.tree import DecisionTreeRegressor

    from airflow_project.wachttijden import dataset, synthetic
    from airflow_project.wachttijden.schema import FEATURES, MODEL_NAME
    from airflow_project.wachttijden.training import TrainingConfig, train

    raw = synthetic.to_raw_bytes(synthetic.generate(synthetic.SyntheticConfig(rows=3000)))
    frame, _ = dataset.prepare(raw, "t")
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("serving-integration")
    pipelines = {}
    for alias, depth in [("champion", 12), ("challenger", 3)]:
        result = train(frame, TrainingConfig())
        pipeline = result.pipeline
        pipeline.set_params(regressor=DecisionTreeRegressor(max_depth=depth, random_state=0))
        pipeline.fit(result.x_train, frame.loc[result.x_train.index, "WACHTTIJD"])
        x = result.x_test.head(5)
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                pipeline, name="model", serialization_format="skops",
                skops_trusted_types=["sklearn.tree._tree.Tree"],
                signature=infer_signature(x, pipeline.predict(x)), input_example=x,
                registered_model_name=MODEL_NAME,
            )
        version = str(info.registered_model_version)
        MlflowClient().set_registered_model_alias(MODEL_NAME, alias, version)
        pipelines[alias] = (version, pipeline)
    return {"features": FEATURES, **pipelines}


def start_predictor(tmp: Path, model_uri: str, tracking_uri: str, name: str = "wachttijden",
                    extra: tuple[str, ...] = ()) -> Proc:
    port = free_port()
    log = tmp / f"predictor-{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_project.serving", "--model-uri", model_uri, "--name", name,
         "--port", str(port), "--tracking-uri", tracking_uri, *extra],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=_env(), cwd=tmp,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/v2/models/{name}/ready", proc, timeout=120, log=log)
    return Proc(proc, url, log)


def start_router(tmp: Path, config: dict, extra: tuple[str, ...] = ()) -> Proc:
    port = free_port()
    graph_file = tmp / f"graph-{port}.json"
    graph_file.write_text(json.dumps(config))
    log = tmp / f"router-{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_project.serving.router", "--graph", str(graph_file), "--port", str(port),
         *extra],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=_env(), cwd=tmp,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/readyz", proc, timeout=60, log=log)
    return Proc(proc, url, log)


@pytest.fixture(scope="session")
def primary(tmp_path_factory, mlflow_server, registered):
    p = start_predictor(tmp_path_factory.mktemp("primary"), "models:/wachttijden@champion", mlflow_server)
    yield p
    stop(p.proc)


@pytest.fixture(scope="session")
def shadow(tmp_path_factory, mlflow_server, registered):
    p = start_predictor(tmp_path_factory.mktemp("shadow"), "models:/wachttijden@challenger", mlflow_server)
    yield p
    stop(p.proc)


@pytest.fixture
def router_factory(tmp_path):
    started: list[Proc] = []

    def make(config: dict) -> Proc:
        r = start_router(tmp_path, config)
        started.append(r)
        return r

    yield make
    for r in started:
        stop(r.proc)
