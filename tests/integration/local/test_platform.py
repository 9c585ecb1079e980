"""`mlops up` / `status` / `down` for real: Azurite, MLflow and Airflow as processes.

One `up` cycle for the whole module (a few minutes on 2 cores): a fresh
MLOPS_HOME and free ports, then the job must have run end to end (prepare,
train, a second model, the champion, the mirroring graph and the mirror router
served); a second `up` reuses everything, serving included; an MLflow leader
killed with SIGKILL leaves an orphaned group that `status` shows and `up` cleans
up; `down` stops exactly our processes, the model servers and routers too, keeps
the data and leaves nothing listening; the next `up` serves again what was
recorded, a service deployed by hand included.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from airflow_project.host.net import free_port, free_port_range, http_ok, port_is_free
from airflow_project.local import commands, job, processes, stack, summary
from airflow_project.local.airflow_api import AirflowClient
from airflow_project.local.config import AIRFLOW_ADMIN_USER, LocalConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

ROWS = 3000




@dataclass
class UpResult:
    config: LocalConfig
    code: int
    out: str
    err: str
    seconds: float


def _run_up(config: LocalConfig) -> UpResult:
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    code = commands.up(config, rows=ROWS, timeout=1200, out=out, err=err)
    return UpResult(config, code, out.getvalue(), err.getvalue(), time.monotonic() - started)


@pytest.fixture(scope="module")
def first_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpResult]:
    home = tmp_path_factory.mktemp("mlops-home")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLOPS_HOME", str(home))
        env.setenv("MLOPS_AZURITE_PORT", str(free_port()))
        env.setenv("MLOPS_MLFLOW_PORT", str(free_port()))
        env.setenv("MLOPS_AIRFLOW_PORT", str(free_port()))
        env.setenv("MLOPS_SERVING_PORT", str(free_port_range(10)))
        env.delenv("MLOPS_SERVING_NAMESPACE", raising=False)
        config = LocalConfig()
        assert config.root == home
        try:
            result = _run_up(config)
            print(result.out, result.err)
            yield result
        finally:
            commands.down(config, purge=False, out=io.StringIO(), err=io.StringIO())


@pytest.fixture(scope="module")
def api(first_up: UpResult) -> Iterator[AirflowClient]:
    config = first_up.config
    with AirflowClient(config.airflow_url, AIRFLOW_ADMIN_USER, config.airflow_password()) as client:
        yield client


def _today_midnight() -> dt.datetime:
    return dt.datetime.combine(dt.datetime.now(dt.UTC).date(), dt.time(0), tzinfo=dt.UTC)


def _live_pids(config: LocalConfig) -> dict[str, int]:
    return {
        name: record.pid for name, record in processes.read_pid_records(config.run).items()
        if processes.record_alive(record)
    }


def _serving_pids(config: LocalConfig) -> dict[str, int]:
    return {o["name"]: o["pid"] for o in job.serving_objects(config) if o["running"]}


def _run_counts(api: AirflowClient) -> tuple[int, ...]:
    return tuple(len(api.runs(d)) for d in job.JOB_DAGS)


def _model_versions(config: LocalConfig) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=config.mlflow_uri, registry_uri=config.mlflow_uri)
    return sorted(v.version for v in client.search_model_versions("name='wachttijden'"))


def _training_experiment_id(config: LocalConfig) -> str:
    from mlflow import MlflowClient

    from airflow_project.registry import EXPERIMENT

    return MlflowClient(tracking_uri=config.mlflow_uri).get_experiment_by_name(EXPERIMENT).experiment_id


def test_up_runs_the_whole_job(first_up: UpResult, api: AirflowClient) -> None:
    assert first_up.code == 0, first_up.err + first_up.out
    assert first_up.err == ""
    out = first_up.out
    config = first_up.config
    # progress as it goes, then the summary
    assert "prepare_dataset.select_features: success" in out
    assert "train_model.train_and_register: success" in out
    assert f"Airflow UI  {config.airflow_url}   user admin   password {config.airflow_password()}" in out
    # the training runs, not the first experiment (the data checks' comes first)
    training_runs = f"{config.mlflow_uri}/#/experiments/{_training_experiment_id(config)}/runs"
    assert f"MLflow UI   {training_runs}   (training runs" in out
    assert "  Status      make status" in out
    # a second estimator was trained because champion == challenger after the first run
    assert "training a second estimator (random_forest)" in out
    assert "train_model run mlops_up__random_forest__" in out
    assert "wachttijden version 1" in out and "wachttijden version 2" in out
    assert ", served as primary" in out and ", served as shadow" in out
    for metric in ("r2=", "mae=", "rmse=", "baseline_mae="):
        assert metric in out
    assert "deploy_traffic_mirroring.compare_shadow: success" in out
    # the data checks' headline next to the model metrics (no champion before the first run)
    assert "prepare_dataset.validate_export: success" in out
    data_line = next(line for line in out.splitlines() if line.startswith("  Data        raw/wachttijden/"))
    assert f"of {ROWS:,} rows usable" in data_line and "drift not measured" in data_line
    assert data_line.endswith("gate passed")
    assert "data checks: " + config.mlflow_uri in out
    assert str(config.logs) in out and "make down" in out

    prepare = api.runs_for_logical_date("prepare_dataset", _today_midnight())
    assert [r["state"] for r in prepare] == ["success"]
    train = api.runs("train_model", run_type="asset_triggered")
    assert [r["state"] for r in train] == ["success"]
    events = api.upstream_asset_events("train_model", train[0]["dag_run_id"])
    assert any(e["source_run_id"] == prepare[0]["dag_run_id"] for e in events)
    assert _model_versions(config) == ["1", "2"]
    second = api.get_run("train_model", f"mlops_up__random_forest__{_today_midnight():%Y-%m-%d}")
    assert second["state"] == "success"
    assert second["conf"]["estimator"] == "random_forest"
    assert [r["state"] for r in api.runs("deploy_traffic_mirroring")] == ["success"]
    # a fresh `up` starts no task before the api-server and its Execution API answer: what
    # queues and runs tasks starts after that, and no task needed a second try (a scheduler
    # started with the api-server queued the first task before anything listened)
    api_ready = out.index("airflow-api-server is ready")
    assert out.index("started airflow-scheduler") > api_ready and out.index("started airflow-triggerer") > api_ready
    retried = [(dag_id, run["dag_run_id"], ti["task_id"], ti.get("try_number"))
               for dag_id in job.JOB_DAGS for run in api.runs(dag_id)
               for ti in api.task_instances(dag_id, run["dag_run_id"]) if (ti.get("try_number") or 1) > 1]
    assert retried == []

    # services log under <root>/logs, task logs under <root>/logs/airflow
    for name in stack.SERVICE_NAMES:
        assert (config.logs / f"{name}.log").stat().st_size > 0
    assert list((config.logs / "airflow").rglob("*.log"))


def test_successful_tasks_log_no_error_lines(first_up: UpResult) -> None:
    """MLflow's INFO and WARNING records keep their level in the task log; on stderr they
    were logged as `"level":"error"` (task.stderr) although the task succeeded. Every task
    that talks to MLflow: the data checks, the backtest, training, the shadow comparison."""
    assert first_up.code == 0, first_up.err + first_up.out
    logs = sorted((first_up.config.logs / "airflow").rglob("attempt=*.log"))
    training = [p for p in logs if "task_id=train_and_register" in str(p)]
    assert len(training) == 2
    mlflow_tasks = ("validate_export", "backtest", "compare_shadow")
    others = [p for p in logs if any(f"task_id={task}" in str(p) for task in mlflow_tasks)]
    assert {task for task in mlflow_tasks if any(f"task_id={task}" in str(p) for p in others)} == set(mlflow_tasks)
    mlflow_lines = 0
    for path in training + others:
        events = []
        for line in path.read_text().splitlines():
            record = json.loads(line)
            assert record.get("level") != "error", f"{path}: {line}"
            mlflow_lines += str(record.get("logger", "")).startswith("mlflow")
            events.append(str(record.get("event", "")))
        # MLflow left to write conda.yaml looks for pip, which a uv environment has not
        assert not any("Failed to resolve installed pip version" in e for e in events), path
        if "task_id=validate_export" in str(path):  # the data checks' headline, once (and in the XCom)
            assert sum("rows usable" in e and not e.startswith("Done. Returned value") for e in events) == 1, events
    assert mlflow_lines > 0  # MLflow's own records are there, at their own level


def _summary_value(out: str, label: str) -> str:
    line = next(line for line in out.splitlines() if line.startswith(f"  {label}"))
    return line.split()[1]


def test_up_serves_the_champion_and_the_graph(first_up: UpResult) -> None:
    """The printed URLs answer a V1 prediction over HTTP, and the printed answers are real."""
    assert first_up.code == 0, first_up.err + first_up.out
    out = first_up.out
    base = first_up.config.ports.serving
    predictor, graph, shadow, mirror = (_summary_value(out, k) for k in ("Predictor", "Graph", "Shadow", "Mirror"))
    # reserved in this order: the loadtest defaults' layout (predictor base, graph base + 1)
    assert predictor == f"http://127.0.0.1:{base}/v1/models/wachttijden:predict"
    assert graph == f"http://127.0.0.1:{base + 1}"
    assert shadow == f"http://127.0.0.1:{base + 2}/v1/models/wachttijden:predict"
    assert mirror == f"http://127.0.0.1:{base + 3}/v1/models/wachttijden:predict"
    body = summary.sample_request()
    answers = {}
    for name, url in (("predictor", predictor), ("graph", graph + "/"), ("shadow", shadow), ("mirror", mirror)):
        response = httpx.post(url, json=body, timeout=30, trust_env=False)
        assert response.status_code == 200, (name, response.text)
        [prediction] = response.json()["predictions"]
        assert 0 <= prediction < 200
        answers[name] = response.json()
    assert answers["graph"] == answers["predictor"] == answers["mirror"]  # the primary answers
    # the curl lines are printed with the answer up got
    assert summary.curl_command(predictor, body) in out
    assert summary.curl_command(graph + "/", body) in out
    assert summary.curl_command(mirror, body) in out
    assert f"-> {json.dumps(answers['predictor'])}" in out
    assert "Comparison  MLflow experiment wachttijden-shadow: " in out
    # a little traffic, captured, and one monitor_serving run with its headline and report
    sent = re.search(r"sent 200 requests \(1000 rows\) through the mirror router; capture wrote (\d+) predictions "
                     r"to serving-logs, 0 dropped", out)
    assert sent and int(sent.group(1)) >= 400, out[out.find("sent 200"):][:2000]  # primary and shadow, smoke tests too
    assert re.search(r"Monitoring  monitor_serving run mlops_up__monitor__\S+: v\d+ \(primary\) \d+ requests, drift "
                     r".*shadow v\d+ vs primary v\d+ on \d+ mirrored requests.*; passed", out), out
    assert re.search(r"report: http://127\.0\.0\.1:\d+/#/experiments/\d+/runs/\w+", out)


def test_status_shows_every_service_running_and_ready(first_up: UpResult) -> None:
    out = io.StringIO()
    assert commands.status(first_up.config, out=out) == 0, out.getvalue()
    table = out.getvalue().split("\n\n")[0].splitlines()[1:]
    assert [line.split()[:2] for line in table] == [[n, "running"] for n in stack.SERVICE_NAMES]
    assert all(line.split()[4] == "yes" for line in table)
    assert first_up.config.airflow_url in out.getvalue()
    assert "have no pid file" not in out.getvalue()  # every process of the home is accounted for
    serving = out.getvalue().split("\n\n")[1].splitlines()
    assert serving[0].split() == ["SERVING", "KIND", "STATE", "PID", "LISTEN", "READY", "VERSION", "ALIAS", "URL"]
    rows = sorted((line.split()[0], line.split()[1], line.split()[2], line.split()[5]) for line in serving[1:]
                  if not line.split()[0].endswith(":"))
    assert re.search(r"^serving/capture: [\d,]+ predictions written to serving-logs, [\d,]+ buffered, 0 dropped$",
                     out.getvalue(), re.MULTILINE), out.getvalue()
    assert rows == [("serving/capture", "Capture", "running", "yes"),
                    ("serving/wachttijden-graph", "InferenceGraph", "running", "yes"),
                    ("serving/wachttijden-primary", "InferenceService", "running", "yes"),
                    ("serving/wachttijden-primary-mirror", "VirtualService", "running", "yes"),
                    ("serving/wachttijden-shadow", "InferenceService", "running", "yes")]
    # per serving object: where it listens, the version it serves and that version's aliases
    from mlflow import MlflowClient

    aliases = MlflowClient(first_up.config.mlflow_uri).get_registered_model("wachttijden").aliases
    by_name = {line.split()[0]: line.split() for line in serving[1:] if not line.split()[0].endswith(":")}
    primary, shadow = by_name["serving/wachttijden-primary"], by_name["serving/wachttijden-shadow"]
    assert primary[6] == f"v{aliases['champion']}" and "champion" in primary[7].split(",")
    assert shadow[6].startswith("v") and shadow[6] != primary[6]
    for router in ("serving/wachttijden-graph", "serving/wachttijden-primary-mirror"):  # what it routes to
        assert set(by_name[router][6].split(",")) == {primary[6], shadow[6]} and by_name[router][7] == "-"
    for name, cells in by_name.items():
        if cells[1] == "Capture":  # follows the predictors' logs: no port
            assert cells[4] == "-", cells
            continue
        host, _, port = cells[4].rpartition(":")
        assert host == "127.0.0.1" and cells[-1].endswith(f":{port}"), (name, cells)
    memory = out.getvalue().split("\n\nPROCESS")[1].split("\n\n")[0].splitlines()
    owners = {line.split()[0] for line in memory[1:-1]}
    assert set(stack.SERVICE_NAMES) <= owners and "serving/wachttijden-graph" in owners
    total = memory[-1]
    assert total.startswith("Total RSS: ") and " in " in total
    print(out.getvalue())
    # MLflow without its job runner and huey consumers: the server and its uvicorn worker
    mlflow = [line for line in memory if line.startswith("mlflow ")]
    assert len(mlflow) == 2 and not any("huey" in line or "_job_runner" in line for line in mlflow), mlflow


def test_a_port_taken_by_another_process_gives_a_clear_message(first_up: UpResult, tmp_path: Path) -> None:
    """A second platform in another home on the first one's Azurite port must refuse to start."""
    taken = first_up.config.ports.azurite
    other = LocalConfig(root=tmp_path / "other", ports=type(first_up.config.ports)(
        azurite=taken, mlflow=free_port(), airflow=free_port()))
    out, err = io.StringIO(), io.StringIO()
    assert commands.up(other, out=out, err=err) == 2
    message = err.getvalue()
    assert f"port {taken} on 127.0.0.1, needed by azurite, is already in use" in message
    assert "MLOPS_AZURITE_PORT=" in message
    assert "Traceback" not in message
    assert processes.read_pid_records(other.run) == {}


