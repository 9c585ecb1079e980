"""`mlops up`'s serving step: the second-model decision, which versions to serve, reuse of
running serving objects, the summary with curl lines; `status`/`down` for serving objects."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_project.local import airflow_api, commands, errors, job, models, summary
from airflow_project.local.config import LocalConfig, Ports
from airflow_project.local.models import RegistryState

State = RegistryState


@pytest.mark.parametrize(("state", "needed"), [
    (State((1,), 1, 1), True),           # first day: one version, both aliases on it
    (State((1, 2), 2, 2), True),         # the new version won: aliases on one version again
    (State((1,), 1, None), True),
    (State((1, 2), 1, 2), False),        # a distinct challenger exists
    (State((1, 2, 3), 3, 2), False),
])
def test_a_second_model_is_needed_only_without_a_distinct_challenger(state: State, needed: bool) -> None:
    assert models.needs_second_model(state) is needed


@pytest.mark.parametrize(("state", "expected"), [
    (State((1, 2), 1, 2), (1, 2)),       # champion primary, challenger shadow
    (State((1, 2), 2, 2), (2, 1)),       # the challenger won: the previous champion shadows
    (State((1, 2, 3), 3, 3), (3, 2)),    # the newest other version
    (State((1,), 1, 1), (1, 1)),         # only one version: it shadows itself
    # v3 is a backfill of an older export: by export date v2 is the newest other version
    (State((1, 2, 3), 1, 1, newest_first=(2, 1, 3)), (1, 2)),
])
def test_serving_versions(state: State, expected: tuple[int, int]) -> None:
    assert models.serving_versions(state) == expected


def test_no_champion_is_a_clear_error() -> None:
    with pytest.raises(errors.PlatformError, match="no champion"):
        models.serving_versions(State((1,), None, 1))


def test_second_model_run_id_and_conf_are_per_day() -> None:
    day = dt.date(2026, 1, 2)
    assert job.second_model_run_id(day) == "mlops_up__random_forest__2026-01-02"
    assert job.second_model_conf(day) == {
        "estimator": "random_forest", "input_path": "preprocessed/wachttijden/2026/01/02/wachttijden.csv"}


def test_mirroring_conf_pins_versions_and_asks_for_graph_and_mirror_router() -> None:
    conf = job.mirroring_conf(3, 2)
    assert conf["primary_model"] == "3" and conf["shadow_model"] == "2"
    assert conf["mirror_mode"] == "both"
    assert (conf["primary_service"], conf["shadow_service"], conf["graph_name"]) == (
        "wachttijden-primary", "wachttijden-shadow", "wachttijden-graph")


def _obj(kind: str, name: str, port: int, version: int | None = None, *, ns: str = "serving",
         running: bool = True, ready: bool = True) -> dict[str, Any]:
    argv = ["python", "-m", "airflow_project.serving.router", "--port", str(port)]
    if version is not None:
        argv = ["python", "-m", "airflow_project.serving", "--model-uri", f"models:/wachttijden/{version}",
                "--name", "wachttijden", "--port", str(port)]
    return {"kind": kind, "name": name, "namespace": ns, "port": port, "pid": 100 + port % 100,
            "url": f"http://127.0.0.1:{port}", "argv": argv, "running": running, "ready": ready}


def _objects(**changes: Any) -> list[dict[str, Any]]:
    return [
        _obj("InferenceService", "wachttijden-primary", 8100, changes.get("primary", 1), **changes.get("p", {})),
        _obj("InferenceGraph", "wachttijden-graph", 8101, **changes.get("g", {})),
        _obj("InferenceService", "wachttijden-shadow", 8102, changes.get("shadow", 2)),
        _obj("VirtualService", "wachttijden-primary-mirror", 8103, **changes.get("m", {})),
    ]


def test_running_serving_with_the_wanted_versions_is_reused() -> None:
    found = job.find_mirroring(_objects(), "serving", 1, 2)
    assert found is not None
    assert found.predictor_v1 == "http://127.0.0.1:8100/v1/models/wachttijden:predict"
    assert found.graph == "http://127.0.0.1:8101"
    assert found.shadow_v1 == "http://127.0.0.1:8102/v1/models/wachttijden:predict"
    assert found.mirror_v1 == "http://127.0.0.1:8103/v1/models/wachttijden:predict"


@pytest.mark.parametrize(("objects", "namespace", "versions"), [
    (_objects(), "serving", (2, 1)),                          # versions swapped: redeploy
    (_objects(primary=3), "serving", (1, 2)),                 # another version runs
    (_objects(p={"running": False}), "serving", (1, 2)),      # a process is gone
    (_objects(g={"ready": False}), "serving", (1, 2)),        # the router does not answer
    (_objects(), "other", (1, 2)),                            # another namespace
    (_objects()[:2], "serving", (1, 2)),                      # the shadow is missing
    (_objects()[:3], "serving", (1, 2)),                      # the mirror router is missing
    (_objects(m={"ready": False}), "serving", (1, 2)),        # ... or does not serve
])
def test_anything_else_is_redeployed(objects: list[dict[str, Any]], namespace: str,
                                     versions: tuple[int, int]) -> None:
    assert job.find_mirroring(objects, namespace, *versions) is None


def test_the_sample_is_a_real_row_in_feature_order() -> None:
    from airflow_project.wachttijden import categories
    from airflow_project.wachttijden.schema import FEATURES

    row = categories.SAMPLE_ROW
    assert tuple(row) == FEATURES
    assert row["SPECIALISME"] == "Orthopedie (305)"
    assert summary.sample_request() == {"instances": [row]}
    allowed = {"TYPE_WACHTTIJD": categories.TYPES_WACHTTIJD, "SPECIALISME": categories.SPECIALISMEN,
               "ROAZ_REGIO": categories.ROAZ_REGIOS, "TYPE_ZORGINSTELLING": categories.TYPES_ZORGINSTELLING}
    assert all(row[k] in allowed[k] for k in row)  # values the export really has


def test_curl_command_is_ready_to_paste() -> None:
    url = "http://127.0.0.1:8100/v1/models/wachttijden:predict"
    body = {"instances": [{"SPECIALISME": "Keel-, neus- en oorheelkunde (302)", "X": "it's"}]}
    command = summary.curl_command(url, body)
    words = shlex.split(command)
    assert words[:4] == ["curl", "-s", "-X", "POST"]
    assert words[4] == url
    assert words[words.index("-H") + 1] == "Content-Type: application/json"
    assert json.loads(words[words.index("-d") + 1]) == body


def test_summary_lists_urls_curl_and_answers() -> None:
    endpoints = summary.Endpoints("http://127.0.0.1:8100", "http://127.0.0.1:8101", "http://127.0.0.1:8102",
                                   "http://127.0.0.1:8103", primary_version=1, shadow_version=2,
                                   namespace="serving")
    body = summary.sample_request()
    demo = [summary.TryIt("predictor", endpoints.predictor_v1, summary.curl_command(endpoints.predictor_v1, body),
                           '{"predictions": [12.5]}')]
    comparison = models.ShadowComparison("wachttijden-shadow", "http://127.0.0.1:5000/#/experiments/2/runs",
                                           {"mae_primary_vs_shadow": 0.25, "share_within_1_week": 0.9}, "v1-vs-v2")
    lines = summary.format_serving_summary(endpoints, demo, comparison)
    text = "\n".join(lines)
    assert lines[0].startswith("  Predictor   http://127.0.0.1:8100/v1/models/wachttijden:predict   (champion, version 1")
    assert lines[1].startswith("  Graph       http://127.0.0.1:8101   (InferenceGraph serving/wachttijden-graph")
    assert lines[2].startswith("  Mirror      http://127.0.0.1:8103/v1/models/wachttijden:predict   (mirror router")
    assert lines[3].startswith("  Shadow      http://127.0.0.1:8102/v1/models/wachttijden:predict   (version 2")
    assert "Comparison  MLflow experiment wachttijden-shadow: http://127.0.0.1:5000/#/experiments/2/runs" in text
    assert "v1-vs-v2: mae_primary_vs_shadow=0.250  share_within_1_week=0.900" in text
    assert f"  {demo[0].curl}\n  -> {{\"predictions\": [12.5]}}" in text


def test_summary_says_when_the_shadow_beat_the_champion() -> None:
    endpoints = summary.Endpoints("http://127.0.0.1:8100", "http://127.0.0.1:8101", "http://127.0.0.1:8102",
                                   "http://127.0.0.1:8103", primary_version=1, shadow_version=2,
                                   namespace="serving")
    metrics = {"mae_primary": 1.30, "mae_shadow": 1.20}
    beat = models.ShadowComparison("wachttijden-shadow", "u", metrics, "v1-vs-v2", shadow_beat_primary=True)
    text = "\n".join(summary.format_serving_summary(endpoints, [], beat))
    assert ("  Note        the shadow (version 2) beat the champion (version 1) on these rows: mae_shadow 1.200 "
            "< mae_primary 1.300 (MLflow tag shadow_beat_primary=true)") in text
    kept = models.ShadowComparison("wachttijden-shadow", "u", metrics, "v1-vs-v2")
    assert "beat the champion" not in "\n".join(summary.format_serving_summary(endpoints, [], kept))


def _record(tmp_path: Path, kind: str, name: str, port: int, argv: list[str]) -> dict[str, Any]:
    return {"namespace": "serving", "kind": kind, "name": name, "port": port, "url": f"http://127.0.0.1:{port}",
            "argv": argv, "running": True, "ready": True, "pid": 0}


def test_status_lists_version_alias_and_listen_address_per_serving_object(tmp_path: Path) -> None:
    graph = tmp_path / "InferenceGraph-wachttijden-graph.graph.json"
    graph.write_text(json.dumps({"services": {"wachttijden-shadow": "http://127.0.0.1:8102",
                                              "wachttijden-primary": "http://127.0.0.1:8100"}}))
    objects = [
        _record(tmp_path, "InferenceService", "wachttijden-primary", 8100,
                ["python", "-m", "airflow_project.serving", "--model-uri", "models:/wachttijden/3", "--port", "8100",
                 "--host", "127.0.0.1"]),
        _record(tmp_path, "InferenceService", "wachttijden-shadow", 8102,
                ["python", "-m", "airflow_project.serving", "--model-uri", "models:/wachttijden/2", "--port", "8102"]),
        _record(tmp_path, "InferenceGraph", "wachttijden-graph", 8101,
                ["python", "-m", "airflow_project.serving.router", "--graph", str(graph), "--port", "8101",
                 "--host", "127.0.0.1"]),
    ]
    text = summary.format_serving(objects, {"3": ["champion"], "2": ["challenger"]})
    header, *rows = text.splitlines()
    assert header.split() == ["SERVING", "KIND", "STATE", "PID", "LISTEN", "READY", "VERSION", "ALIAS", "URL"]
    by_name = {row.split()[0]: row.split() for row in rows}
    assert by_name["serving/wachttijden-primary"][4:8] == ["127.0.0.1:8100", "yes", "v3", "champion"]
    # no --host in its argv and no process to ask (pid 0): where it listens is not known
    assert by_name["serving/wachttijden-shadow"][4:8] == ["-", "yes", "v2", "challenger"]
    assert by_name["serving/wachttijden-graph"][4:8] == ["127.0.0.1:8101", "yes", "v2,v3", "-"]
    unknown = summary.format_serving(objects, None)
    assert unknown.splitlines()[1].split()[7] == "?" and "aliases unknown: the MLflow registry did not answer" in unknown


def test_listen_address_without_host_in_argv_is_what_the_process_binds() -> None:
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        port = server.getsockname()[1]
        record = {"port": port, "url": f"http://127.0.0.1:{port}", "argv": ["x"], "running": True,
                  "pid": os.getpid()}
        assert summary.listen_address(record) == f"127.0.0.1:{port}"
    finally:
        server.close()


def test_mlops_version_names_itself_and_the_main_parts(capsys: pytest.CaptureFixture[str]) -> None:
    from airflow_project.local.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith("mlops 0.") and "apache-airflow 3." in line and "mlflow 3." in line and "Python 3." in line


# ---------------------------------------------------------------------------- the Airflow side
class MirrorApi:
    base_url = "http://127.0.0.1:8080"

    def __init__(self, existing: dict[str, Any] | None = None, active: list[dict[str, Any]] | None = None) -> None:
        self.existing = existing
        self.active = active or []
        self.triggered: list[dict[str, Any]] = []
        self.cleared: list[str] = []

    def get_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        if self.existing is None and not self.triggered:
            raise airflow_api.AirflowApiError("not found", 404)
        return self.existing or {"dag_run_id": run_id, "state": "success"}

    def clear_failed(self, dag_id: str, run_id: str) -> None:
        self.cleared.append(run_id)

    def trigger(self, dag_id: str, logical_date: Any, note: str | None = None, *,
                conf: dict[str, Any] | None = None, run_id: str | None = None) -> httpx.Response:
        self.triggered.append({"dag_id": dag_id, "logical_date": logical_date, "conf": conf, "run_id": run_id})
        return httpx.Response(200, json={"dag_run_id": run_id, "state": "queued"})

    def runs(self, dag_id: str, **params: Any) -> list[dict[str, Any]]:
        return list(self.active)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return []


@pytest.fixture()
def report() -> summary.Reporter:
    return summary.Reporter(io.StringIO())


def test_the_second_model_is_triggered_once_per_day_with_its_conf(report: summary.Reporter) -> None:
    api = MirrorApi()
    run = job.ensure_second_model_run(api, dt.date(2026, 1, 2), report)  # type: ignore[arg-type]
    assert run["dag_run_id"] == "mlops_up__random_forest__2026-01-02"
    [triggered] = api.triggered
    assert triggered["dag_id"] == "train_model" and triggered["logical_date"] is None
    assert triggered["conf"]["estimator"] == "random_forest"


@pytest.mark.parametrize(("state", "cleared"), [("success", []), ("failed", ["mlops_up__random_forest__2026-01-02"])])
def test_the_days_second_model_run_is_reused_or_retried(report: summary.Reporter, state: str,
                                                        cleared: list[str]) -> None:
    api = MirrorApi(existing={"dag_run_id": "mlops_up__random_forest__2026-01-02", "state": state})
    job.ensure_second_model_run(api, dt.date(2026, 1, 2), report)  # type: ignore[arg-type]
    assert api.triggered == []
    assert api.cleared == cleared


def test_mirroring_is_skipped_when_serving_already_runs_the_versions(
        monkeypatch: pytest.MonkeyPatch, report: summary.Reporter, tmp_path: Path) -> None:
    monkeypatch.setattr(job, "serving_objects", lambda config: _objects())
    monkeypatch.setattr(job, "serving_namespace", lambda: "serving")
    api = MirrorApi()
    endpoints = job.ensure_mirroring(api, LocalConfig(root=tmp_path), 1, 2, report,  # type: ignore[arg-type]
                                           time.monotonic() + 10)
    assert api.triggered == []
    assert endpoints.deployed is False
    assert "not redeploying" in report.out.getvalue()  # type: ignore[attr-defined]


def test_mirroring_is_triggered_with_reserved_ports_and_checked(
        monkeypatch: pytest.MonkeyPatch, report: summary.Reporter, tmp_path: Path) -> None:
    monkeypatch.setattr(job.time, "sleep", lambda seconds: None)
    answers = [[], _objects(primary=3, shadow=1)]
    monkeypatch.setattr(job, "serving_objects", lambda config: answers.pop(0))
    monkeypatch.setattr(job, "serving_namespace", lambda: "serving")
    api = MirrorApi()
    config = LocalConfig(root=tmp_path, ports=Ports(serving=23100))
    endpoints = job.ensure_mirroring(api, config, 3, 1, report, time.monotonic() + 10)  # type: ignore[arg-type]
    [triggered] = api.triggered
    assert triggered["dag_id"] == "deploy_traffic_mirroring"
    assert triggered["conf"] == job.mirroring_conf(3, 1)
    assert triggered["run_id"].startswith("mlops_up__v3-v1__")
    assert endpoints.deployed is True
    ports = json.loads((tmp_path / "serving" / "ports.json").read_text())
    assert ports == {"serving/InferenceService/wachttijden-primary": 23100,
                     "serving/InferenceGraph/wachttijden-graph": 23101,
                     "serving/InferenceService/wachttijden-shadow": 23102,
                     "serving/VirtualService/wachttijden-primary-mirror": 23103}


def test_a_deployment_that_does_not_serve_is_a_clear_error(
        monkeypatch: pytest.MonkeyPatch, report: summary.Reporter, tmp_path: Path) -> None:
    monkeypatch.setattr(job, "serving_objects", lambda config: [])
    monkeypatch.setattr(job, "serving_namespace", lambda: "serving")
    monkeypatch.setattr(job, "reserve_serving_ports", lambda config, namespace: None)
    with pytest.raises(errors.PlatformError, match="does not run wachttijden-primary"):
        job.ensure_mirroring(MirrorApi(), LocalConfig(root=tmp_path), 1, 2, report,  # type: ignore[arg-type]
                                   time.monotonic() + 10)


# ---------------------------------------------------------------------------- status / down
def _serving_process(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    """A stand-in whose command line looks like a local model server (what `_running` checks)."""
    script = tmp_path / "airflow_project.serving.py"
    script.write_text("import time\ntime.sleep(60)\n")
    return subprocess.Popen([sys.executable, str(script), "--port", str(port)], start_new_session=True)


def test_status_lists_and_down_stops_serving_objects(tmp_path: Path) -> None:
    config = LocalConfig(root=tmp_path / "home", ports=Ports(serving=23200))
    process = _serving_process(tmp_path, 23200)
    try:
        for _ in range(100):  # until exec'ed
            if "airflow_project.serving" in " ".join(__import__("psutil").Process(process.pid).cmdline()):
                break
            time.sleep(0.02)
        state = config.root / "serving" / "serving"
        state.mkdir(parents=True)
        (state / "InferenceService-wachttijden-primary.json").write_text(json.dumps({
            "kind": "InferenceService", "name": "wachttijden-primary", "namespace": "serving",
            "pid": process.pid, "port": 23200, "url": "http://127.0.0.1:23200", "argv": [],
            "ready_path": "/v2/models/wachttijden/ready", "spec_hash": "x"}))
        out = io.StringIO()
        assert commands.status(config, out=out) == 1  # services down, model server not ready
        serving = out.getvalue().split("\n\n")[1].splitlines()
        assert serving[0].split() == ["SERVING", "KIND", "STATE", "PID", "LISTEN", "READY", "VERSION", "ALIAS", "URL"]
        assert serving[1].split() == ["serving/wachttijden-primary", "InferenceService", "running",
                                      str(process.pid), "-", "no", "-", "-", "http://127.0.0.1:23200"]
        assert "have no pid file" not in out.getvalue()

        out = io.StringIO()
        assert commands.down(config, purge=True, out=out, err=io.StringIO()) == 0
        assert "stopped serving serving/InferenceService/wachttijden-primary" in out.getvalue()
        assert process.wait(timeout=20) is not None
        assert not (config.root / "serving").exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
