"""The predictor process: KServe's app with our guards, behind a raw-ASGI fast path.

`build_app()` assembles what is served (and what the unit tests exercise); `serve()` loads
the model, builds the app and runs it with `kserve.ModelServer` until SIGINT/SIGTERM. The
HTTP port only opens once the model is loaded, so `GET /v2/models/<name>/ready` answering
200 means "ready to predict".
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_project.serving import kserve_compat, protocol
from airflow_project.serving.asgi import BodySizeLimitMiddleware, replay_body
from airflow_project.serving.constants import DEFAULT_HTTP_PORT, MAX_BODY_BYTES

log = logging.getLogger(__name__)


def _validation_error_handler(_request: Any, exc: Any) -> Any:
    from fastapi.responses import JSONResponse

    errors = list(exc.errors())
    # The V2 body is `Union[InferenceRequest, bytes]`: drop the noise of the bytes branch.
    relevant = [e for e in errors if tuple(e.get("loc", ()))[:1] != ("bytes",)] or errors
    problems = []
    detail = []
    for err in relevant:
        kind = str(err.get("type", ""))
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "InferenceRequest")]
        msg = str(err.get("msg", "invalid"))
        if kind == "json_invalid":
            where, msg = "body", f"malformed JSON ({msg} at position {'.'.join(loc) or '?'})"
            loc = []
        else:
            where = ".".join(loc) or "body"
        problems.append(f"{where}: {msg}")
        detail.append({"loc": loc, "msg": msg, "type": kind})
    return JSONResponse(status_code=422, content={"error": "; ".join(problems[:5]), "detail": detail[:20]})


def _http_exception_handler(_request: Any, exc: Any) -> Any:
    """Starlette/FastAPI HTTP errors (404 route, 405, body parse failure) as `{"error": ...}`."""
    from fastapi.responses import JSONResponse

    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    if exc.status_code == 400 and "parsing the body" in detail:
        detail = "body: malformed JSON (" + detail + ")"
    return JSONResponse(status_code=exc.status_code, content={"error": detail},
                        headers=getattr(exc, "headers", None))


_GUARDED: set[int] = set()


def install_guards(app: Any, max_body_bytes: int = MAX_BODY_BYTES) -> Any:
    """Add the body-size limit and the validation-error handler to a FastAPI app (once)."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    if id(app) in _GUARDED:
        return app
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=max_body_bytes)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    _GUARDED.add(id(app))
    return app


def fast_path_app(app: Any, model: Any, max_body_bytes: int = MAX_BODY_BYTES) -> Any:
    """`app` (KServe's FastAPI app, guards installed) behind the predict fast path."""
    return PredictFastPath(app, model, max_body_bytes)


@dataclass(frozen=True)
class PredictorApp:
    server: Any
    """The `kserve.ModelServer` with the model registered."""
    app: Any
    """What is served: the fast path in front of `kserve_app`."""
    kserve_app: Any
    """KServe's own FastAPI app, routes and guards installed."""


# KServe's ModelServer settings the predictor chooses differently from KServe's defaults.
SERVER_DEFAULTS: dict[str, Any] = {"enable_grpc": False, "workers": 1, "enable_docs_url": False}


def build_app(model: Any, max_body_bytes: int = MAX_BODY_BYTES, *, http_port: int = DEFAULT_HTTP_PORT,
              server_options: Mapping[str, Any] | None = None) -> PredictorApp:
    """KServe's model server and app for a loaded model, exactly as `serve()` runs them."""
    from kserve import ModelServer
    from kserve import model_server as kserve_model_server

    kserve_compat.apply()
    server = ModelServer(http_port=http_port, **{**SERVER_DEFAULTS, **dict(server_options or {})})
    server.register_model(model)
    kserve_app = install_guards(kserve_model_server.app, max_body_bytes)
    kserve_compat.harden_dataplane(server.dataplane)
    kserve_compat.create_application(server)
    return PredictorApp(server, fast_path_app(kserve_app, model, max_body_bytes), kserve_app)


def build_model(model_uri: str, name: str, tracking_uri: str | None = None) -> Any:
    from airflow_project.serving.predictor import WachttijdenModel

    model = WachttijdenModel(name, model_uri=model_uri, tracking_uri=tracking_uri)
    model.load()
    return model


