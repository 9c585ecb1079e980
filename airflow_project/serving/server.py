"""Run the wachttijden predictor with `kserve.ModelServer` (REST only, one process).

`serve(model_uri, name, port, tracking_uri)` loads the model through the MLflow
tracking server, then serves it in the foreground until SIGINT/SIGTERM. The HTTP port
only opens once the model is loaded, so `GET /v2/models/<name>/ready` answering 200
means "ready to predict".

KServe serves its endpoints on one module-level FastAPI app (`kserve.model_server.app`).
`install_guards(app)` adds what KServe lacks for hostile input:
- a body-size limit (413 with a JSON error, before anything is parsed),
- request-validation errors (FastAPI's 422 for V2 bodies that do not match the Open
  Inference Protocol schema) rendered as `{"error": "<field>: <problem>", "detail": [...]}`
  without echoing the input.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from airflow_project.serving.constants import DEFAULT_HTTP_PORT, MAX_BODY_BYTES

log = logging.getLogger(__name__)


class BodySizeLimitMiddleware:
    """Pure ASGI middleware: reject request bodies above `max_bytes` with 413.

    Checks Content-Length first, then counts streamed (chunked) bytes; the body is
    buffered (bounded by the limit) and replayed to the app.
    """

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Any, size: str) -> None:
        body = json.dumps(
            {"error": f"body: request body of {size} bytes exceeds the limit of {self.max_bytes} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await self._reject(send, str(declared))
                    return
        chunks: list[bytes] = []
        total = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await self._reject(send, f"more than {self.max_bytes}")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


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
    from kserve import ModelServer
    from kserve import model_server as kserve_model_server

    server = ModelServer(http_port=port, enable_grpc=False, workers=1, enable_docs_url=False)
    install_guards(kserve_model_server.app, max_body_bytes)
    harden_dataplane(server.dataplane)
    log.info("serving %s (%s, version %s) on port %d", name, model.model_uri, model.model_version, port)
    server.start([model])
