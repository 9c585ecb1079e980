"""What the predictor answers itself besides predictions, and how KServe's answers leave.

`PredictorEndpoints` sits behind the prediction fast path (`server.PredictFastPath`) and in
front of KServe's FastAPI app:

- health, GET and HEAD: `/` and `/v2/health/live` (the process answers), `/v2/health/ready`,
  `/v2/models/<name>/ready`, `/v1/models/<name>` and `/v2/models/<name>/versions/<v>/ready`:
  ready only while the model is loaded and answers (`WachttijdenModel.answering`), else 503.
  KServe's own server readiness is always true and its model readiness follows a flag that
  its model repository extension could clear for good (that extension is not served:
  `kserve_compat.drop_model_repository_routes`);
- metadata: `/v2` (also `/v2/`, the spec's spelling) without the repository extension, and
  `/v2/models/<name>` with `versions: ["<loaded version>"]` (KServe writes `null`);
- versioned paths: `/v2/models/<name>/versions/<v>`, `.../ready` and `.../infer` answer for
  the loaded version (KServe answers 501 "Model versioning not supported yet") and 404 with
  a JSON error naming the loaded version for any other;
- predict paths asked with another method than POST: 405 with `Allow: POST` (KServe took
  `GET /v1/models/<name>:predict` for a model named `<name>:predict`, 404);
- everything else: KServe's app, through `KServeAnswers`.

Every answer carries `x-request-id`; each client error is one WARNING line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from airflow_project.serving import protocol, request_ids
from airflow_project.serving.asgi import header, send_json

log = logging.getLogger(__name__)

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson ships with kserve
    _orjson = None

_READ = ("GET", "HEAD")
_READ_ALLOW = [(b"allow", b"GET, HEAD")]
_POST_ALLOW = [(b"allow", b"POST")]


def _with_request_id(scope: Mapping[str, Any], headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [*headers, (b"x-request-id", request_ids.choose(header(scope, b"x-request-id"))[1])]


class PredictorEndpoints:
    """The predictor's own non-prediction answers (module docstring), then KServe."""

    def __init__(self, kserve_app: Any, model: Any, predict: Callable[[Any, Any, Any], Awaitable[None]],
                 server_metadata: Mapping[str, Any] | None = None) -> None:
        """`predict`: the ASGI app answering `POST /v2/models/<name>/infer` (the fast path)."""
        self.app = kserve_app
        self.model = model
        self.predict = predict
        name, version = model.name, str(model.model_version)
        self.name, self.version = name, version
        server = dict(server_metadata or {})
        self.server_metadata = {"name": server.get("name", "kserve"), "version": str(server.get("version", "")),
                                "extensions": []}
        live = self._live
        self.reads: dict[str, Callable[[], tuple[int, Any]]] = {
            "/": lambda: (200, {"status": "alive"}),
            "/v2/health/live": live,
            "/v2/health/ready": self._server_ready,
            "/v2": lambda: (200, self.server_metadata),
            "/v2/": lambda: (200, self.server_metadata),
            f"/v2/models/{name}": self._metadata,
            f"/v2/models/{name}/versions/{version}": self._metadata,
            f"/v2/models/{name}/ready": self._model_ready,
            f"/v2/models/{name}/versions/{version}/ready": self._model_ready,
            f"/v1/models/{name}": self._model_ready,
        }
        self.versioned_infer = f"/v2/models/{name}/versions/{version}/infer"
        self.unversioned_infer = f"/v2/models/{name}/infer"

    # ---- answers
    @staticmethod
    def _live() -> tuple[int, Any]:
        return 200, {"live": True}

    def _not_ready(self) -> tuple[int, Any]:
        return 503, {"error": f"model {self.name} (version {self.version}) is not ready"}

    def _server_ready(self) -> tuple[int, Any]:
        return (200, {"ready": True}) if self.model.answering() else self._not_ready()

    def _model_ready(self) -> tuple[int, Any]:
        return (200, {"name": self.name, "ready": True}) if self.model.answering() else self._not_ready()

    def _metadata(self) -> tuple[int, Any]:
        return 200, {"name": self.name, "versions": [self.version], "platform": "",
                     "inputs": self.model.get_input_types(), "outputs": self.model.get_output_types()}

    async def _answer(self, scope: Any, send: Any, status: int, content: Any, headers: Any = ()) -> None:
        if status >= 400:
            log.warning("%s %s -> %d: %s", scope["method"], scope["path"], status, content.get("error", ""))
        await send_json(send, status, content, _with_request_id(scope, list(headers)))

    # ---- routing
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)  # lifespan
        method, path = scope["method"], scope["path"]
        read = self.reads.get(path)
        if read is not None:
            if method not in _READ:
                return await self._answer(scope, send, 405, {"error": f"{method} {path}: use GET or HEAD"}, _READ_ALLOW)
            status, content = read()
            return await self._answer(scope, send, status, content)
        if path == self.versioned_infer:
            if method != "POST":
                return await self._answer(scope, send, 405, self._post_only(method, path), _POST_ALLOW)
            return await self.predict({**scope, "path": self.unversioned_infer,
                                       "raw_path": self.unversioned_infer.encode()}, receive, send)
        if path.startswith("/v2/models/") and "/versions/" in path:
            return await self._other_version(scope, send, path)
        if _is_predict_path(path) and method != "POST":
            return await self._answer(scope, send, 405, self._post_only(method, path), _POST_ALLOW)
        return await self.app(scope, receive, send)

    @staticmethod
    def _post_only(method: str, path: str) -> dict[str, str]:
        return {"error": f"{method} {path}: predictions are POST requests with a JSON body"}

    async def _other_version(self, scope: Any, send: Any, path: str) -> None:
        model, _, rest = path[len("/v2/models/"):].partition("/versions/")
        version, _, tail = rest.partition("/")
        if model != self.name:
            message = f"model {model!r} is not served here; this server serves {self.name!r} version {self.version}"
        elif tail not in ("", "ready", "infer"):
            message = f"{path}: no such endpoint; a version has '', '/ready' and '/infer'"
        else:
            message = (f"model {self.name!r} version {version!r} is not served here; "
                       f"this server serves version {self.version}")
        await self._answer(scope, send, 404, {"error": message})