def test_up_again_reuses_everything(first_up: UpResult, api: AirflowClient) -> None:
    config = first_up.config
    before = _live_pids(config)
    serving_before = _serving_pids(config)
    runs_before = _run_counts(api)
    again = _run_up(config)
    print(f"second up took {again.seconds:.1f}s:\n{again.out}{again.err}")
    assert again.code == 0, again.err + again.out
    for name in stack.SERVICE_NAMES:
        assert f"{name} already running (pid {before[name]}), reusing it" in again.out
    assert "already succeeded: reusing it (no new run)" in again.out
    assert "already in the data lake" in again.out
    assert "not redeploying" in again.out and "already running)" in again.out
    assert _live_pids(config) == before
    assert _serving_pids(config) == serving_before
    assert _run_counts(api) == runs_before
    assert _model_versions(config) == ["1", "2"]
    assert again.seconds < 60


def test_up_restarts_only_what_is_missing(first_up: UpResult) -> None:
    config = first_up.config
    before = _live_pids(config)
    record = processes.read_pid_records(config.run)[stack.TRIGGERER]
    processes.stop_records([record], timeout=15)
    again = _run_up(config)
    assert again.code == 0, again.err + again.out
    after = _live_pids(config)
    assert after[stack.TRIGGERER] != before[stack.TRIGGERER]
    assert f"started {stack.TRIGGERER}" in again.out
    assert {k: v for k, v in after.items() if k != stack.TRIGGERER} == {
        k: v for k, v in before.items() if k != stack.TRIGGERER}


