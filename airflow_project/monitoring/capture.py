"""Captured traffic: the layout KServe's blob logger writes, and the one reader for it.

On Kubernetes the InferenceService's `logger` (KServe's agent, a container beside the
predictor) writes every request and response to the data lake; locally the capture process
(`monitoring.capture_process`) writes the same layout from the predictors' prediction-log
lines. What KServe v0.20 writes, from its source:

- object key `<url path>/<namespace>/<inferenceService>/<component>/<storage.path>/<id>-<type>.<ext>`,
  `type` the part of `reqType` after its last dot (`request`, `response`), `id` and `type`
  those of the batch's first record (`pkg/logger/store.go`, `getObjectKey`); the bucket is
  the URL's user part or host (`parseBlobStoreURL`), so `abfs://serving-logs` writes into
  the container `serving-logs` with no prefix;
- a batch (`logger.batchSize` records, or what `batchInterval` collected) is one object; the
  JSON marshaller writes a single record as an object and several as an array
  (`pkg/logger/marshaller_json.go`); records of requests and responses are mixed in arrival
  order (`pkg/logger/dispatcher.go`, one channel);
- a record is Go's JSON of `LogRequest` (`pkg/logger/types.go`): `bytes` (the body,
  base64), `contentType`, `reqType` (`org.kubeflow.serving.inference.request|response`),
  `id` (the request's `Ce-Id` header, else a new UUID: one id for a request and its
  response), `inferenceService`, `namespace`, `component`, `endpoint`, `metadata` (the
  request headers listed in `logger.metadataHeaders`, `{Header: [values]}`, names in Go's
  canonical form), `annotations` (the InferenceService annotations listed in
  `logger.metadataAnnotations`), `occurrenceTime` (RFC 3339, nanoseconds);
- a response is logged only when the predictor answered 200 (`pkg/logger/handler.go`): a
  request without its response failed.

The request id that ties a primary's and a shadow's record of one request is the
`X-Request-Id` header (`metadata`), which the routers and Istio's mirror forward; the served
version is the annotation MODEL_VERSION_ANNOTATION (the V2 answer's `model_version`
otherwise). One reader (`read_path`, `read_lake`) turns both this layout and the
predictor's own prediction-log lines (`mlops serve`'s stdout) into `ServedTraffic`: one
row per served instance.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_project.datalake import SERVING_LOGS_CONTAINER
from airflow_project.serving.constants import (
    CAPTURE_COMPONENT,
    CAPTURE_PATH,
    CAPTURE_REQUEST_ID_HEADER,
    MODEL_VERSION_ANNOTATION,
)
from airflow_project.wachttijden.schema import FEATURES

if TYPE_CHECKING:
    import pandas as pd

    from airflow_project.datalake import DataLake

try:
    import orjson as _orjson

    loads = _orjson.loads

    def _dumps(value: Any) -> bytes:
        return _orjson.dumps(value)
except ImportError:  # the Airflow image has no orjson: the stdlib is slower, not different
    loads = json.loads

    def _dumps(value: Any) -> bytes:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


CAPTURE_CONTAINER = SERVING_LOGS_CONTAINER
COMPONENT = CAPTURE_COMPONENT
REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
UNKNOWN_VERSION = "unknown"

COLUMNS: tuple[str, ...] = ("request_id", "time", "namespace", "service", "version", *FEATURES,
                            "prediction", "latency_ms")
"""`ServedTraffic.frame`: one row per served instance (a request with n instances is n rows)."""


class CaptureError(ValueError):
    """Captured traffic that cannot be read; the message names the file and the problem."""


# --------------------------------------------------------------------------- writing
def blob_prefix(namespace: str, service: str) -> str:
    """Where the records of one InferenceService go: `<namespace>/<isvc>/predictor/capture/`."""
    return f"{namespace}/{service}/{COMPONENT}/{CAPTURE_PATH}/"


def blob_name(records: Sequence[Mapping[str, Any]]) -> str:
    """The object key KServe gives a batch: from its first record's namespace, service, id and type."""
    first = records[0]
    kind = str(first["reqType"]).rsplit(".", 1)[-1]
    return f"{blob_prefix(first['namespace'], first['inferenceService'])}{first['id']}-{kind}.json"


