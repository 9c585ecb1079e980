"""A service leader killed with SIGKILL leaves its children in its process group, holding
its port: `status` calls the group orphaned (with the pids), `down` stops exactly that
group, and nothing else is touched."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from airflow_project.host.net import free_port, port_is_free
from airflow_project.host.processes import orphaned_members, stop_orphaned_group
from airflow_project.local import commands, processes, summary
from airflow_project.local.config import LocalConfig, Ports
from airflow_project.local.processes import PidRecord

LISTEN = ("import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); "
          "s.listen(); time.sleep(120)")


def _wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture()
def crashed_service(tmp_path: Path) -> Iterator[tuple[PidRecord, int, psutil.Process]]:
    """A leader in its own session whose child listens on a port; the leader is then SIGKILLed
    (as the OOM killer would), the child stays in the group."""
    port = free_port()
    argv = ["sh", "-c", f"{sys.executable} -c \"{LISTEN}\" {port} & wait"]
    leader = subprocess.Popen(argv, start_new_session=True)
    _wait(lambda: not port_is_free(port))
    [child] = psutil.Process(leader.pid).children()
    record = PidRecord("mlflow", leader.pid, port, argv, create_time=psutil.Process(leader.pid).create_time(),
                       pgid=leader.pid)
    os.kill(leader.pid, signal.SIGKILL)
    leader.wait(timeout=5)
    try:
        yield record, port, child
    finally:
        if child.is_running():
            child.kill()


def test_the_leaderless_group_is_found_by_its_recorded_id(crashed_service) -> None:
    record, port, child = crashed_service
    assert not processes.record_alive(record)
    assert [p.pid for p in processes.orphans(record)] == [child.pid]
    assert orphaned_members(record.group, record.create_time) == processes.orphans(record)
    # started before the recorded leader: cannot be a member of its group
    assert orphaned_members(record.group, child.create_time() + 60) == []
    assert stop_orphaned_group(record.group, processes.orphans(record), timeout=5) == [child.pid]
    assert port_is_free(port) and processes.orphans(record) == []


def test_status_reports_the_orphans_and_down_stops_them(crashed_service, tmp_path: Path) -> None:
    record, port, child = crashed_service
    config = LocalConfig(root=tmp_path / "home", ports=Ports(azurite=free_port(), mlflow=port, airflow=free_port()))
    processes.write_pid_record(config.run, record)
    rows = {row.name: row for row in summary.collect_status(config)}
    assert rows["mlflow"].state == "orphaned"
    assert rows["mlflow"].orphans == (child.pid,) and rows["mlflow"].holds_port
    out = io.StringIO()
    assert commands.status(config, out=out) == 1
    text = out.getvalue()
    assert f"mlflow is orphaned: its leader is gone, its process group still runs pid {child.pid} and holds " \
           f"port {port}" in text
    assert "have no pid file" not in text  # reported once, as orphaned
    memory = [line.split() for line in text.split("PROCESS", 1)[1].splitlines() if line.startswith("mlflow ")]
    assert [parts[1] for parts in memory] == [str(child.pid)]  # its RSS is counted, under its service
    out, err = io.StringIO(), io.StringIO()
    assert commands.down(config, out=out, err=err) == 0, err.getvalue()
    assert (f"stopped what was left of mlflow: its leader (pid {record.pid}) was gone, its process group "
            f"still ran pid {child.pid}") in out.getvalue()
    _wait(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE)
    assert port_is_free(port)
    assert processes.read_pid_records(config.run) == {}


def test_a_group_whose_leader_runs_is_not_orphaned(tmp_path: Path) -> None:
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
    try:
        _wait(lambda: bool(psutil.Process(leader.pid).children()))
        record = PidRecord("x", leader.pid, None, ["sh", "-c"], create_time=psutil.Process(leader.pid).create_time())
        assert processes.record_alive(record) and processes.orphans(record) == []
        assert orphaned_members(leader.pid, record.create_time) == []
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait(timeout=5)


def test_memory_lists_every_process_of_the_recorded_groups(tmp_path: Path) -> None:
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
    try:
        _wait(lambda: bool(psutil.Process(leader.pid).children()))
        [child] = psutil.Process(leader.pid).children()
        rows = summary.collect_memory([("svc", leader.pid, psutil.Process(leader.pid).create_time())])
        assert sorted(r.pid for r in rows) == sorted([leader.pid, child.pid])
        assert all(r.owner == "svc" and r.rss > 0 for r in rows)
        text = summary.format_memory(rows)
        assert text.splitlines()[0].split() == ["PROCESS", "PID", "RSS", "COMMAND"]
        assert text.splitlines()[-1].startswith("Total RSS: ") and text.endswith(" in 2 processes")
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait(timeout=5)
