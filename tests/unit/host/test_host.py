"""The leaf helpers every layer uses: atomic writes, readiness probes, stopping process groups."""

from __future__ import annotations

import http.server
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from airflow_project.host.files import write_atomic
from airflow_project.host.net import free_port, http_ok, tcp_ok
from airflow_project.host.processes import alive, stop_process_groups


def test_write_atomic_replaces_whole_files_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.json"
    write_atomic(target, "first")
    write_atomic(target, b"second")
    assert target.read_text() == "second"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # private unless asked otherwise

    class Unwritable:
        pass

    with pytest.raises(TypeError):
        write_atomic(target, Unwritable())  # type: ignore[arg-type]
    assert target.read_text() == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]  # no temp file left
    write_atomic(tmp_path / "secret", "s", mode=0o640)
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o640


def test_readiness_probes_go_straight_to_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/ready" else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        # a proxy from the environment must not answer for 127.0.0.1
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        assert http_ok(f"http://127.0.0.1:{port}/ready")
        assert not http_ok(f"http://127.0.0.1:{port}/other")  # 503
        assert tcp_ok(port)
    finally:
        server.shutdown()
        server.server_close()
    assert not tcp_ok(port)
    assert not http_ok(f"http://127.0.0.1:{port}/ready")


def test_stopping_a_group_stops_its_descendants_and_reaps_our_children() -> None:
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60"], start_new_session=True)
    deadline = time.monotonic() + 5
    while not psutil.Process(leader.pid).children() and time.monotonic() < deadline:
        time.sleep(0.02)
    children = psutil.Process(leader.pid).children(recursive=True)
    assert children and alive(leader.pid, ("sleep 60",))
    assert stop_process_groups([leader.pid, 999_999_999], timeout=5) == [leader.pid]
    assert not alive(leader.pid)
    assert all(not c.is_running() or c.status() == psutil.STATUS_ZOMBIE for c in children)
    assert leader.wait(timeout=5) is not None
    assert os.getpgid(os.getpid()) != leader.pid  # we were never in its group
