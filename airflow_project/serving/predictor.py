"""The KServe model: one `kserve.Model` subclass answering V1 and V2 (the bodies are `protocol`'s).

It loads a registered version through the MLflow server (skops only, trusted types
allow-listed, no storage credentials) and answers from a `TablePredictor`: the pipeline
evaluated once on every combination of fitted categories plus an unknown value per feature,
so a prediction is a table lookup, bit-identical to the pipeline's own `predict`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest, InferResponse

from airflow_project import registry
from airflow_project.serving import protocol, request_ids
from airflow_project.serving.constants import (
    FEATURE_COLUMNS,
    MODEL_VERSION_HEADER,
    OUTPUT_NAME,
    PREDICTION_LOGGER,
    REQUEST_ID_HEADER,
)

log = logging.getLogger(__name__)

ALLOWED_TRUSTED_TYPE_PREFIXES = ("sklearn.", "numpy.", "scipy.")
"""skops trusted types are read from the model's MLmodel file; a crafted model could
trust anything, so the predictor accepts only these namespaces."""

_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/]+))/?$")


# --------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class LoadedModel:
    pipeline: Any
    name: str
    version: str
    uri: str
    """The resolved, immutable URI `models:/<name>/<version>`."""


def resolve_model_uri(uri: str, client: Any) -> tuple[str, str]:
    """`models:/name/<version>` or `models:/name@alias` -> (registered name, version)."""
    match = _MODEL_URI.match(uri)
    if not match:
        raise ValueError(
            f"model URI must be models:/<name>/<version> or models:/<name>@<alias>, "
            f"got {uri!r}"
        )
    name = match["name"]
    return name, str(registry.require_version(client, match["version"] or match["alias"], name).version)


def load_model(model_uri: str, tracking_uri: str | None = None) -> LoadedModel:
    """Load a registered sklearn pipeline through the MLflow tracking server (skops only)."""
    import mlflow
    import mlflow.sklearn
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model as MlflowModel
    from mlflow.tracking import MlflowClient

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    name, version = resolve_model_uri(model_uri, client)
    # Download the resolved version, not the alias: the alias may move meanwhile.
    resolved = registry.model_uri(version, name)
    local = download_artifacts(artifact_uri=resolved, dst_path=tempfile.mkdtemp(prefix="wt-model-"))
    flavor = MlflowModel.load(local).flavors.get("sklearn")
    if flavor is None:
        raise ValueError(f"{resolved} has no sklearn flavor")
    fmt = flavor.get("serialization_format")
    if fmt != "skops":
        raise ValueError(f"{resolved} is serialized as {fmt!r}; only 'skops' is accepted")
    trusted = flavor.get("skops_trusted_types") or []
    bad = [t for t in trusted if not str(t).startswith(ALLOWED_TRUSTED_TYPE_PREFIXES)]
    if bad:
        raise ValueError(f"{resolved} trusts types outside {ALLOWED_TRUSTED_TYPE_PREFIXES}: {bad}")
    # MLflow gates every format (skops included) behind this flag (default true). We set
    # it for this one call only, after checking that the artifact is skops with an
    # allow-listed set of trusted types, so a deployment may set it to false globally.
    previous = os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
    try:
        pipeline = mlflow.sklearn.load_model(local)
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", None)
        else:
            os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = previous
    return LoadedModel(pipeline=pipeline, name=name, version=version, uri=resolved)


# --------------------------------------------------------------------------- hot path
_UNKNOWN = "\x00<unknown category>"


def _fitted_categories(pipeline: Any, features: Sequence[str]) -> list[list[str]] | None:
    """Per feature (in `features` order) the encoder's fitted categories, or None when the
    pipeline is not `ColumnTransformer([OneHotEncoder(handle_unknown=ignore)]) -> model`."""
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    steps = getattr(pipeline, "steps", None)
    if not steps or len(steps) != 2:
        return None
    transformer = steps[0][1]
    if not isinstance(transformer, ColumnTransformer):
        return None
    active = [(n, t, c) for n, t, c in transformer.transformers_ if t != "drop"]
    if len(active) != 1:
        return None
    _, encoder, columns = active[0]
    if not isinstance(encoder, OneHotEncoder) or encoder.handle_unknown not in (
        "ignore",
        "infrequent_if_exist",
    ):
        return None
    if list(columns) != list(features) and sorted(columns) != sorted(features):
        return None
    by_column = {}
    for column, cats in zip(columns, encoder.categories_):
        values = list(cats)
        if not all(isinstance(v, str) for v in values) or _UNKNOWN in values:
            return None
        by_column[column] = values
    return [by_column[f] for f in features]


def _make_deterministic(pipeline: Any) -> None:
    """Forests with n_jobs != 1 sum tree outputs in thread completion order, so their
    last bit varies from call to call; serve with n_jobs=1 (tree order, reproducible)."""
    for _, step in getattr(pipeline, "steps", []):
        if getattr(step, "n_jobs", 1) not in (1, None) and hasattr(step, "set_params"):
            step.set_params(n_jobs=1)


class TablePredictor:
    """Exact, precomputed predictions for every (category-or-unknown) combination."""

    MAX_TABLE = 250_000
    MAX_MEMO = 100_000

    def __init__(self, pipeline: Any, features: Sequence[str] = FEATURE_COLUMNS) -> None:
        import pandas as pd

        self.pipeline = pipeline
        self.features = tuple(features)
        self._pd = pd
        _make_deterministic(pipeline)
        cats = _fitted_categories(pipeline, self.features)
        sizes = [len(c) + 1 for c in cats] if cats else []
        self.mode = "table" if cats and int(np.prod(sizes)) <= self.MAX_TABLE else "memo"
        self._memo: dict[tuple[str, ...], float] = {}
        if self.mode == "table":
            assert cats is not None
            self._index = [{v: i for i, v in enumerate(c)} for c in cats]
            self._unknown = [len(c) for c in cats]
            strides = np.cumprod([1, *sizes[::-1][:-1]])[::-1]
            self._strides = [int(s) for s in strides]
            grid = list(itertools.product(*[[*c, _UNKNOWN] for c in cats]))
            frame = pd.DataFrame(grid, columns=list(self.features), dtype=object)
            self._table_list: list[float] = np.asarray(pipeline.predict(frame), dtype=np.float64).tolist()

    def predict(self, rows: Sequence[tuple[str, ...]]) -> list[float]:
        if self.mode == "table":
            out = []
            index, unknown, strides, table = self._index, self._unknown, self._strides, self._table_list
            for row in rows:
                k = 0
                for i, value in enumerate(row):
                    k += index[i].get(value, unknown[i]) * strides[i]
                out.append(table[k])
            return out
        memo = self._memo
        known = {r: memo[r] for r in rows if r in memo}
        missing = [r for r in dict.fromkeys(rows) if r not in known]
        if missing:
            frame = self._pd.DataFrame(missing, columns=list(self.features), dtype=object)
            try:
                values = np.asarray(self.pipeline.predict(frame), dtype=np.float64).tolist()
            except ValueError as exc:  # e.g. an encoder with handle_unknown="error"
                raise InvalidInput(f"instances: the model rejected the input ({exc})") from None
            known.update(zip(missing, values))
            if len(memo) + len(missing) > self.MAX_MEMO:
                memo.clear()
            memo.update(zip(missing, values))
        return [known[r] for r in rows]


# --------------------------------------------------------------------------- the model
@dataclass
class _Batch:
    protocol: str
    rows: list[tuple[str, ...]]
    request_id: str
    request_id_header: bytes
    """`request_id` as the response header's bytes (the client's own, byte for byte)."""
    v2_request: InferRequest | None = None
    started: float = field(default_factory=time.perf_counter)


def _incoming_id(headers: dict[str, str]) -> bytes | None:
    """The request's `x-request-id` as the bytes it arrived as (Starlette decodes them as latin-1)."""
    value = headers.get(REQUEST_ID_HEADER)
    return value.encode("latin-1") if value else None


