"""The local capture process: the predictors' prediction-log lines, written to the data lake
in the layout KServe's blob logger writes (`monitoring.capture`).

Run: `python -m airflow_project.monitoring.capture_process --home H --namespace NS`. The
local serving controller starts, stops and records it beside the model servers
(`serving/targets/local.py`, kind `Capture`). Nothing of it is on a prediction's path: the
predictors write their lines to their log files anyway, and this process reads those files
on its own (following each InferenceService's log named in the controller's records, from
the offset it reached, kept in `capture/offsets.json` across restarts).

Overload never reaches the predictors: lines become records in a bounded buffer (at most
`--max-buffer` predictions); when it is full (the data lake is slow or down) new ones are
dropped and counted; the process runs at a lower CPU priority than the predictors
(NICENESS). An uploader thread writes a batch (`--batch` predictions, or what
`--flush-seconds` collected) as one blob per InferenceService. SIGTERM: read the files to
their end, write what is buffered, then exit. The counts (read, written, dropped, upload
errors) are in `capture/status.json`, which `mlops status` shows, and in the blob
`<namespace>/_capture-status.json`, which `monitor_serving` logs as metrics.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_project.monitoring import capture
from airflow_project.serving.targets.local import capture_state_dir as state_dir

log = logging.getLogger(__name__)

STATUS_BLOB = "_capture-status.json"
"""Under `<namespace>/` of the capture container (the reader skips names starting with `_`)."""
CONNECTION_ENV = "MLOPS_CAPTURE_CONNECTION_STRING"
PREDICTION_MARKERS = (b'"event":"prediction"', b'"event": "prediction"')
READ_CHUNK = 4 * 1024 * 1024
NICENESS = 10
"""The capture process runs below the predictors' CPU priority: when the CPU is short the
predictors go first, the buffer takes up the difference, and what does not fit is dropped
and counted (`make bench-monitor` measured the cost with and without this)."""


def connection_string() -> str:
    """The data lake: MLOPS_CAPTURE_CONNECTION_STRING, else the Airflow connection the DAGs
    use (AIRFLOW_CONN_WASB_DATALAKE, inherited from the task that deployed), else the local
    Azurite."""
    explicit = os.environ.get(CONNECTION_ENV)
    if explicit:
        return explicit
    from airflow_project.datalake import CONNECTION_ID

    airflow = os.environ.get(f"AIRFLOW_CONN_{CONNECTION_ID.upper()}")
    if airflow:
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            value = json.loads(airflow)["extra"]["connection_string"]
            if value:
                return str(value)
    from airflow_project.local.config import azurite_connection_string
    from airflow_project.settings import Ports

    return azurite_connection_string(Ports.from_env().azurite)


class Tail:
    """New complete lines of a growing file, from an offset (a file that shrank starts over)."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = Path(path)
        self.offset = offset
        self._partial = b""

    def lines(self) -> list[bytes]:
        try:
            size = self.path.stat().st_size
        except OSError:
            return []
        if size < self.offset:  # truncated or replaced
            self.offset, self._partial = 0, b""
        if size == self.offset:
            return []
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read(min(size - self.offset, READ_CHUNK))
        self.offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        return lines


@dataclass
class Counts:
    lines: int = 0
    captured: int = 0
    written: int = 0
    dropped: int = 0
    batches: int = 0
    upload_errors: int = 0
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class Capture:
    """Reads prediction lines into a bounded buffer (`poll`) and writes batches (`flush`)
    through `upload(blob_name, data)`."""

    home: Path
    namespace: str
    upload: Callable[[str, bytes], None]
    batch: int = 1000
    flush_seconds: float = 2.0
    max_buffer: int = 50_000
    clock: Callable[[], float] = time.monotonic
    counts: Counts = field(default_factory=Counts)

    def __post_init__(self) -> None:
        self.home = Path(self.home)
        self._tails: dict[str, Tail] = {}
        self._buffer: collections.deque[tuple[str, float, tuple[dict, dict]]] = collections.deque()
        self._lock = threading.Lock()
        self._offsets = self._load_offsets()

    # ---- files
    @property
    def folder(self) -> Path:
        return state_dir(self.home, self.namespace)

    def _load_offsets(self) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in json.loads((self.folder / "offsets.json").read_text()).items()}
        except (OSError, ValueError):
            return {}

    def save(self) -> None:
        from airflow_project.host.files import write_atomic

        with self._lock:
            offsets = {str(t.path): t.offset for t in self._tails.values()}
            status = {**self.counts.to_dict(), "buffered": len(self._buffer), "container": capture.CAPTURE_CONTAINER,
                      "namespace": self.namespace, "updated_at": time.time()}
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.folder / "offsets.json", json.dumps(offsets, indent=1, sort_keys=True))
        write_atomic(self.folder / "status.json", json.dumps(status, indent=1, sort_keys=True))

    def services(self) -> dict[str, Path]:
        """InferenceService name -> its log file, from the controller's records."""
        out = {}
        for path in sorted((self.home / "serving" / self.namespace).glob("InferenceService-*.json")):
            with contextlib.suppress(OSError, ValueError, KeyError):
                record = json.loads(path.read_text())
                out[str(record["name"])] = Path(record["log"])
        return out

    # ---- reading
    def poll(self) -> int:
        """Read every followed log's new lines; returns the predictions buffered."""
        from airflow_project.serving.request_ids import new_request_id

        for service, path in self.services().items():
            tail = self._tails.get(service)
            if tail is None or tail.path != path:
                tail = self._tails[service] = Tail(path, self._offsets.get(str(path), 0))
        added = 0
        for service, tail in self._tails.items():
            while True:
                lines = tail.lines()
                if not lines:
                    break
                for line in lines:
                    if not any(m in line for m in PREDICTION_MARKERS):
                        continue
                    self.counts.lines += 1
                    try:
                        record = capture.loads(line)
                        pair = capture.records_from_prediction(record, namespace=self.namespace, service=service,
                                                               record_id=new_request_id())
                    except (ValueError, KeyError, TypeError):
                        continue
                    with self._lock:
                        self.counts.captured += 1
                        if len(self._buffer) >= self.max_buffer:
                            self.counts.dropped += 1
                            continue
                        self._buffer.append((service, self.clock(), pair))
                    added += 1
        return added

    # ---- writing
    def due(self) -> bool:
        with self._lock:
            if not self._buffer:
                return False
            return len(self._buffer) >= self.batch or self.clock() - self._buffer[0][1] >= self.flush_seconds

    def flush(self, everything: bool = False) -> int:
        """Write up to one batch (all batches with `everything`); returns predictions written.
        A failed upload puts its batch back at the front (or drops it when the buffer is full)."""
        written = 0
        while True:
            with self._lock:
                taken = [self._buffer.popleft() for _ in range(min(self.batch, len(self._buffer)))]
            if not taken:
                return written
            by_service: dict[str, list[dict]] = {}
            for service, _, pair in taken:
                by_service.setdefault(service, []).extend(pair)
            try:
                for records in by_service.values():
                    self.upload(capture.blob_name(records), capture.encode_batch(records))
            except Exception as exc:
                with self._lock:
                    self.counts.upload_errors += 1
                    self.counts.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                    room = self.max_buffer - len(self._buffer)
                    kept = taken[:max(room, 0)]
                    self.counts.dropped += len(taken) - len(kept)
                    self._buffer.extendleft(reversed(kept))
                raise
            with self._lock:
                self.counts.written += len(taken)
                self.counts.batches += 1
            written += len(taken)
            if not everything:
                return written