def _timestamp(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat().replace("+00:00", "Z")


def records_from_prediction(line: Mapping[str, Any], *, namespace: str, service: str,
                            record_id: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A prediction-log record (`predictor.log_prediction`) as the request and response records
    KServe's agent would have written for it. The bodies are the V1 request and answer with the
    logged inputs and outputs (the line keeps the rows, not the bytes the client sent)."""
    ts = float(line["ts"])
    latency = float(line.get("latency_ms") or 0.0) / 1000.0
    common: dict[str, Any] = {
        "contentType": "application/json",
        "id": record_id or str(uuid.uuid4()),
        "inferenceService": service,
        "namespace": namespace,
        "component": COMPONENT,
        "metadata": {CAPTURE_REQUEST_ID_HEADER: [str(line.get("request_id") or "")]},
        "annotations": {MODEL_VERSION_ANNOTATION: str(line.get("model_version") or UNKNOWN_VERSION)},
    }
    request_body = _dumps({"instances": list(line["inputs"])})
    response_body = _dumps({"predictions": list(line["outputs"])})
    request = {**common, "bytes": base64.b64encode(request_body).decode(), "reqType": REQUEST_TYPE,
               "occurrenceTime": _timestamp(ts - latency)}
    response = {**common, "bytes": base64.b64encode(response_body).decode(), "reqType": RESPONSE_TYPE,
                "occurrenceTime": _timestamp(ts)}
    return request, response


def encode_batch(records: Sequence[Mapping[str, Any]]) -> bytes:
    """A batch as KServe's JSON marshaller writes it: one record as an object, more as an array."""
    if not records:
        raise ValueError("a batch needs at least one record")
    return _dumps(records[0] if len(records) == 1 else list(records))


# --------------------------------------------------------------------------- reading
@dataclass
class ServedTraffic:
    """What was served: `frame` (COLUMNS, one row per instance; `time` is the answer's, UTC),
    and counts of what could not become rows."""

    frame: pd.DataFrame
    requests: int = 0
    """Requests answered (a request and its response, or a prediction-log line)."""
    failed: int = 0
    """Requests without a response: KServe logs a response only for a 200 answer."""
    unpaired_responses: int = 0
    unreadable: int = 0
    """Records or lines that are not captured traffic (wrong type, undecodable body)."""
    sources: int = 0
    """Files or blobs read."""

    def versions(self) -> list[str]:
        """Served versions, numerically where they are numbers."""
        values = [str(v) for v in self.frame["version"].unique()]
        return sorted(values, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))

    def window(self, start: dt.datetime | None, end: dt.datetime | None) -> ServedTraffic:
        """The rows answered in [start, end) (either side open when None)."""
        frame = self.frame
        mask = None
        if start is not None:
            mask = frame["time"] >= start
        if end is not None:
            mask = (frame["time"] < end) if mask is None else mask & (frame["time"] < end)
        if mask is None:
            return self
        kept = frame[mask].reset_index(drop=True)
        return ServedTraffic(kept, requests=int(kept["request_id"].nunique()), failed=self.failed,
                             unpaired_responses=self.unpaired_responses, unreadable=self.unreadable,
                             sources=self.sources)

    def to_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "instances": len(self.frame), "failed": self.failed,
                "unpaired_responses": self.unpaired_responses, "unreadable": self.unreadable,
                "sources": self.sources}


def _header(metadata: Any, name: str) -> str | None:
    if not isinstance(metadata, Mapping):
        return None
    wanted = name.lower()
    for key, values in metadata.items():
        if str(key).lower() == wanted and values:
            return str(values[0] if isinstance(values, list) else values)
    return None


def _request_rows(body: Any) -> list[tuple[str, ...]]:
    from airflow_project.serving import protocol

    if isinstance(body, dict) and "inputs" in body and "instances" not in body:
        return protocol.v2_rows(body["inputs"])
    return protocol.v1_rows(body, max_rows=protocol.MAX_INSTANCES)


def _request_tuple(body: Any) -> tuple[tuple[str, ...], ...]:
    return tuple(_request_rows(body))


def _response_predictions(body: Any) -> tuple[list[float], str | None]:
    from airflow_project.serving.constants import OUTPUT_NAME

    if not isinstance(body, dict):
        raise TypeError("answer is not a JSON object")
    if "predictions" in body:
        return [float(p) for p in body["predictions"]], None
    for output in body.get("outputs") or []:
        if output.get("name") == OUTPUT_NAME:
            version = body.get("model_version")
            return [float(p) for p in output["data"]], None if version in (None, "") else str(version)
    raise ValueError("answer has neither 'predictions' nor an output named predictions")


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def _epoch(text: Any) -> int:
    """An RFC 3339 time as microseconds since the epoch (exact, unlike float seconds)."""
    value = dt.datetime.fromisoformat(str(text))
    return ((value if value.tzinfo else value.replace(tzinfo=dt.UTC)) - _EPOCH) // _MICROSECOND


