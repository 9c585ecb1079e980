"""The local controller starts, records, stops and restores the capture process like its
model servers, and `mlops status` shows its counts. Predictors are a stand-in serving HTTP
200 (as in test_targets.py); the capture process is the real one (its data lake is
unreachable here: nothing is captured, nothing fails)."""

from __future__ import annotations

import json
import re
import stat
import sys
import textwrap

import pytest

from airflow_project.host.net import free_port_range
from airflow_project.host.processes import alive
from airflow_project.serving import manifests
from airflow_project.serving.targets.local import (
    CAPTURE,
    CAPTURE_NAME,
    LocalTarget,
    local_serving_objects,
    restore_local_serving,
    stop_local_serving,
)

NS = "serving"
FAKE = textwrap.dedent(
    f"""\
    #!{sys.executable}
    import http.server, os, sys
    if sys.argv[1:3] == ["-m", "airflow_project.monitoring.capture_process"]:
        os.execv({sys.executable!r}, [{sys.executable!r}, *sys.argv[1:]])
    port = int(sys.argv[sys.argv.index("--port") + 1])
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b"{{}}")
        def log_message(self, *a): pass
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
    """
)


@pytest.fixture()
def target(tmp_path, monkeypatch):
    from airflow_project.monitoring.capture_process import CONNECTION_ENV

    monkeypatch.setenv(CONNECTION_ENV, "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
                                       "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;")
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    t = LocalTarget(NS, home=tmp_path / "home", base_port=free_port_range(10), python=str(fake),
                    poll_interval=0.05, capture=True)
    yield t
    pids = [r["pid"] for r in t.objects()]
    t.stop_all()
    assert not [pid for pid in pids if alive(pid)], "processes left running"


def isvc(name: str, version: int):
    return manifests.inference_service(name, f"models:/wachttijden/{version}", manifests.ServingConfig())


def test_the_first_predictor_starts_one_capture_process_recorded_like_the_others(target):
    target.apply(isvc("wachttijden-primary", 3))
    target.apply(isvc("wachttijden-shadow", 2))
    record = target.state(CAPTURE, CAPTURE_NAME)
    assert record["argv"][1:] == ["-m", "airflow_project.monitoring.capture_process", "--home",
                                  str(target.home), "--namespace", NS]
    assert alive(record["pid"]) and record["port"] is None
    assert [r["kind"] for r in target.objects()].count(CAPTURE) == 1
    assert target.readiness(record).ready

    target.apply(isvc("wachttijden-primary", 4))  # a restarted predictor keeps the same capture process
    assert target.state(CAPTURE, CAPTURE_NAME)["pid"] == record["pid"]


def test_down_stops_capture_last_and_up_restores_it(target, tmp_path):
    target.apply(isvc("wachttijden-primary", 3))
    before = target.state(CAPTURE, CAPTURE_NAME)
    stopped = stop_local_serving(target.home)
    assert stopped[-1] == f"{NS}/{CAPTURE}/{CAPTURE_NAME}"  # after the predictors: it reads their last lines
    assert not alive(before["pid"])
    restored = restore_local_serving(target.home, timeout=20, python=target.python)
    assert sorted(key for key, _, error in restored if error is None) == sorted(stopped)
    after = target.state(CAPTURE, CAPTURE_NAME)
    assert after["pid"] != before["pid"] and alive(after["pid"])


def test_status_shows_the_capture_counts(target):
    import time

    from airflow_project.local.summary import format_serving
    from airflow_project.serving.targets.local import capture_state_dir as state_dir

    target.apply(isvc("wachttijden-primary", 3))
    status = state_dir(target.home, NS) / "status.json"
    deadline = time.monotonic() + 20
    while not status.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    objects = local_serving_objects(target.home, probe=True)
    (cap,) = [o for o in objects if o["kind"] == CAPTURE]
    assert cap["ready"] and cap["capture"]["dropped"] == 0
    text = format_serving(objects)
    # SERVING KIND STATE PID LISTEN READY VERSION ALIAS URL: the capture listens nowhere and serves no version
    assert re.search(rf"^{NS}/{CAPTURE_NAME} +{CAPTURE} +running +{cap['pid']} +- +yes +- +- +-$", text, re.MULTILINE), text
    assert f"{NS}/{CAPTURE_NAME}: 0 predictions written to serving-logs, 0 buffered, 0 dropped" in text
    assert json.loads(status.read_text())["container"] == "serving-logs"


def test_capture_is_off_unless_asked(tmp_path):
    t = LocalTarget(NS, home=tmp_path, base_port=None)
    assert t.capture is False