def _lake(connection: str) -> Any:
    from azure.storage.blob import BlobServiceClient

    from airflow_project.datalake import DataLake

    # Few, short retries: the buffer, not the client, rides out an outage.
    return DataLake(BlobServiceClient.from_connection_string(
        connection, retry_total=2, connection_timeout=5, read_timeout=20))


def run(args: argparse.Namespace) -> None:
    from airflow_project.datalake import BlobRef

    lake = _lake(connection_string())
    ready = threading.Event()

    def upload(name: str, data: bytes) -> None:
        if not ready.is_set():
            lake.ensure_containers((capture.CAPTURE_CONTAINER,))
            ready.set()
        lake.client.get_blob_client(capture.CAPTURE_CONTAINER, name).upload_blob(data, overwrite=True)

    cap = Capture(Path(args.home), args.namespace, upload, batch=args.batch, flush_seconds=args.flush_seconds,
                  max_buffer=args.max_buffer)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())

    def write_status() -> None:
        cap.save()
        with contextlib.suppress(Exception):
            status = (cap.folder / "status.json").read_bytes()
            lake.client.get_blob_client(capture.CAPTURE_CONTAINER, f"{args.namespace}/{STATUS_BLOB}").upload_blob(
                status, overwrite=True)

    def uploader() -> None:
        backoff, last_status = 0.0, 0.0
        while not stopping.is_set():
            try:
                if cap.due():
                    cap.flush()
                    backoff = 0.0
            except Exception:  # noqa: BLE001 - counted in flush
                backoff = min(30.0, max(1.0, backoff * 2))
                stopping.wait(backoff)
            if time.monotonic() - last_status > 5.0:
                write_status()
                last_status = time.monotonic()
            stopping.wait(0.05)

    thread = threading.Thread(target=uploader, name="capture-uploader", daemon=True)
    thread.start()
    log.info("capturing the prediction logs of namespace %s to %s", args.namespace, BlobRef(capture.CAPTURE_CONTAINER, ""))
    while not stopping.is_set():
        try:
            cap.poll()
        except Exception as exc:  # noqa: BLE001 - keep following; say what happened
            cap.counts.last_error = f"{type(exc).__name__}: {exc}"
        stopping.wait(args.poll_seconds)
    thread.join(timeout=10)
    cap.poll()  # what the predictors wrote before they stopped
    deadline = time.monotonic() + args.drain_seconds
    while time.monotonic() < deadline:
        try:
            cap.flush(everything=True)
            break
        except Exception:  # noqa: BLE001
            time.sleep(0.5)
    write_status()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m airflow_project.monitoring.capture_process")
    parser.add_argument("--home", required=True, help="MLOPS_HOME: the local serving controller's records")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--batch", type=int, default=1000, help="predictions per blob")
    parser.add_argument("--nice", type=int, default=NICENESS, help="CPU priority below the predictors'")
    parser.add_argument("--flush-seconds", type=float, default=2.0, help="write a partial batch this old")
    parser.add_argument("--max-buffer", type=int, default=50_000, help="predictions held before dropping")
    parser.add_argument("--poll-seconds", type=float, default=0.2)
    parser.add_argument("--drain-seconds", type=float, default=8.0, help="on SIGTERM, how long to keep writing")
    args = parser.parse_args(argv)
    with contextlib.suppress(OSError):
        os.nice(args.nice)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    run(args)


if __name__ == "__main__":
    main()