class _Rows:
    """The frame's columns, kept per request (id, time, service, ...) and per instance
    (features, prediction) and expanded once at the end."""

    def __init__(self) -> None:
        self.request: dict[str, list[Any]] = {k: [] for k in ("request_id", "time", "namespace", "service",
                                                               "version", "latency_ms", "n")}
        self.rows: list[tuple[str, ...]] = []
        self.predictions: list[float] = []

    def add(self, request_id: str, time: int, namespace: str, service: str, version: str,
            rows: Sequence[tuple[str, ...]], predictions: Sequence[float], latency_ms: float) -> None:
        """One answered request (`time`: the answer's, microseconds since the epoch)."""
        if len(rows) != len(predictions):
            raise ValueError(f"{len(rows)} instances but {len(predictions)} predictions")
        r = self.request
        r["request_id"].append(request_id)
        r["time"].append(time)
        r["namespace"].append(namespace)
        r["service"].append(service)
        r["version"].append(version)
        r["latency_ms"].append(latency_ms)
        r["n"].append(len(rows))
        self.rows.extend(rows)
        self.predictions.extend(predictions)

    def frame(self) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        n = np.asarray(self.request["n"], dtype="int64")
        columns: dict[str, Any] = {}
        for name in ("request_id", "namespace", "service", "version"):
            values = pd.Categorical(self.request[name])
            columns[name] = values.take(np.repeat(np.arange(len(values)), n)) if len(values) else values
        columns["time"] = pd.to_datetime(np.repeat(np.asarray(self.request["time"], dtype="int64"), n),
                                         unit="us", utc=True)
        columns["latency_ms"] = np.repeat(np.asarray(self.request["latency_ms"], dtype="float64"), n)
        by_feature = list(zip(*self.rows)) if self.rows else [() for _ in FEATURES]
        for feature, values in zip(FEATURES, by_feature):
            columns[feature] = pd.Categorical(values)
        columns["prediction"] = np.asarray(self.predictions, dtype="float64")
        return pd.DataFrame(columns, columns=list(COLUMNS))


_CACHE_LIMIT = 200_000
"""Decoded bodies kept by their base64 text: served traffic repeats its feature combinations."""


