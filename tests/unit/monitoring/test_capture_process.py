"""The local capture process's logic on real files with a fake upload: it follows the
predictors' logs named in the controller's records, keeps a bounded buffer (drop and count
when full), writes KServe-layout batches, keeps failed batches, and resumes from its offsets."""

from __future__ import annotations

import json

import pytest

from airflow_project.monitoring import capture
from airflow_project.monitoring.capture_process import Capture, Tail
from airflow_project.serving.targets.local import read_capture_status as read_status
from airflow_project.wachttijden.categories import SAMPLE_ROW

NS = "serving"


def prediction(i: int, version: str = "3") -> str:
    return json.dumps({"event": "prediction", "ts": 1_767_000_000.0 + i, "request_id": f"r{i}",
                       "model_name": "wachttijden", "model_version": version, "protocol": "v1",
                       "inputs": [dict(SAMPLE_ROW)], "outputs": [10.0 + i], "latency_ms": 0.1})


@pytest.fixture()
def home(tmp_path):
    folder = tmp_path / "serving" / NS
    folder.mkdir(parents=True)
    for name in ("wachttijden-primary", "wachttijden-shadow"):
        log = tmp_path / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        log.write_text("--- starting\n")
        (folder / f"InferenceService-{name}.json").write_text(json.dumps({"name": name, "log": str(log)}))
    return tmp_path


def append(home, service: str, lines: list[str]) -> None:
    with open(home / "logs" / f"{service}.log", "a") as fh:
        fh.write("".join(line + "\n" for line in lines))


class Uploads:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.fail = False

    def __call__(self, name: str, data: bytes) -> None:
        if self.fail:
            raise ConnectionError("data lake down")
        self.blobs[name] = data

    def traffic(self):
        reader = capture.CaptureReader()
        for name, data in self.blobs.items():
            reader.feed(data, name)
        return reader.traffic()


def test_lines_of_every_predictor_become_kserve_batches(home):
    uploads = Uploads()
    cap = Capture(home, NS, uploads, batch=4)
    append(home, "wachttijden-primary", [prediction(i) for i in range(3)] + ["INFO uvicorn access"])
    append(home, "wachttijden-shadow", [prediction(i, "4") for i in range(3)])
    assert cap.poll() == 6
    assert cap.flush(everything=True) == 6
    assert all(name.startswith(("serving/wachttijden-primary/predictor/capture/",
                                "serving/wachttijden-shadow/predictor/capture/")) for name in uploads.blobs)
    traffic = uploads.traffic()
    assert traffic.requests == 6 and traffic.failed == 0
    assert sorted(set(traffic.frame["version"])) == ["3", "4"]
    shared = traffic.frame.groupby("request_id", observed=True)["version"].nunique()
    assert (shared == 2).all()  # primary and shadow under one request id
    assert cap.counts.written == 6 and cap.counts.batches == 2


def test_a_full_buffer_drops_and_counts(home):
    cap = Capture(home, NS, Uploads(), max_buffer=5)
    append(home, "wachttijden-primary", [prediction(i) for i in range(8)])
    assert cap.poll() == 5
    assert (cap.counts.captured, cap.counts.dropped) == (8, 3)


def test_a_failed_upload_keeps_its_batch_and_counts_the_error(home):
    uploads = Uploads()
    uploads.fail = True
    cap = Capture(home, NS, uploads, batch=10)
    append(home, "wachttijden-primary", [prediction(i) for i in range(4)])
    cap.poll()
    with pytest.raises(ConnectionError):
        cap.flush()
    assert cap.counts.upload_errors == 1 and "data lake down" in cap.counts.last_error
    uploads.fail = False
    assert cap.flush(everything=True) == 4
    assert uploads.traffic().requests == 4 and cap.counts.dropped == 0


def test_offsets_and_status_survive_a_restart(home):
    uploads = Uploads()
    cap = Capture(home, NS, uploads)
    append(home, "wachttijden-primary", [prediction(0), prediction(1)])
    cap.poll()
    cap.flush(everything=True)
    cap.save()
    assert read_status(home, NS)["written"] == 2
    append(home, "wachttijden-primary", [prediction(2)])
    again = Capture(home, NS, uploads)
    assert again.poll() == 1  # only the new line


def test_due_by_size_or_age():
    now = [0.0]
    cap = Capture(".", NS, Uploads(), batch=3, flush_seconds=2.0, clock=lambda: now[0])
    assert not cap.due()
    cap._buffer.append(("s", 0.0, ({}, {})))
    assert not cap.due()
    now[0] = 2.5
    assert cap.due()


def test_tail_keeps_partial_lines_and_restarts_after_truncation(tmp_path):
    path = tmp_path / "x.log"
    path.write_bytes(b"one\ntw")
    tail = Tail(path)
    assert tail.lines() == [b"one"]
    path.write_bytes(b"one\ntwo\n")
    assert tail.lines() == [b"two"]
    path.write_bytes(b"new\n")
    assert tail.lines() == [b"new"]