try:
    import orjson as _orjson

    def _log_dumps(record: dict[str, Any]) -> str:
        try:
            return _orjson.dumps(record).decode()
        except TypeError:  # e.g. a string with a lone surrogate: json copes
            return json.dumps(record, ensure_ascii=False)
except ImportError:  # pragma: no cover - orjson is a kserve dependency
    def _log_dumps(record: dict[str, Any]) -> str:
        return json.dumps(record, ensure_ascii=False)


class _LineBatcher:
    """Writes the prediction lines of one event-loop iteration to a handler's stream at once.

    Under load the loop answers many requests per iteration; one write (a system call
    per write when stdout is unbuffered, as in the container) then carries all their
    lines. The write is scheduled with `call_soon` when the first line arrives, before
    the response is sent, and the server's response writes (`write_coalescing`) are
    scheduled the same way after it: a response never reaches the client before its
    line reaches stdout. Outside a running loop a line is written at once.
    """

    def __init__(self, handler: logging.StreamHandler) -> None:  # type: ignore[type-arg]
        self.handler = handler
        self.pending: list[str] = []

    def add(self, line: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write(line)
            return
        if not self.pending:
            loop.call_soon(self.flush)
        self.pending.append(line)

    def flush(self) -> None:
        lines, self.pending = self.pending, []
        if lines:
            self._write("\n".join(lines))

    def _write(self, text: str) -> None:
        handler = self.handler
        try:
            with handler.lock:  # type: ignore[union-attr]
                handler.stream.write(text + handler.terminator)
                handler.stream.flush()
        except Exception:  # noqa: BLE001 - a broken stdout: report it the way logging does
            handler.handleError(logging.makeLogRecord({"msg": text}))


_LINE_FORMAT = logging.Formatter("%(message)s")
"""The prediction log's own format: a record is its message, so a line can skip the record."""


def prediction_logger() -> logging.Logger:
    """The JSON-lines prediction log on stdout (its own handler; not propagated)."""
    logger = logging.getLogger(PREDICTION_LOGGER)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(_LINE_FORMAT)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


class WachttijdenModel(Model):
    """KServe model serving the registered wachttijden pipeline (V1 and V2)."""

    def __init__(
        self,
        name: str,
        model_uri: str | None = None,
        tracking_uri: str | None = None,
        *,
        pipeline: Any = None,
        model_version: str = "unknown",
    ) -> None:
        # return_response_headers: KServe then hands `predict` the response headers, which
        # carry the request id and the answering version on KServe's own path too.
        super().__init__(name, return_response_headers=True)
        self.model_uri = model_uri
        self.tracking_uri = tracking_uri
        self.pipeline = pipeline
        self.model_version = model_version
        self.registered_name: str | None = None
        self.predictor: TablePredictor | None = None
        self._log = prediction_logger()
        handlers = self._log.handlers
        own = handlers[0] if len(handlers) == 1 else None
        # Only our own stdout handler with its "%(message)s" format: lines skip LogRecords.
        self._lines = (
            _LineBatcher(own)
            if type(own) is logging.StreamHandler
            and own.formatter is _LINE_FORMAT
            and own.level <= logging.INFO
            else None
        )

    def load(self) -> bool:
        if self.pipeline is None:
            if not self.model_uri:
                raise ValueError("either model_uri or pipeline is required")
            loaded = load_model(self.model_uri, self.tracking_uri)
            self.pipeline = loaded.pipeline
            self.model_version = loaded.version
            self.registered_name = loaded.name
            self.model_uri = loaded.uri
        self.predictor = TablePredictor(self.pipeline)
        self._probe: tuple[str, ...] | None = tuple(f"\x00probe {f}" for f in FEATURE_COLUMNS)
        try:  # unknown values: the table's last cell (a pipeline that refuses them gets no probe)
            self.predictor.predict([self._probe])
        except InvalidInput:
            self._probe = None
        log.info(
            "loaded model %s version %s (%s mode)", self.model_uri, self.model_version, self.predictor.mode
        )
        self.ready = True
        return self.ready

    def answering(self) -> bool:
        """Loaded, not stopped, and its table answers: what readiness means for this model."""
        predictor = self.predictor
        if not self.ready or predictor is None:
            return False
        if self._probe is None:
            return True
        try:
            value = predictor.predict([self._probe])[0]
        except Exception:
            log.exception("model %s version %s does not answer its readiness probe", self.name, self.model_version)
            return False
        return math.isfinite(value)

    async def healthy(self) -> bool:  # KServe's readiness, on its own routes too
        return self.answering()

    # kserve's default validate() assumes dict payloads; all validation happens in preprocess.
    def validate(self, payload: Any) -> Any:
        return payload

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> _Batch:
        headers = headers or {}
        try:
            if isinstance(payload, InferRequest):
                protocol.v2_parameters(payload.parameters)
                inputs = [{"name": i.name, "datatype": i.datatype, "shape": i.shape, "data": i.data}
                          for i in payload.inputs or []]
                outputs = [o.name for o in payload.request_outputs or []]
                rows = protocol.v2_rows(inputs, outputs=outputs)
                rid, rid_header = request_ids.choose(_incoming_id(headers), payload.id)
                return _Batch("v2", rows, rid, rid_header, payload)
            rows = protocol.v1_rows(payload)
        except protocol.BadInput as exc:
            raise InvalidInput(str(exc)) from None
        rid, rid_header = request_ids.choose(_incoming_id(headers))
        return _Batch("v1", rows, rid, rid_header)

    def predict(self, payload: _Batch, headers: dict[str, str] | None = None,
                response_headers: dict[str, str] | None = None) -> Any:
        assert self.predictor is not None, "model not loaded"
        predictions = self.predictor.predict(payload.rows)
        self._log_prediction(payload, predictions)
        if response_headers is not None:  # Starlette encodes header strings as latin-1: the same bytes
            response_headers[REQUEST_ID_HEADER] = payload.request_id_header.decode("latin-1")
            response_headers[MODEL_VERSION_HEADER] = self.model_version
        if payload.protocol == "v1":
            return protocol.v1_answer(predictions)
        request = payload.v2_request
        assert request is not None
        return InferResponse.from_rest(
            protocol.v2_answer(self.name, self.model_version, request.id or payload.request_id, predictions)
        )

    def _log_prediction(self, batch: _Batch, predictions: list[float]) -> None:
        self.log_prediction(batch.protocol, batch.request_id, batch.rows, predictions, batch.started)

    def log_prediction(
        self,
        protocol: str,
        request_id: str,
        rows: Sequence[tuple[str, ...]],
        predictions: list[float],
        started: float,
        client: str | None = None,
    ) -> None:
        """One JSON line per prediction (also called by the server's raw-ASGI fast path).

        `client` ("host:port") is given by the fast path, whose line is the request's only
        access record (see `server.PredictFastPath`).
        """
        logger = self._log
        if not logger.isEnabledFor(logging.INFO):
            return
        record = {
            "event": "prediction",
            "ts": time.time(),
            "request_id": request_id,
            "model_name": self.name,
            "registered_model": self.registered_name,
            "model_version": self.model_version,
            "protocol": protocol,
            "inputs": [dict(zip(FEATURE_COLUMNS, row)) for row in rows],
            "outputs": predictions,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        if client is not None:
            record["client"] = client
        line = _log_dumps(record)
        lines, handlers = self._lines, logger.handlers
        if (lines is not None and len(handlers) == 1 and handlers[0] is lines.handler
                and not logger.filters and not lines.handler.filters):
            # Only our stdout handler with its "%(message)s" format: write the line as
            # StreamHandler.emit would, without building a LogRecord (findCaller etc.).
            lines.add(line)
            return
        logger.info(line)

    def get_input_types(self) -> list[dict]:
        return [{"name": f, "datatype": "BYTES", "shape": [-1]} for f in FEATURE_COLUMNS]

    def get_output_types(self) -> list[dict]:
        return [{"name": OUTPUT_NAME, "datatype": "FP64", "shape": [-1]}]