def _is_predict_path(path: str) -> bool:
    if path.startswith("/v1/models/"):
        return path.endswith((":predict", ":explain"))
    return path.startswith("/v2/models/") and path.endswith("/infer")


class KServeAnswers:
    """KServe's FastAPI app, as the predictor answers with it.

    - `x-request-id` on every answer (KServe's path sets none on errors, and none on
      predictions unless the model does: `WachttijdenModel.predict` does);
    - V2 inference answers without `null` where the spec's schema has an object or an array:
      KServe returns its pydantic `InferenceResponse` from a route without a response model,
      which FastAPI serializes with every unset field as `null`
      (`fastapi/routing.py: serialize_response`, `jsonable_encoder`), so `parameters: null`
      at the top and in each output. Only JSON 200 answers of `/v2/models/.../infer` are
      re-encoded (off the fast path: KServe answers only unusual or bad requests).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    def __getattr__(self, name: str) -> Any:  # FastAPI's attributes (routes, state, ...) for callers
        return getattr(self.app, name)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        v2_infer = scope["method"] == "POST" and scope["path"].startswith("/v2/models/") \
            and scope["path"].endswith("/infer")
        held: dict[str, Any] | None = None
        chunks: list[bytes] = []

        async def answer(message: Any) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers = _with_request_id(scope, headers)
                message = {**message, "headers": headers}
                if v2_infer and message["status"] == 200 and _is_json(headers):
                    held = message
                    return
                return await send(message)
            if held is None or message["type"] != "http.response.body":
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = _spec_shaped(b"".join(chunks))
            headers = [(k, v) for k, v in held["headers"] if k.lower() != b"content-length"]
            await send({**held, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, answer)


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k.lower() == b"content-type" and v.split(b";")[0].strip() == b"application/json" for k, v in headers)


def _spec_shaped(body: bytes) -> bytes:
    try:
        doc = _orjson.loads(body) if _orjson is not None else json.loads(body)
    except ValueError:
        return body
    shaped = protocol.without_nulls(doc)
    if shaped == doc:
        return body
    return _orjson.dumps(shaped) if _orjson is not None else json.dumps(shaped).encode()