def serve(
    model_uri: str,
    name: str,
    port: int = DEFAULT_HTTP_PORT,
    tracking_uri: str | None = None,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    server_options: Mapping[str, Any] | None = None,
) -> None:
    """Load `model_uri` through the MLflow server and serve it as `name` on `port` (blocking)."""
    kserve_compat.check_versions()  # before the model load: an upgrade fails in a second
    model = build_model(model_uri, name, tracking_uri)
    # Everything imported and loaded so far (mlflow, sklearn, pandas, the model) lives as
    # long as the process: move it out of the collector's reach, so that full collections
    # triggered by request garbage do not walk the ~300 000 startup objects.
    gc.collect()
    gc.freeze()
    built = build_app(model, max_body_bytes, http_port=port, server_options=server_options)
    log.info("serving %s (%s, version %s) on port %d", name, model.model_uri, model.model_version, port)
    kserve_compat.run(built.server, built.app, [model])


# --------------------------------------------------------------------------- fast path
try:  # orjson ships with kserve; json is the fallback
    import orjson as _orjson

    _loads: Any = _orjson.loads
    _JSON_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError)

    def _dumps(obj: Any) -> bytes:
        return _orjson.dumps(obj)
except ImportError:  # pragma: no cover - orjson is a kserve dependency
    _loads = json.loads
    _JSON_ERRORS = (ValueError, TypeError, UnicodeDecodeError, RecursionError)

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _plain_float(x: float) -> bool:
    """True when orjson and Python's repr write `x` identically (no exponent, finite)."""
    a = abs(x)
    return a == 0.0 or 1e-4 <= a < 1e16


_V2_TOP = frozenset(("id", "parameters", "inputs", "outputs"))


def _v2_inputs(body: Any) -> tuple[list[Any], str | None] | None:
    """(inputs, body id) of a V2 body whose top level is in canonical JSON form (what
    KServe's schema takes as it is, without requested outputs), else None; the inputs
    themselves are checked by `protocol.v2_rows(..., strict=True)`."""
    if type(body) is not dict or not body.keys() <= _V2_TOP:
        return None
    body_id = body.get("id")
    if body_id is not None and type(body_id) is not str:
        return None
    params = body.get("parameters")
    if params is not None and not (type(params) is dict and (not params or params == {"content_type": "pd"})):
        return None
    inputs = body.get("inputs")
    if body.get("outputs") is not None or type(inputs) is not list:
        return None
    return inputs, body_id


def _as_json(scope: Any) -> Any:
    """The scope with `content-type: application/json` instead of what the client sent."""
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
    return {**scope, "headers": [*headers, (b"content-type", protocol.JSON_TYPE)]}


