"""Pure logic of the local platform: pid files, process matching, messages, status table."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from airflow_project import settings
from airflow_project.host import net
from airflow_project.local import commands, errors, processes, stack, summary
from airflow_project.local.airflow_api import format_log_content, iso
from airflow_project.local.config import LocalConfig, Ports
from airflow_project.local.processes import PidRecord
from airflow_project.local.summary import StatusRow


@pytest.fixture()
def config(tmp_path: Path) -> LocalConfig:
    return LocalConfig(root=tmp_path / "home", ports=Ports(azurite=1, mlflow=2, airflow=3))


def _started(process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """Wait until the kernel shows the new command line (empty for a moment after exec)."""
    deadline = time.monotonic() + 5
    while not psutil.Process(process.pid).cmdline() and time.monotonic() < deadline:
        time.sleep(0.01)
    return process


def _sleeper() -> subprocess.Popen[bytes]:
    return _started(subprocess.Popen(["sleep", "60"], start_new_session=True))


def _record_for(process: subprocess.Popen[bytes], name: str = "sleeper", argv: list[str] | None = None) -> PidRecord:
    return PidRecord(
        name=name, pid=process.pid, port=None, argv=argv or ["sleep", "60"],
        create_time=psutil.Process(process.pid).create_time(),
    )


# ---------------------------------------------------------------------------- pid files
def test_pid_record_round_trips(tmp_path: Path) -> None:
    record = PidRecord(name="mlflow", pid=123, port=5000, argv=["mlflow", "server"], log="x.log",
                       create_time=1.5, started_at="2026-01-01T00:00:00Z")
    path = processes.write_pid_record(tmp_path, record)
    assert path == tmp_path / "mlflow.json"
    assert json.loads(path.read_text())["argv"] == ["mlflow", "server"]
    assert processes.read_pid_records(tmp_path) == {"mlflow": record}
    processes.remove_pid_record(tmp_path, "mlflow")
    assert processes.read_pid_records(tmp_path) == {}
    processes.remove_pid_record(tmp_path, "mlflow")  # missing is fine


def test_read_pid_records_ignores_broken_and_misnamed_files(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "partial.json").write_text(json.dumps({"name": "partial"}))
    processes.write_pid_record(tmp_path, PidRecord(name="good", pid=1, port=None, argv=["x"]))
    (tmp_path / "other.json").write_text((tmp_path / "good.json").read_text())  # name mismatch
    assert list(processes.read_pid_records(tmp_path)) == ["good"]
    assert processes.read_pid_records(tmp_path / "missing") == {}


@pytest.mark.parametrize(
    ("argv", "cmdline", "expected"),
    [
        (["/v/bin/airflow", "scheduler", "--skip-serve-logs"],
         ["/v/bin/python", "/v/bin/airflow", "scheduler", "--skip-serve-logs"], True),
        # the api-server retitles itself with setproctitle
        (["/v/bin/airflow", "api-server", "--port", "8080"],
         ["airflow api_server -- host:127.0.0.1 port:8080"], True),
        (["/r/node_modules/.bin/azurite-blob", "--blobPort", "10000"],
         ["node", "/r/node_modules/.bin/azurite-blob", "--blobPort", "10000"], True),
        (["/v/bin/mlflow", "server"], ["/v/bin/python", "/v/bin/mlflow", "server", "--port", "5000"], True),
        # a different Airflow component with the pid of ours
        (["/v/bin/airflow", "scheduler"], ["/v/bin/python", "/v/bin/airflow", "triggerer"], False),
        # a foreign process that reused the pid
        (["/v/bin/mlflow", "server"], ["/usr/bin/vim", "notes.txt"], False),
        ([], ["x"], False),
        (["x"], [], False),
    ],
)
def test_cmdline_matches(argv: list[str], cmdline: list[str], expected: bool) -> None:
    assert processes.cmdline_matches(argv, cmdline) is expected


def test_record_alive_needs_same_process_and_command_line() -> None:
    process = _sleeper()
    try:
        record = _record_for(process)
        assert processes.record_alive(record)
        # pid reused by another program: command line differs
        assert not processes.record_alive(PidRecord("x", process.pid, None, ["/v/bin/mlflow", "server"],
                                                   create_time=record.create_time))
        # pid reused later: start time differs
        assert not processes.record_alive(PidRecord("x", process.pid, None, ["sleep", "60"],
                                                   create_time=record.create_time - 3600))
    finally:
        process.kill()
        process.wait()
    assert not processes.record_alive(record)


def test_stop_records_stops_own_process_group_and_leaves_foreign_processes(tmp_path: Path) -> None:
    ours = _started(subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60"], start_new_session=True))
    foreign = _sleeper()
    try:
        time.sleep(0.3)
        children = psutil.Process(ours.pid).children(recursive=True)
        assert children
        own = _record_for(ours, "ours", ["sh", "-c", "sleep 60 & sleep 60"])
        impostor = _record_for(foreign, "impostor", ["/v/bin/airflow", "scheduler"])
        stopped = processes.stop_records([own, impostor], timeout=5)
        assert [r.name for r in stopped] == ["ours"]
        ours.wait(timeout=5)
        assert all(not c.is_running() or c.status() == psutil.STATUS_ZOMBIE for c in children)
        assert foreign.poll() is None
    finally:
        for p in (ours, foreign):
            p.kill()
            p.wait()


def test_down_removes_stale_pid_files_without_killing_their_pid(config: LocalConfig) -> None:
    foreign = _sleeper()
    try:
        processes.write_pid_record(config.run, _record_for(foreign, "mlflow", ["/v/bin/mlflow", "server"]))
        out = io.StringIO()
        assert commands.down(config, out=out) == 0
        assert "mlflow was not running (removed stale pid file)" in out.getvalue()
        assert foreign.poll() is None
        assert processes.read_pid_records(config.run) == {}
    finally:
        foreign.kill()
        foreign.wait()


def test_down_with_nothing_running(config: LocalConfig) -> None:
    out = io.StringIO()
    assert commands.down(config, out=out) == 0
    assert "nothing to stop" in out.getvalue()


def test_down_purge_deletes_only_platform_folders(config: LocalConfig) -> None:
    for name in ("logs", "run", "azurite", "mlflow", "airflow"):
        (config.root / name).mkdir(parents=True)
        (config.root / name / "f").write_text("x")
    (config.root / "mine.txt").write_text("keep")
    out = io.StringIO()
    assert commands.down(config, purge=True, out=out) == 0
    assert sorted(p.name for p in config.root.iterdir()) == ["mine.txt"]


def test_purge_refuses_the_repository_and_home(config: LocalConfig) -> None:
    for root in (settings.REPO_ROOT, Path.home(), Path("/")):
        with pytest.raises(errors.PlatformError, match="refusing to purge"):
            commands.purge_data(LocalConfig(root=root, ports=config.ports))


# ---------------------------------------------------------------------------- messages
def test_port_conflict_message_names_port_owner_and_variable() -> None:
    message = stack.port_conflict_message("airflow-api-server", 8080, "pid 42 (python -m http.server)", 8123)
    assert "port 8080" in message
    assert "airflow-api-server" in message
    assert "pid 42 (python -m http.server)" in message
    assert "MLOPS_AIRFLOW_PORT=8123 mlops up" in message
    assert "another process" in stack.port_conflict_message("mlflow", 5000)


def test_up_with_a_taken_port_fails_clearly_and_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(stack, "check_prerequisites", lambda: None)
    monkeypatch.setattr(stack, "azurite_spec", lambda data, port: stack.ServiceSpec("azurite", ["azurite-blob"], port))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = LocalConfig(root=tmp_path, ports=Ports(azurite=net.free_port(),
                                                        mlflow=net.free_port(), airflow=port))
        out, err = io.StringIO(), io.StringIO()
        assert commands.up(config, out=out, err=err) == 2
    message = err.getvalue()
    assert f"port {port} on 127.0.0.1, needed by airflow-api-server, is already in use" in message
    assert "MLOPS_AIRFLOW_PORT=" in message
    assert message.count("\n") == 1  # one clear line, no traceback
    assert processes.read_pid_records(config.run) == {}


def test_up_without_node_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_which = stack.shutil.which
    monkeypatch.setattr(stack.shutil, "which", lambda name: None if name == "node" else real_which(name))
    err = io.StringIO()
    assert commands.up(LocalConfig(root=tmp_path), err=err, out=io.StringIO()) == 2
    assert "Node.js is not installed" in err.getvalue()


def test_missing_venv_tool_mentions_uv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(stack.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(stack.shutil, "which", lambda name: None)
    with pytest.raises(errors.PrerequisiteError, match="uv is not installed"):
        stack.venv_tool("airflow")


def test_child_env_drops_inherited_airflow_settings() -> None:
    base = {"PATH": "/bin", "AIRFLOW_HOME": "/elsewhere", "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW_CONN_X": "y", "MLOPS_HOME": "/m"}
    env = processes.child_env({"AIRFLOW_HOME": "/ours", "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}, base)
    assert env == {"PATH": "/bin", "MLOPS_HOME": "/m", "AIRFLOW_HOME": "/ours",
                   "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    assert processes.child_env({"X": "1"}, base)["AIRFLOW_CONN_X"] == "y"  # non-Airflow services untouched


# ---------------------------------------------------------------------------- status
def test_format_status_table() -> None:
    text = summary.format_status([
        StatusRow("azurite", "running", 11, 10000, "http://127.0.0.1:10000/devstoreaccount1", True),
        StatusRow("airflow-scheduler", "running", 12, None, None, False),
        StatusRow("mlflow", "stopped", None, 5000, "http://127.0.0.1:5000", False),
    ])
    lines = text.splitlines()
    assert lines[0].split() == ["SERVICE", "STATE", "PID", "PORT", "READY", "URL"]
    assert lines[1].split() == ["azurite", "running", "11", "10000", "yes", "http://127.0.0.1:10000/devstoreaccount1"]
    assert lines[2].split() == ["airflow-scheduler", "running", "12", "-", "no", "-"]
    assert lines[3].split() == ["mlflow", "stopped", "-", "5000", "-", "http://127.0.0.1:5000"]
    assert all(line[len("airflow-scheduler  "):].startswith(("STATE", "running", "stopped")) for line in lines)


def test_status_when_nothing_runs(config: LocalConfig) -> None:
    out = io.StringIO()
    assert commands.status(config, out=out) == 1
    text = out.getvalue()
    for name in stack.SERVICE_NAMES:
        assert f"{name} " in text
    table = text.split("\n\n")[0].splitlines()[1:]
    assert len(table) == len(stack.SERVICE_NAMES)
    assert all(line.split()[1] == "stopped" for line in table)
    assert "not running" in text


def test_status_reports_a_live_service(config: LocalConfig) -> None:
    process = _started(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                        start_new_session=True))
    try:
        record = PidRecord("azurite", process.pid, config.ports.azurite, [sys.executable, "-c"],
                           create_time=psutil.Process(process.pid).create_time())
        processes.write_pid_record(config.run, record)
        rows = {row.name: row for row in summary.collect_status(config)}
        assert rows["azurite"].state == "running"
        assert rows["azurite"].pid == process.pid
        assert rows["azurite"].ready is False  # nothing listens on its port
        assert rows["mlflow"].state == "stopped"
    finally:
        process.kill()
        process.wait()


# ---------------------------------------------------------------------------- small helpers
def test_iso_and_log_formatting() -> None:
    import datetime as dt

    assert iso(dt.datetime(2026, 1, 2, tzinfo=dt.UTC)) == "2026-01-02T00:00:00Z"
    with pytest.raises(ValueError):
        iso(dt.datetime(2026, 1, 2))
    content = [
        {"event": "::group::Log message source details", "level": None},
        {"event": "Task failed", "level": "error",
         "error_detail": [{"exc_type": "ValueError", "exc_value": "bad data"}]},
        "plain line",
    ]
    text = format_log_content(content)
    assert "ERROR Task failed" in text
    assert "ValueError: bad data" in text
    assert "plain line" in text
    assert format_log_content(None) == ""


def test_duration_and_metrics_formatting() -> None:
    assert summary.duration(5.4) == "5s"
    assert summary.duration(75) == "1m15s"
    assert summary.format_metrics({"mae": 1.23456, "r2": 0.9, "other": 3}) == "r2=0.900  mae=1.235"
    assert summary.format_metrics({}) == "(no metrics)"


def test_pid_file_of_this_process_is_never_matched_by_a_different_argv() -> None:
    me = psutil.Process(os.getpid())
    record = PidRecord("x", me.pid, None, ["/nowhere/azurite-blob"], create_time=me.create_time())
    assert not processes.record_alive(record)


def test_a_second_concurrent_up_is_refused(monkeypatch: pytest.MonkeyPatch, config: LocalConfig) -> None:
    monkeypatch.setattr(stack, "check_prerequisites", lambda: None)
    with commands.single_up(config):
        err = io.StringIO()
        assert commands.up(config, out=io.StringIO(), err=err) == 1
    assert "another `mlops up` is running" in err.getvalue()
    with commands.single_up(config):  # released again
        pass


def test_processes_of_the_home_without_pid_file_are_reported_not_killed(config: LocalConfig) -> None:
    (config.root / "azurite").mkdir(parents=True)
    marker = str(config.root / "azurite")
    code = "import time; time.sleep(60)"
    stray = _started(subprocess.Popen([sys.executable, "-c", code, marker], start_new_session=True))
    tracked = _started(subprocess.Popen([sys.executable, "-c", code, marker], start_new_session=True))
    try:
        processes.write_pid_record(config.run, _record_for(tracked, "azurite", [sys.executable, "-c"]))
        strays = {p.pid: processes.describe(p) for p in processes.stray_processes(config)}
        assert stray.pid in strays, strays
        assert tracked.pid not in strays, strays
        out = io.StringIO()
        commands.status(config, out=out)
        assert f"pid {stray.pid} (" in out.getvalue()
        err = io.StringIO()
        assert commands.down(config, out=io.StringIO(), err=err) == 0
        assert "have no pid file" in err.getvalue()
        assert stray.poll() is None
        assert tracked.wait(timeout=10) is not None
    finally:
        for p in (stray, tracked):
            p.kill()
            p.wait()


def test_an_unreadable_command_line_falls_back_to_the_start_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Right after exec the kernel shows an empty command line for a moment."""
    process = _sleeper()
    try:
        record = _record_for(process)
        monkeypatch.setattr(processes.time, "sleep", lambda seconds: None)
        monkeypatch.setattr(psutil.Process, "cmdline", lambda self: [])
        assert processes.record_alive(record)
        record.create_time = None
        assert not processes.record_alive(record)
    finally:
        process.kill()
        process.wait()


def test_mlflow_telemetry_is_off_in_every_process_the_platform_starts(config: LocalConfig) -> None:
    assert config.airflow_env()["MLFLOW_DISABLE_TELEMETRY"] == "true"
    spec = stack.mlflow_spec(config.mlflow_data, 5000, 10000)
    assert spec.env["MLFLOW_DISABLE_TELEMETRY"] == "true"


@pytest.mark.parametrize("user_setting,expected", [(None, "true"), ("false", "false")])
def test_cli_turns_telemetry_off_unless_the_user_chose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_setting: str | None, expected: str
) -> None:
    from airflow_project.local import cli

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", user_setting or "unset")  # restored after the test
    if user_setting is None:
        monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY")
    out = tmp_path / "raw.csv"
    assert cli.main(["data", "generate", "--rows", "10", "--seed", "1", "--output", str(out)]) == 0
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == expected