def test_up_recovers_from_a_sigkilled_mlflow_leader(first_up: UpResult) -> None:
    """kill -9 of the MLflow server leaves its uvicorn worker answering on the port: `status`
    calls it orphaned with the pids, `up` stops that group and starts MLflow again."""
    config = first_up.config
    record = processes.read_pid_records(config.run)[stack.MLFLOW]
    os.kill(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while processes.record_alive(record) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p.pid for p in processes.orphans(record)]
    assert left and http_ok(f"{config.mlflow_uri}/health")  # the orphaned worker still answers
    status = io.StringIO()
    assert commands.status(config, out=status) == 1
    assert (f"mlflow is orphaned: its leader is gone, its process group still runs pid "
            f"{', '.join(map(str, left))} and holds port {config.ports.mlflow}") in status.getvalue()
    before = _live_pids(config)
    again = _run_up(config)
    assert again.code == 0, again.err + again.out
    assert (f"mlflow: its leader (pid {record.pid}) was gone but its process group still ran "
            f"(pid {', '.join(map(str, left))}): stopped it") in again.out
    assert f"started {stack.MLFLOW}" in again.out
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in left)
    after = _live_pids(config)
    assert after[stack.MLFLOW] != record.pid
    assert {k: v for k, v in after.items() if k != stack.MLFLOW} == {
        k: v for k, v in before.items() if k != stack.MLFLOW}


