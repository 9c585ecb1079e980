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

from airflow_project.serving import kserve_compat, protocol, request_ids
from airflow_project.serving.asgi import (
    ACCEPTED_ENCODINGS,
    BodyProblem,
    BodySizeLimitMiddleware,
    decode_body,
    header,
    replay_body,
    send_json,
)
from airflow_project.serving.bounded_http import ReadLimits
from airflow_project.serving.constants import (
    DEFAULT_HOST,
    DEFAULT_HTTP_PORT,
    MAX_BODY_BYTES,
)
from airflow_project.serving.endpoints import KServeAnswers, PredictorEndpoints

log = logging.getLogger(__name__)


def _validation_error_handler(request: Any, exc: Any) -> Any:
    """FastAPI's body validation (the V2 schema, malformed JSON) as a 400, like V1 and the spec."""
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
    message = "; ".join(problems[:5])
    client_error(request, 400, message)
    return JSONResponse(status_code=400, content={"error": message, "detail": detail[:20]})


def _http_exception_handler(request: Any, exc: Any) -> Any:
    """Starlette/FastAPI HTTP errors (404 route, 405, body parse failure) as `{"error": ...}`."""
    from fastapi.responses import JSONResponse

    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    if exc.status_code == 400 and "parsing the body" in detail:
        detail = "body: malformed JSON (" + detail + ")"
    client_error(request, exc.status_code, detail)
    return JSONResponse(status_code=exc.status_code, content={"error": detail},
                        headers=getattr(exc, "headers", None))


_SHOWN = 300
"""Characters of an error message in its log line."""


def client_error(request: Any, status: int, message: str) -> None:
    """The one log line of a client error: WARNING, no traceback (KServe logs each as an ERROR
    with the whole traceback, ~1.6 KB per 400)."""
    log.warning("%s %s -> %d: %s", request.method, request.url.path, status, str(message)[:_SHOWN])


def _kserve_error_handler(status: int) -> Any:
    """An answer for one of KServe's exceptions: `{"error": ...}` with `status`; a 500 is logged
    with its traceback (a fault here), anything else as a client error (one WARNING line)."""

    def handle(request: Any, exc: Exception) -> Any:
        from fastapi.responses import JSONResponse

        if status == 500:
            log.error("%s %s -> 500: %s", request.method, request.url.path, exc, exc_info=exc)
        else:
            client_error(request, status, str(exc))
        return JSONResponse(status_code=status, content={"error": str(exc)})

    return handle


_GUARDED: set[int] = set()


def install_guards(app: Any, max_body_bytes: int = MAX_BODY_BYTES) -> Any:
    """Add the body-size limit and our error answers to KServe's FastAPI app (once, after
    KServe's `create_application`: these handlers replace the ones it registers)."""
    from fastapi.exceptions import RequestValidationError
    from kserve import errors
    from starlette.exceptions import HTTPException as StarletteHTTPException

    if id(app) in _GUARDED:
        return app
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=max_body_bytes)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    # The exceptions KServe's RESTServer._add_exception_handlers maps, with the same statuses
    # (kserve/errors.py), minus its ERROR-with-traceback log line for client errors.
    for exc_type, status in ((errors.InvalidInput, 400), (errors.ModelNotFound, 404), (errors.ModelNotReady, 503),
                             (NotImplementedError, 501), (errors.UnsupportedProtocol, 501),
                             (errors.ServerNotLive, 503), (errors.ServerNotReady, 503),
                             (errors.InferenceError, 500), (Exception, 500)):
        app.add_exception_handler(exc_type, _kserve_error_handler(status))
    _GUARDED.add(id(app))
    return app


def fast_path_app(app: Any, model: Any, max_body_bytes: int = MAX_BODY_BYTES,
                  server_metadata: Mapping[str, Any] | None = None) -> Any:
    """`app` (KServe's FastAPI app, guards installed, as `KServeAnswers`) behind the predict
    fast path and the predictor's own endpoints."""
    return PredictFastPath(app, model, max_body_bytes, server_metadata)


