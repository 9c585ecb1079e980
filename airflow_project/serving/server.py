"""Run the wachttijden predictor with `kserve.ModelServer` (REST only, one process).

`serve(model_uri, name, port, tracking_uri)` loads the model through the MLflow
tracking server, then serves it in the foreground until SIGINT/SIGTERM. The HTTP port
only opens once the model is loaded, so `GET /v2/models/<name>/ready` answering 200
means "ready to predict".

KServe serves its endpoints on one module-level FastAPI app (`kserve.model_server.app`).
`install_guards(app)` adds what KServe lacks for hostile input:
- a body-size limit (`asgi.BodySizeLimitMiddleware`: 413 with a JSON error, before
  anything is parsed),
- request-validation errors (FastAPI's 422 for V2 bodies that do not match the Open
  Inference Protocol schema) rendered as `{"error": "<field>: <problem>", "detail": [...]}`
  without echoing the input.

`PredictFastPath` (installed by `serve()`) answers valid JSON V1/V2 predict requests
without FastAPI/pydantic and delegates everything else to the KServe app; see its
docstring for what it handles and which Prometheus metrics it updates.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from typing import Any

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


def harden_dataplane(dataplane: Any) -> Any:
    """Make KServe's binary V2 decoding (`inference-header-content-length`) answer 400.

    `InferRequest.from_bytes` indexes the JSON header without checks, so a malformed
    binary request raises KeyError/TypeError (a 500). Wrap it on this dataplane instance.
    """
    import struct

    from kserve.errors import InferenceError, InvalidInput

    original = dataplane.decode_inference_request

    def decode_inference_request(body: Any, headers: Any, model_name: str) -> Any:
        try:
            return original(body, headers, model_name)
        except InvalidInput:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, struct.error,
                InferenceError) as exc:
            raise InvalidInput(
                f"body: malformed binary inference request ({type(exc).__name__}: {exc})"
            ) from None

    dataplane.decode_inference_request = decode_inference_request
    return dataplane


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
) -> None:
    """Load `model_uri` through the MLflow server and serve it as `name` on `port` (blocking)."""
    model = build_model(model_uri, name, tracking_uri)
    # Everything imported and loaded so far (mlflow, sklearn, pandas, the model) lives as
    # long as the process: move it out of the collector's reach, so that full collections
    # triggered by request garbage do not walk the ~300 000 startup objects.
    gc.collect()
    gc.freeze()
    from kserve import ModelServer
    from kserve import model_server as kserve_model_server

    server = ModelServer(http_port=port, enable_grpc=False, workers=1, enable_docs_url=False)
    install_guards(kserve_model_server.app, max_body_bytes)
    harden_dataplane(server.dataplane)
    # KServe hands this module global to uvicorn as the app (it registers its routes and
    # middlewares on `kserve_model_server.app` itself): serve the fast path in front of it.
    kserve_model_server.FASTAPI_APP_IMPORT_STRING = fast_path_app(kserve_model_server.app, model, max_body_bytes)
    _use_write_coalescing(kserve_model_server)
    _use_uvloop(server.event_loop)
    log.info("serving %s (%s, version %s) on port %d", name, model.model_uri, model.model_version, port)
    server.start([model])


def _use_write_coalescing(kserve_model_server: Any) -> None:
    """Have the uvicorn server KServe builds write each response in one socket write.

    `ModelServer.start()` creates its `RESTServer` (and with it the `uvicorn.Config`) from
    the name in `kserve.model_server`, so a subclass put there is the one place to choose
    uvicorn's HTTP protocol class (see `write_coalescing`).
    """
    from kserve.protocol.rest.server import RESTServer

    from airflow_project.serving.write_coalescing import HTTP_PROTOCOL

    class CoalescingRESTServer(RESTServer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.config.http = HTTP_PROTOCOL

    kserve_model_server.RESTServer = CoalescingRESTServer


def _use_uvloop(event_loop: str) -> bool:
    """Run KServe's server on uvloop when its `event_loop` setting allows it.

    `ModelServer.start()` runs its servers with `asyncio.run()`, which creates a loop from
    the current policy: uvicorn's `loop` setting ("auto" = uvloop when installed) is
    never applied, so KServe serves on the stdlib loop. Setting the policy first gives
    the loop KServe's setting asks for.
    """
    if event_loop not in ("auto", "uvloop"):
        return False
    try:
        import uvloop
    except ImportError:
        return False
    import asyncio

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # KServe's setup_event_loop() calls asyncio.get_event_loop() outside a running loop,
    # which uvloop's policy (unlike the stdlib's) does not answer with an implicit loop.
    asyncio.set_event_loop(asyncio.new_event_loop())
    return True


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


def _v1_rows(body: Any, features: tuple[str, ...], max_rows: int) -> list[tuple[str, ...]] | None:
    """Rows of a valid V1 body (exactly what `parse_v1` accepts), else None."""
    if type(body) is not dict or len(body) != 1:
        return None
    instances = body.get("instances")
    if type(instances) is not list or not 0 < len(instances) <= max_rows:
        return None
    wanted = set(features)
    rows = []
    for instance in instances:
        if type(instance) is not dict or instance.keys() != wanted:
            return None
        row = tuple(instance[f] for f in features)
        for value in row:
            if type(value) is not str:
                return None
        rows.append(row)
    return rows


_V2_TOP = frozenset(("id", "parameters", "inputs", "outputs"))
_V2_INPUT = frozenset(("name", "shape", "datatype", "data", "parameters"))
_V2_PLAIN_INPUT = frozenset(("name", "shape", "datatype", "data"))


def _v2_rows(body: Any, features: tuple[str, ...], max_rows: int) -> tuple[list[tuple[str, ...]], str | None] | None:
    """(rows, body id) of a canonical valid V2 JSON body, else None.

    Accepts a strict subset of what KServe's pydantic schema plus `parse_v2` accept (no
    coercions: ints are ints, strings are strings); everything else goes to KServe.
    """
    if type(body) is not dict or not body.keys() <= _V2_TOP:
        return None
    body_id = body.get("id")
    if body_id is not None and type(body_id) is not str:
        return None
    params = body.get("parameters")
    if params is not None and not (type(params) is dict and (not params or params == {"content_type": "pd"})):
        return None
    if body.get("outputs") is not None:
        return None
    inputs = body.get("inputs")
    if type(inputs) is not list or len(inputs) != len(features):
        return None
    by_name: dict[str, list[Any]] = {}
    n_rows = -1
    for inp in inputs:  # one pass: each input is checked whole, its values kept by name
        if type(inp) is not dict:
            return None
        keys = inp.keys()
        if keys != _V2_PLAIN_INPUT and (not keys <= _V2_INPUT or inp.get("parameters") is not None):
            return None
        name = inp.get("name")
        shape = inp.get("shape")
        values = inp.get("data")
        if (type(name) is not str or name in by_name or inp.get("datatype") != "BYTES"
                or type(shape) is not list or type(values) is not list):
            return None
        if len(shape) == 2:  # [n, 1]: one single-element list per row
            if type(shape[1]) is not int or shape[1] != 1:
                return None
            nested, values = values, []
            for row in nested:
                if type(row) is not list or len(row) != 1:
                    return None
                values.append(row[0])
        elif len(shape) != 1:
            return None
        n = shape[0]
        if type(n) is not int or n != len(values) or (n_rows >= 0 and n != n_rows):
            return None
        n_rows = n
        for value in values:
            if type(value) is not str:
                return None
        by_name[name] = values
    try:  # as many inputs as features, with unique names: either all are there or one is not
        columns = [by_name[f] for f in features]
    except KeyError:
        return None
    if not 0 < n_rows <= max_rows:
        return None
    return list(zip(*columns)), body_id


class PredictFastPath:
    """Raw ASGI layer in front of KServe's FastAPI app for the two predict routes.

    Handles `POST /v1/models/<name>:predict` and `POST /v2/models/<name>/infer` (JSON
    body, `Content-Type: application/json`) for the one loaded `WachttijdenModel`:
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
    (`_skip_server_access_line`). Two lines per prediction, one unstructured, cost more
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
        self.features = tuple(FEATURE_COLUMNS)
        self.max_rows = MAX_INSTANCES
        self.new_request_id = new_request_id
        self.v1_path = f"/v1/models/{model.name}:predict"
        self.v2_path = f"/v2/models/{model.name}/infer"
        self._pre = PRE_HIST_TIME.labels(model_name=model.name)
        self._predict = PREDICT_HIST_TIME.labels(model_name=model.name)
        self._post = POST_HIST_TIME.labels(model_name=model.name)
        # The constant prefix of every V2 response (field order as KServe writes it).
        self._v2_head = (
            b'{"model_name":' + _dumps(model.name) + b',"model_version":' + _dumps(str(model.model_version))
            + b',"id":'
        )

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
        json_type = False
        request_id = b""
        declared = -1
        for key, value in scope["headers"]:
            if key == b"content-type":
                json_type = value == b"application/json"
            elif key == b"content-length":
                declared = int(value) if value.isdigit() else self.max_body_bytes + 1
            elif key == b"x-request-id":
                if request_id:
                    return await self.app(scope, receive, send)  # duplicate: leave it to KServe
                request_id = value
            elif key.startswith(b"ce-") or key in (b"inference-header-content-length", b"content-encoding"):
                return await self.app(scope, receive, send)
        if not json_type or declared > self.max_body_bytes or not self.model.ready:
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
            if total > self.max_body_bytes:
                return await self.app(scope, replay_body(b"".join(chunks), receive, True), send)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)

        started = time.perf_counter()
        try:
            doc = _loads(body)
        except _JSON_ERRORS:
            doc = None
        parsed = None
        if doc is not None:
            parsed = _v2_rows(doc, self.features, self.max_rows) if v2 else _v1_rows(doc, self.features, self.max_rows)
        if parsed is None:
            return await self.app(scope, replay_body(body, receive, False), send)
        if v2:
            rows, body_id = parsed  # type: ignore[misc]
        else:
            rows, body_id = parsed, None  # type: ignore[assignment]
        rid = request_id.decode("latin-1") if request_id else (body_id if v2 and body_id else self.new_request_id())
        t_pre = time.perf_counter()
        predictions = self.model.predictor.predict(rows)
        t_pred = time.perf_counter()
        for x in predictions:
            if not _plain_float(x):  # NaN/inf or exponent notation: let KServe encode it
                return await self.app(scope, replay_body(body, receive, False), send)
        try:
            if v2:
                out = (
                    self._v2_head + _dumps(body_id or rid)
                    + b',"parameters":null,"outputs":[{"name":"predictions","shape":['
                    + str(len(predictions)).encode() + b'],"datatype":"FP64","parameters":null,"data":'
                    + _dumps(predictions) + b"}]}"
                )
            else:
                out = b'{"predictions":' + _dumps(predictions) + b"}"
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
        _skip_server_access_line(send)
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


def _skip_server_access_line(send: Any) -> None:
    """Ask uvicorn not to write its access line for this request.

    uvicorn decides per request, when the response starts, from the `access_log` attribute
    of the request's `RequestResponseCycle`, whose bound `send` the app is given. Under
    any other server (or a wrapped `send`) nothing changes and both lines are written.
    """
    cycle = getattr(send, "__self__", None)
    if getattr(cycle, "access_log", None) is True:
        cycle.access_log = False  # type: ignore[union-attr]