class CaptureReader:
    """Reads captured traffic piece by piece (`feed`), pairs each request with its response,
    and returns the result (`traffic`). Pairs may span batches: a request waits for its
    response until the end."""

    def __init__(self) -> None:
        self._rows = _Rows()
        self._requests: dict[tuple[str, str, str], Mapping[str, Any]] = {}
        self._responses: dict[tuple[str, str, str], Mapping[str, Any]] = {}
        self._requests_seen: dict[str, tuple[tuple[str, ...], ...]] = {}
        self._responses_seen: dict[str, tuple[list[float], str | None]] = {}
        self.requests = 0
        self.unreadable = 0
        self.sources = 0

    def feed(self, data: bytes, source: str) -> None:
        """One file or blob: a capture batch (a record or an array of them) or prediction-log
        lines (anything else on a line, such as server logs, is skipped)."""
        self.sources += 1
        stripped = data.lstrip()
        if stripped[:1] in (b"{", b"["):
            try:
                batch = loads(data)
            except ValueError:
                batch = None  # JSON lines, not one document
            if isinstance(batch, dict) and "reqType" in batch:
                self._record(batch)
                return
            if isinstance(batch, list) and batch and all(isinstance(r, dict) and "reqType" in r for r in batch):
                for record in batch:
                    self._record(record)
                return
            if isinstance(batch, (dict, list)) and not (isinstance(batch, dict) and batch.get("event") == "prediction"):
                raise CaptureError(f"{source}: JSON that is neither a capture batch (records with reqType) "
                                   "nor a prediction-log line")
        self._lines(data)

    def _lines(self, data: bytes) -> None:
        for line in data.splitlines():
            if b'"prediction"' not in line:
                continue
            try:
                record = loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or record.get("event") != "prediction":
                continue
            try:
                rows = [tuple(str(inst[f]) for f in FEATURES) for inst in record["inputs"]]
                self._rows.add(str(record.get("request_id") or ""), round(float(record["ts"]) * 1e6),
                               "", str(record.get("model_name") or ""),
                               str(record.get("model_version") or UNKNOWN_VERSION), rows,
                               [float(p) for p in record["outputs"]], float(record.get("latency_ms") or 0.0))
                self.requests += 1
            except (KeyError, TypeError, ValueError):
                self.unreadable += 1

    def _record(self, record: Mapping[str, Any]) -> None:
        kind = str(record.get("reqType", "")).rpartition(".")[2]
        key = (record.get("namespace", ""), record.get("inferenceService", ""), record.get("id", ""))
        if kind == "request":
            response = self._responses.pop(key, None)
            if response is None:
                self._requests[key] = record
            else:
                self._pair(record, response)
        elif kind == "response":
            request = self._requests.pop(key, None)
            if request is None:
                self._responses[key] = record
            else:
                self._pair(request, record)
        else:
            self.unreadable += 1

    def _pair(self, request: Mapping[str, Any], response: Mapping[str, Any]) -> None:
        from airflow_project.serving.protocol import BadInput

        try:
            rows = self._decoded(self._requests_seen, request, _request_tuple)
            predictions, body_version = self._decoded(self._responses_seen, response, _response_predictions)
            answered, asked = _epoch(response["occurrenceTime"]), _epoch(request["occurrenceTime"])
            annotations = request.get("annotations")
            version = (annotations.get(MODEL_VERSION_ANNOTATION) if isinstance(annotations, dict) else None) \
                or body_version or UNKNOWN_VERSION
            metadata = request.get("metadata")
            ids = metadata.get(CAPTURE_REQUEST_ID_HEADER) if isinstance(metadata, dict) else None
            request_id = str(ids[0]) if isinstance(ids, list) and ids else _header(metadata, CAPTURE_REQUEST_ID_HEADER)
            self._rows.add(request_id or str(request.get("id", "")), answered, str(request.get("namespace", "")),
                           str(request.get("inferenceService", "")), str(version), rows, predictions,
                           (answered - asked) / 1000.0)
            self.requests += 1
        except (BadInput, KeyError, TypeError, ValueError):
            self.unreadable += 1

    @staticmethod
    def _decoded(seen: dict[str, Any], record: Mapping[str, Any], decode: Any) -> Any:
        """A record's body decoded (once per distinct body: traffic repeats itself)."""
        raw = record.get("bytes")
        if not isinstance(raw, str):
            raise TypeError("no body")
        value = seen.get(raw)
        if value is None:
            value = decode(loads(base64.b64decode(raw, validate=True)))
            if len(seen) >= _CACHE_LIMIT:
                seen.clear()
            seen[raw] = value
        return value

    def traffic(self) -> ServedTraffic:
        return ServedTraffic(self._rows.frame(), requests=self.requests, failed=len(self._requests),
                             unpaired_responses=len(self._responses), unreadable=self.unreadable,
                             sources=self.sources)


def _files(path: Path) -> Iterator[Path]:
    if path.is_dir():
        yield from sorted(p for p in path.rglob("*") if p.is_file())
    elif path.is_file():
        yield path
    else:
        raise CaptureError(f"{path}: no such file or folder of captured traffic")


def read_path(path: Path | str) -> ServedTraffic:
    """Captured traffic from a file or a folder (every file under it): capture batches in
    KServe's layout (e.g. a copy of the `serving-logs` container) or prediction-log lines."""
    reader = CaptureReader()
    for file in _files(Path(path)):
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise CaptureError(f"{file}: cannot be read ({exc.strerror or exc})") from None
        reader.feed(data, str(file))
    return reader.traffic()


def read_lake(lake: DataLake, *, prefix: str = "", since: dt.datetime | None = None,
              until: dt.datetime | None = None) -> ServedTraffic:
    """Captured traffic from the data lake's `serving-logs` container: the batches under
    `prefix` written in [since, until). Windows by write time split the batches without a gap
    or an overlap: a record is read in the window its batch was written in."""
    from airflow_project.datalake import BlobRef

    reader = CaptureReader()
    for name in lake.list_written(CAPTURE_CONTAINER, prefix, since, until):
        if name.rsplit("/", 1)[-1].startswith("_"):
            continue  # the capture process's own status, not traffic
        reader.feed(lake.read(BlobRef(CAPTURE_CONTAINER, name)), f"{CAPTURE_CONTAINER}/{name}")
    return reader.traffic()


def empty_traffic() -> ServedTraffic:
    return CaptureReader().traffic()