@dataclass(frozen=True)
class PredictorApp:
    server: Any
    """The `kserve.ModelServer` with the model registered."""
    app: Any
    """What is served: the fast path and the predictor's endpoints in front of `kserve_app`."""
    kserve_app: Any
    """KServe's own FastAPI app, routes and guards installed, answering as `KServeAnswers`."""


# KServe's ModelServer settings the predictor chooses differently from KServe's defaults.
SERVER_DEFAULTS: dict[str, Any] = {"enable_grpc": False, "workers": 1, "enable_docs_url": False}


def build_app(model: Any, max_body_bytes: int = MAX_BODY_BYTES, *, http_port: int = DEFAULT_HTTP_PORT,
              server_options: Mapping[str, Any] | None = None, host: str = DEFAULT_HOST,
              limits: ReadLimits | None = None) -> PredictorApp:
    """KServe's model server and app for a loaded model, exactly as `serve()` runs them."""
    from kserve import ModelServer

    kserve_compat.apply(host, limits)
    server = ModelServer(http_port=http_port, **{**SERVER_DEFAULTS, **dict(server_options or {})})
    server.register_model(model)
    kserve_compat.refuse_model_repository(server)
    kserve_compat.harden_dataplane(server.dataplane)
    fastapi_app = kserve_compat.create_application(server)
    kserve_compat.drop_model_repository_routes(fastapi_app)
    install_guards(fastapi_app, max_body_bytes)
    kserve_app = KServeAnswers(fastapi_app)
    metadata = server.dataplane.metadata()
    return PredictorApp(server, fast_path_app(kserve_app, model, max_body_bytes, metadata), kserve_app)


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
    host: str = DEFAULT_HOST,
    limits: ReadLimits | None = None,
) -> None:
    """Load `model_uri` through the MLflow server and serve it as `name` on host:port (blocking)."""
    kserve_compat.check_versions()  # before the model load: an upgrade fails in a second
    model = build_model(model_uri, name, tracking_uri)
    # Everything imported and loaded so far (mlflow, sklearn, pandas, the model) lives as
    # long as the process: move it out of the collector's reach, so that full collections
    # triggered by request garbage do not walk the ~300 000 startup objects.
    gc.collect()
    gc.freeze()
    built = build_app(model, max_body_bytes, http_port=port, server_options=server_options, host=host,
                      limits=limits)
    kserve_compat.log_like_kserve("airflow_project.serving")  # KServe's logging is set up by now
    log.info("serving %s (%s, version %s) on %s:%d", name, model.model_uri, model.model_version, host, port)
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
    """Raw ASGI layer in front of KServe's FastAPI app: the two predict routes, then the
    predictor's own endpoints (`endpoints.PredictorEndpoints`), then KServe.

    Handles `POST /v1/models/<name>:predict` and `POST /v2/models/<name>/infer` (also as
    `/versions/<loaded version>/infer`; JSON body: `Content-Type: application/json`, or none
    or a generic one without the binary extension's header, `protocol.reads_as_json`) for
    the one loaded `WachttijdenModel`: reads the body (bounded by `max_body_bytes`; a
    `Content-Encoding` of gzip or deflate is decoded first, the limit applying to the
    decoded body), parses it with orjson, validates it, answers from the model's
    `TablePredictor`, writes the same JSON KServe's path writes and emits the same one-line
    prediction log (`WachttijdenModel.log_prediction`).

    Everything else goes, unchanged, to the KServe app: other content types, binary V2
    (`inference-header-content-length`), CloudEvents (`ce-*` headers), a model that is not
    ready, an oversized body (KServe's guard answers 413), and ANY body that is not
    plain-valid (malformed JSON, schema or validation problems, values pydantic would
    coerce, ...): the fast path never produces a validation error itself, so status codes
    and messages stay those of the KServe path. Its own answers are only those about the
    body's encoding (415, or 400/413 for a compressed body that does not decode).

    Responses carry `x-request-id` (`request_ids.choose`: the client's when it can be kept
    byte for byte, else the V2 body's `id` when that can be a header value, else a
    generated one; the id in the prediction log line) and `x-model-version`, on both paths.

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

    def __init__(self, app: Any, model: Any, max_body_bytes: int = MAX_BODY_BYTES,
                 server_metadata: Mapping[str, Any] | None = None) -> None:
        from kserve.metrics import POST_HIST_TIME, PRE_HIST_TIME, PREDICT_HIST_TIME

        from airflow_project.serving.constants import FEATURE_COLUMNS, MAX_INSTANCES

        self.app = app
        self.model = model
        self.max_body_bytes = max_body_bytes
        self.features = FEATURE_COLUMNS
        self.max_rows = MAX_INSTANCES
        self.new_request_id = request_ids.new_request_id
        self.v1_path = f"/v1/models/{model.name}:predict"
        self.v2_path = f"/v2/models/{model.name}/infer"
        self._pre = PRE_HIST_TIME.labels(model_name=model.name)
        self._predict = PREDICT_HIST_TIME.labels(model_name=model.name)
        self._post = POST_HIST_TIME.labels(model_name=model.name)
        self.model_version = str(model.model_version)
        self._version_header = self.model_version.encode()
        self.endpoints = PredictorEndpoints(app, model, self, server_metadata)

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
            return await self.endpoints(scope, receive, send)
        path = scope["path"]
        if path == self.v1_path:
            v2 = False
        elif path == self.v2_path:
            v2 = True
        else:  # (the versioned infer path comes back here, as the unversioned one)
            return await self.endpoints(scope, receive, send)
        content_type = None
        request_id = b""
        declared = -1
        encoding = None
        kserve_only = False
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value
            elif key == b"content-length":
                declared = int(value) if value.isdigit() else self.max_body_bytes + 1
            elif key == b"x-request-id":
                if request_id:
                    kserve_only = True  # twice: leave it to KServe
                request_id = value
            elif key == b"content-encoding":
                encoding = value if encoding is None else encoding + b", " + value
            elif key.startswith(b"ce-") or key == b"inference-header-content-length":
                kserve_only = True
        if encoding is None and (kserve_only or content_type != protocol.JSON_TYPE
                                 and not protocol.reads_as_json(content_type)):
            return await self.app(scope, receive, send)
        if content_type != protocol.JSON_TYPE and not kserve_only and protocol.reads_as_json(content_type) and v2:
            scope = _as_json(scope)  # KServe, if the body goes there, must parse it as JSON too, not as tensors
            # (its V1 route hands other types to the model as bytes)
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
        if encoding is not None:
            try:
                body = decode_body(body, encoding, self.max_body_bytes)
            except BodyProblem as exc:
                return await self.refuse_body(scope, send, exc)
            scope = _decoded(scope, len(body))
            if kserve_only or not protocol.reads_as_json(content_type):
                return await self.app(scope, replay_body(body, receive, False), send)

        started = time.perf_counter()
        try:
            doc = _loads(body)
        except _JSON_ERRORS:
            doc = None
        rows, body_id = self._rows(doc, v2)
        if rows is None:
            return await self.app(scope, replay_body(body, receive, False), send)
        if request_id or body_id:
            rid, rid_header = request_ids.choose(request_id, body_id)
        else:
            rid = self.new_request_id()
            rid_header = rid.encode()
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
        except (TypeError, ValueError):
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
                (b"x-model-version", self._version_header),
            ],
        })
        await send({"type": "http.response.body", "body": out})

    async def refuse_body(self, scope: Any, send: Any, problem: BodyProblem) -> None:
        """A compressed body that cannot be used: 415 (naming what is accepted), 400 or 413."""
        headers = [(b"x-request-id", request_ids.choose(header(scope, b"x-request-id"))[1])]
        if problem.status == 415:
            headers.append((b"accept-encoding", ACCEPTED_ENCODINGS.encode()))
        log.warning("%s %s -> %d: %s", scope["method"], scope["path"], problem.status, problem)
        await send_json(send, problem.status, {"error": str(problem)}, headers)


def _decoded(scope: Any, length: int) -> Any:
    """The scope of a request whose body was decoded: no Content-Encoding, the decoded length."""
    headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-encoding", b"content-length")]
    return {**scope, "headers": [*headers, (b"content-length", str(length).encode())]}