def _listening(config: LocalConfig) -> list[int]:
    serving = json.loads((config.root / "serving" / "ports.json").read_text()).values()
    ports = [config.ports.azurite, config.ports.mlflow, config.ports.airflow, *serving]
    return [port for port in ports if not port_is_free(port)]


def test_down_stops_our_processes_and_keeps_data(first_up: UpResult, monkeypatch: pytest.MonkeyPatch) -> None:
    config = first_up.config
    pids = _live_pids(config)
    assert set(pids) == set(stack.SERVICE_NAMES)
    descendants = [c for pid in pids.values() for c in psutil.Process(pid).children(recursive=True)]
    # a service deployed by hand (what deploy_model does), to be restored by the next up
    from airflow_project.deploy_steps import deploy_predictor
    from airflow_project.serving.targets.local import LocalTarget

    monkeypatch.setenv("MLFLOW_TRACKING_URI", config.mlflow_uri)  # as the Airflow tasks have it
    target = LocalTarget("serving", home=config.root, base_port=config.ports.serving)
    deploy_predictor("wachttijden", "models:/wachttijden/1", target=target, timeout=300)
    serving = _serving_pids(config)
    assert sorted(serving) == ["capture", "wachttijden", "wachttijden-graph", "wachttijden-primary",
                               "wachttijden-primary-mirror", "wachttijden-shadow"]
    out, err = io.StringIO(), io.StringIO()
    assert commands.down(config, out=out, err=err) == 0
    assert err.getvalue() == ""
    for kind, name in (("InferenceGraph", "wachttijden-graph"), ("InferenceService", "wachttijden-primary"),
                       ("InferenceService", "wachttijden-shadow"), ("InferenceService", "wachttijden"),
                       ("VirtualService", "wachttijden-primary-mirror"), ("Capture", "capture")):
        assert f"stopped serving serving/{kind}/{name}" in out.getvalue()
    assert "serving objects kept: `make up` starts them again on their ports" in out.getvalue()
    for pid in serving.values():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert [o["name"] for o in job.serving_objects(config) if o["running"]] == []
    assert len(job.serving_objects(config)) == 6  # the records are kept (the capture process's too)
    assert _listening(config) == []
    for name, pid in pids.items():
        assert f"stopped {name} (pid {pid})" in out.getvalue()
    for pid in pids.values():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert all(not c.is_running() or c.status() == psutil.STATUS_ZOMBIE for c in descendants)
    assert processes.read_pid_records(config.run) == {}
    # data kept
    assert (config.mlflow_data / "mlflow.db").exists()
    assert (config.airflow_home / "airflow.db").exists()
    assert any(config.azurite_data.iterdir())
    status = io.StringIO()
    assert commands.status(config, out=status) == 1
    assert "not running" in status.getvalue()