class PredictFastPath:
    """Raw ASGI layer in front of KServe's FastAPI app for the two predict routes.

    Handles `POST /v1/models/<name>:predict` and `POST /v2/models/<name>/infer` (JSON
    body: `Content-Type: application/json`, or none or a generic one without the binary
    extension's header, `protocol.reads_as_json`) for the one loaded `WachttijdenModel`:
    reads the body (bounded by `max_body_bytes`), parses it with orjson, validates it,
    answers from the model's `TablePredictor`, writes the same JSON KServe would write
    and emits the same one-line prediction log (`WachttijdenModel.log_prediction`).

    Everything else goes, unchanged, to the KServe app: other paths and methods, other
    content types, binary V2 (`inference-header-content-length`), CloudEvents (`ce-*`
    headers), a model that is not ready, an oversized body (KServe's guard answers 413),
    and ANY body that is not plain-valid (malformed JSON, schema or validation problems,
    values pydantic would coerce, ...): the fast path never produces an error response
    itself, so status codes and messages stay those of the KServe path.

    Responses carry `x-request-id` (the client's or a generated one; the id that is in the
    prediction log line). Bodies are byte-identical to KServe's; KServe's own path does not
    add `x-request-id`.

    Logging: the prediction line (with the client address added) is the access record of
    a fast-path request, so uvicorn's plain-text access line is skipped for it
    (`kserve_compat.skip_access_line`). Two lines per prediction, one unstructured, cost more
    than the whole prediction (measured in loadtest/README.md). Every other request,
    including predictions KServe's own path answers, keeps uvicorn's access line.

    Metrics: a fast-path request updates KServe's Prometheus histograms
    `request_preprocess_seconds` (parse + validate), `request_predict_seconds` and
    `request_postprocess_seconds` (response encoding) with the model's label, as
    `kserve.Model.__call__` does. It does NOT pass KServe's timing-asgi middleware, so
    the per-request `kserve.trace` timing log lines are not written for fast-path
    requests (they still are for delegated ones).
    """

    def __init__(self, app: Any, model: Any, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        from kserve.metrics import POST_HIST_TIME, PRE_HIST_TIME, PREDICT_HIST_TIME

        from airflow_project.serving.constants import FEATURE_COLUMNS, MAX_INSTANCES
        from airflow_project.serving.request_ids import new_request_id

        self.app = app
        self.model = model
        self.max_body_bytes = max_body_bytes
        self.features = FEATURE_COLUMNS
        self.max_rows = MAX_INSTANCES
        self.new_request_id = new_request_id
        self.v1_path = f"/v1/models/{model.name}:predict"
        self.v2_path = f"/v2/models/{model.name}/infer"
        self._pre = PRE_HIST_TIME.labels(model_name=model.name)
        self._predict = PREDICT_HIST_TIME.labels(model_name=model.name)
        self._post = POST_HIST_TIME.labels(model_name=model.name)
        self.model_version = str(model.model_version)

    def _rows(self, doc: Any, v2: bool) -> tuple[list[tuple[str, ...]] | None, str | None]:
        """(rows, V2 body id) of a body the fast path answers; no rows for anything else."""
        if doc is None:
            return None, None
        try:
            if not v2:
                return protocol.v1_rows(doc, self.features, self.max_rows), None
            top = _v2_inputs(doc)
            if top is None:
                return None, None
            return protocol.v2_rows(top[0], self.features, self.max_rows, strict=True), top[1]
        except protocol.BadInput:
            return None, None

    def __getattr__(self, name: str) -> Any:  # behave like the wrapped app for callers that inspect it
        return getattr(self.app, name)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path == self.v1_path:
            v2 = False
        elif path == self.v2_path:
            v2 = True
        else:
            return await self.app(scope, receive, send)
        content_type = None
        request_id = b""
        declared = -1
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value
            elif key == b"content-length":
                declared = int(value) if value.isdigit() else self.max_body_bytes + 1
            elif key == b"x-request-id":
                if request_id:
                    return await self.app(scope, receive, send)  # duplicate: leave it to KServe
                request_id = value
            elif key.startswith(b"ce-") or key in (b"inference-header-content-length", b"content-encoding"):
                return await self.app(scope, receive, send)
        if content_type != protocol.JSON_TYPE:
            if not protocol.reads_as_json(content_type):
                return await self.app(scope, receive, send)
            if v2:  # KServe, if the body goes there, must parse it as JSON too, not as tensors
                scope = _as_json(scope)  # (its V1 route hands other types to the model as bytes)
        if declared > self.max_body_bytes or not self.model.ready:
            return await self.app(scope, receive, send)

        # read the body (bounded); on overflow hand what was read plus the rest to KServe
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            chunk = message.get("body", b"")
            if chunk:
                chunks.append(chunk)
                total += len(chunk)
            if total > self.max_body_bytes:  # KServe's guard answers 413 (and reads the rest, if any)
                more = message.get("more_body", False)
                return await self.app(scope, replay_body(b"".join(chunks), receive, more), send)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)

        started = time.perf_counter()
        try:
            doc = _loads(body)
        except _JSON_ERRORS:
            doc = None
        rows, body_id = self._rows(doc, v2)
        if rows is None:
            return await self.app(scope, replay_body(body, receive, False), send)
        rid = request_id.decode("latin-1") if request_id else (body_id or self.new_request_id())
        t_pre = time.perf_counter()
        predictions = self.model.predictor.predict(rows)
        t_pred = time.perf_counter()
        for x in predictions:
            if not _plain_float(x):  # NaN/inf or exponent notation: let KServe encode it
                return await self.app(scope, replay_body(body, receive, False), send)
        try:
            out = _dumps(
                protocol.v2_answer(self.model.name, self.model_version, body_id or rid, predictions) if v2
                else protocol.v1_answer(predictions)
            )
            rid_header = rid.encode("latin-1")
        except (TypeError, ValueError, UnicodeEncodeError):
            return await self.app(scope, replay_body(body, receive, False), send)
        t_post = time.perf_counter()
        self._pre.observe(t_pre - started)
        self._predict.observe(t_pred - t_pre)
        self._post.observe(t_post - t_pred)
        client = scope.get("client")
        self.model.log_prediction("v2" if v2 else "v1", rid, rows, predictions, started,
                                  f"{client[0]}:{client[1]}" if client else "-")
        kserve_compat.skip_access_line(send)
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-length", str(len(out)).encode()),
                (b"content-type", b"application/json"),
                (b"x-request-id", rid_header),
            ],
        })
        await send({"type": "http.response.body", "body": out})