def test_up_after_down_serves_again_what_was_recorded(first_up: UpResult, api: AirflowClient) -> None:
    """Data kept, serving kept: every recorded InferenceService and router runs again on its
    port (the one deployed by hand too), and the job finds them serving."""
    config = first_up.config
    ports = json.loads((config.root / "serving" / "ports.json").read_text())
    again = _run_up(config)
    print(f"up after down took {again.seconds:.1f}s:\n{again.out}{again.err}")
    assert again.code == 0, again.err + again.out
    for key in ("serving/InferenceService/wachttijden", "serving/InferenceService/wachttijden-primary",
                "serving/InferenceGraph/wachttijden-graph", "serving/VirtualService/wachttijden-primary-mirror"):
        assert f"restored serving {key} on http://127.0.0.1:{ports[key]}" in again.out
    assert "not redeploying" in again.out
    assert _run_counts(api) == (1, 2, 1)  # prepare, train (asset event and second model), mirroring
    response = httpx.post(f"http://127.0.0.1:{ports['serving/InferenceService/wachttijden']}"
                          "/v1/models/wachttijden:predict", json=summary.sample_request(), timeout=30, trust_env=False)
    assert response.status_code == 200, response.text
    out, err = io.StringIO(), io.StringIO()
    assert commands.down(config, out=out, err=err) == 0, err.getvalue()
    assert _listening(config) == []
