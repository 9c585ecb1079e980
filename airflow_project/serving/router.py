"""The local InferenceGraph router: KServe's router semantics (v0.20) in Python, plus a
mirror mode standing in for Istio's `VirtualService.mirror`.

Run: `python -m airflow_project.serving.router --graph FILE.json --port P [--host H]`. The
graph file (written by the local deploy target), the routing rules and the differences from
KServe's router are described in the README ("Traffic mirroring"); step conditions use the
gjson subset in `serving.gjson`, steps are called through `serving.step_client`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson ships with kserve
    _orjson = None

from airflow_project.serving import gjson
from airflow_project.serving.asgi import (
    ACCEPTED_ENCODINGS,
    BodyProblem,
    BodySizeLimitMiddleware,
    decode_body,
    header,
)
from airflow_project.serving.bounded_http import (
    ReadLimits,
    add_limit_flags,
    http_protocol,
    limits_from,
)
from airflow_project.serving.constants import (
    DEFAULT_HOST,
    GRAPH_ROOT_NODE,
    MAX_BODY_BYTES,
    ROUTER_DEFAULT_PROPAGATE_HEADERS,
    ROUTER_DEFAULT_SERVICE_TIMEOUT_S,
    ROUTER_READINESS_PATH,
    SERVED_MODEL_NAME,
    predict_path,
)
from airflow_project.serving.request_ids import choose
from airflow_project.serving.shadow_guard import ShadowGuard
from airflow_project.serving.step_client import H1Client, StepAnswer, StepClient, StepTransportError

log = logging.getLogger(__name__)

ROUTER_TYPES = ("Sequence", "Ensemble", "Splitter", "Switch")


class GraphError(Exception):
    """A graph-level routing failure with its HTTP status (KServe error body)."""

    def __init__(self, status: int, cause: str) -> None:
        super().__init__(cause)
        self.status = status
        self.cause = cause


def _spec(graph: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = graph.get("spec", graph)
    if "nodes" not in spec or GRAPH_ROOT_NODE not in spec["nodes"]:
        raise ValueError(f"graph must have spec.nodes.{GRAPH_ROOT_NODE}")
    for node_name, node in spec["nodes"].items():
        if node.get("routerType") not in ROUTER_TYPES:
            raise ValueError(f"node {node_name!r}: unknown routerType {node.get('routerType')!r}")
        for step in node.get("steps", []):
            if not (step.get("nodeName") or step.get("serviceName") or step.get("serviceUrl")):
                raise ValueError(f"node {node_name!r}: a step needs nodeName, serviceName or serviceUrl")
            if step.get("nodeName") and step["nodeName"] not in spec["nodes"]:
                raise ValueError(f"node {node_name!r}: unknown nodeName {step['nodeName']!r}")
        if node["routerType"] == "Splitter":
            total = sum(int(s.get("weight") or 0) for s in node.get("steps", []))
            if total != 100:
                raise ValueError(f"node {node_name!r}: Splitter weights sum to {total}, not 100")
    return spec


def _predictions_as_instances(request: bytes) -> bytes:
    """`mapPredictionsToInstances`: the previous step's `predictions` as `instances`."""
    try:
        decoded = json.loads(request)
    except (ValueError, UnicodeDecodeError):
        return request
    if isinstance(decoded, dict) and decoded.get("predictions"):
        return json.dumps({"instances": decoded["predictions"]}).encode()
    return request


def _ok(status: int) -> bool:
    return 200 <= status <= 299


def error_body(cause: str) -> bytes:
    return json.dumps({"error": "Failed to process request", "cause": cause}).encode()


@dataclass
class MirrorConfig:
    primary: str
    shadow: str
    percentage: float = 100.0
    guard: ShadowGuard = field(default_factory=ShadowGuard)
    """What the shadow may cost: copies in flight, backoff after failures (`shadow_guard`)."""


@dataclass
class Router:
    """Executes an InferenceGraph spec (or mirrors) against HTTP services."""

    graph: Mapping[str, Any] | None
    resolve_url: Callable[[str], str]
    client: StepClient
    """How steps are called: `H1Client` in the router process, a fake in unit tests."""
    mirror: MirrorConfig | None = None
    propagate: tuple[str, ...] = ROUTER_DEFAULT_PROPAGATE_HEADERS
    rng: random.Random = field(default_factory=random.Random)
    _background: set[asyncio.Task[Any]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.spec = _spec(self.graph) if self.graph is not None else None
        if self.spec is None and self.mirror is None:
            raise ValueError("need a graph or a mirror configuration")
        self._patterns = [re.compile(p) for p in self.propagate]
        self._route = {"Sequence": self._sequence, "Ensemble": self._ensemble, "Splitter": self._splitter,
                       "Switch": self._switch}

    def forward_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        out = {k: v for k, v in headers.items() if any(p.search(k) for p in self._patterns)}
        out["content-type"] = "application/json"
        return out

    async def call_service(self, url: str, body: bytes, headers: Mapping[str, str]) -> StepAnswer:
        return await self.client.post(url, body, headers)

    def _step_url(self, step: Mapping[str, Any]) -> str:
        return step.get("serviceUrl") or self.resolve_url(step["serviceName"])

    async def execute_step(self, step: Mapping[str, Any], body: bytes, headers: Mapping[str, str]) -> StepAnswer:
        if step.get("nodeName"):
            return await self.route_node(step["nodeName"], body, headers)
        return await self.call_service(self._step_url(step), body, headers)

    async def route_node(self, node_name: str, body: bytes, headers: Mapping[str, str]) -> StepAnswer:
        assert self.spec is not None
        node = self.spec["nodes"][node_name]
        return await self._route[node["routerType"]](list(node.get("steps") or []), body, headers)

    async def _sequence(self, steps: Sequence[Mapping[str, Any]], body: bytes,
                        headers: Mapping[str, str]) -> StepAnswer:
        """Steps in order, each with the original request or (`data: $response`) the previous
        answer; a Hard step's non-2xx ends the graph; the last answer is returned."""
        answer: StepAnswer | None = None
        for i, step in enumerate(steps):
            response = answer.body if answer is not None else None
            request = response if step.get("data") == "$response" and i > 0 and response is not None else body
            if step.get("mapPredictionsToInstances"):
                request = _predictions_as_instances(request)
            if step.get("condition"):
                exists = gjson.exists(response or b"", step["condition"])
                if exists is None:
                    raise GraphError(500, "invalid response")
                if not exists:
                    return StepAnswer(response or b"", 200, answer.version if answer is not None else None)
            answer = await self.execute_step(step, request, headers)
            if step.get("dependency") == "Hard" and not _ok(answer.status):
                return answer
        return answer if answer is not None else StepAnswer(b"", 200)

    async def _ensemble(self, steps: Sequence[Mapping[str, Any]], body: bytes,
                        headers: Mapping[str, str]) -> StepAnswer:
        """All steps at once; `{step name or index: answer}`, unless a Hard step failed. The
        merged answer says no version (several answered)."""
        results = await asyncio.gather(*(self.execute_step(s, body, headers) for s in steps), return_exceptions=True)
        merged: dict[str, Any] = {}
        for i, (step, result) in enumerate(zip(steps, results)):
            if isinstance(result, BaseException):
                raise result
            content, status, version = result
            try:
                parsed = json.loads(content)
            except (ValueError, UnicodeDecodeError) as exc:
                raise StepTransportError(f"step {step.get('name') or i}: response is not JSON: {exc}") from exc
            if not isinstance(parsed, dict):
                raise StepTransportError(f"step {step.get('name') or i}: response is not a JSON object")
            if not _ok(status) and step.get("dependency") == "Hard":
                return StepAnswer(json.dumps(parsed).encode(), status, version)
            merged[step.get("name") or str(i)] = parsed
        return StepAnswer(json.dumps(merged).encode(), 200)

    async def _splitter(self, steps: Sequence[Mapping[str, Any]], body: bytes,
                        headers: Mapping[str, str]) -> StepAnswer:
        """One step, picked at random by `weight` (the weights sum to 100)."""
        point, end = self.rng.randrange(100), 0
        for step in steps:
            end += int(step.get("weight") or 0)
            if point < end:
                return await self.execute_step(step, body, headers)
        raise GraphError(500, "no route was selected by the splitter")

    async def _switch(self, steps: Sequence[Mapping[str, Any]], body: bytes,
                      headers: Mapping[str, str]) -> StepAnswer:
        """The first step whose `condition` matches the request; none: 404."""
        for step in steps:
            if gjson.exists(body, step.get("condition", "")):
                return await self.execute_step(step, body, headers)
        raise GraphError(404, "None of the routes matched with the switch condition")

    async def handle(self, body: bytes, headers: Mapping[str, str]) -> StepAnswer:
        """Run the graph (or the mirror) for one request. `headers` are the request's, as
        latin-1 strings (the bytes they arrived as); `x-request-id` among them is forwarded
        when it can be kept (`request_ids.choose`), else replaced, so every step logs one id."""
        forwarded = self.forward_headers(headers)
        incoming = headers.get("x-request-id")
        _, rid = choose(incoming.encode("latin-1") if incoming else None, where="router: ")
        forwarded["x-request-id"] = rid.decode("latin-1")
        try:
            if self.mirror is not None:
                return await self._mirror(body, forwarded)
            return await self.route_node(GRAPH_ROOT_NODE, body, forwarded)
        except GraphError as exc:
            log.warning("graph error: %s", exc.cause)
            return StepAnswer(error_body(exc.cause), exc.status)
        except StepTransportError as exc:
            log.warning("step failed: %s", exc)
            return StepAnswer(error_body(str(exc)), 500)

    async def _mirror(self, body: bytes, headers: Mapping[str, str]) -> StepAnswer:
        assert self.mirror is not None
        if self.rng.random() * 100.0 < self.mirror.percentage and self.mirror.guard.admit():
            task = asyncio.create_task(self._shadow(body, headers))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return await self.call_service(self.resolve_url(self.mirror.primary), body, headers)

    async def _shadow(self, body: bytes, headers: Mapping[str, str]) -> None:
        """One copy, admitted by the guard; its answer is ignored, its failures only counted
        (and reported at most every few seconds)."""
        assert self.mirror is not None
        guard, shadow = self.mirror.guard, self.mirror.shadow
        try:
            answer = await self.call_service(self.resolve_url(shadow), body, headers)
            guard.done(reached=True, ok=_ok(answer.status))
        except StepTransportError as exc:
            backoff = guard.done(reached=False)
            log.warning("shadow %s unreachable (%s): no copies for %.0f s", shadow, exc, backoff)
        except BaseException:
            guard.done(reached=False)
            raise
        counts = guard.report()
        if counts:
            log.warning("shadow %s copies: %d sent, dropped %d while %d were in flight (a slow shadow), "
                        "%d while it was unreachable; %d failed, %d answered non-2xx", shadow, counts["sent"],
                        counts["busy"], guard.max_in_flight, counts["breaker"], counts["failed"],
                        counts["answered_non_2xx"])


_READY_BODY = b'{"ready": true}'
_GRAPH_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"))


def _is_json(content: bytes) -> bool:
    if _orjson is not None:
        try:
            _orjson.loads(content)
            return True
        except ValueError:
            pass  # orjson is stricter (NaN, huge ints): ask json
    try:
        json.loads(content)
        return True
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False


def build_app(router: Router, max_body_bytes: int = MAX_BODY_BYTES) -> Any:
    """The raw ASGI app: `GET /readyz` -> 200, anything else runs the graph.

    Same routing as the previous Starlette app: GET/HEAD `/readyz` answers, any path with
    GET/HEAD/POST/PUT/PATCH/DELETE runs the graph, other methods get 405. The response is
    `application/json` when the body is JSON. Lifespan shutdown closes the HTTP client.
    A body above `max_body_bytes` (the predictor's limit) is answered 413 before anything
    is buffered or forwarded: KServe's router has no limit, but its cluster ingress does.
    A gzip or deflate body is decoded first (the limit applies to the decoded body too;
    another encoding is a 415), so conditions see, and steps get, the JSON.

    Every answer carries `x-request-id` (the caller's when it can be kept byte for byte,
    else a new one: the id every step was called with) and, when the answering step said
    one, its `x-model-version`.
    """

    async def send_response(send: Any, status: int, content: bytes, media: bytes | None,
                            extra: list[tuple[bytes, bytes]]) -> None:
        headers = [(b"content-length", str(len(content)).encode()), *extra]
        if media is not None:
            headers.append((b"content-type", media))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    async def app(scope: Any, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    with contextlib.suppress(Exception):
                        await router.client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if kind != "http":
            return
        method = scope["method"]
        _, rid = choose(header(scope, b"x-request-id"), where="router: ")
        ids = [(b"x-request-id", rid)]
        if scope["path"] == ROUTER_READINESS_PATH and method in ("GET", "HEAD"):
            await send_response(send, 200, _READY_BODY, b"application/json", ids)
            return
        if method not in _GRAPH_METHODS:
            await send_response(send, 405, b"Method Not Allowed", b"text/plain; charset=utf-8", ids)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        headers["x-request-id"] = rid.decode("latin-1")
        coding = headers.get("content-encoding")
        if coding is not None:
            try:
                body = decode_body(body, coding.encode("latin-1"), max_body_bytes)
            except BodyProblem as exc:
                log.warning("%s %s -> %d: %s", method, scope["path"], exc.status, exc)
                if exc.status == 415:
                    ids.append((b"accept-encoding", ACCEPTED_ENCODINGS.encode()))
                await send_response(send, exc.status, json.dumps({"error": str(exc)}).encode(),
                                    b"application/json", ids)
                return
        answer = await router.handle(body, headers)
        if answer.version:
            ids.append((b"x-model-version", answer.version))
        await send_response(send, answer.status, answer.body,
                            b"application/json" if _is_json(answer.body) else None, ids)

    return BodySizeLimitMiddleware(app, max_body_bytes)


def url_resolver(
    services: Mapping[str, str],
    model_names: Mapping[str, str] | None = None,
    protocol: str = "v1",
) -> Callable[[str], str]:
    """serviceName -> `<base>/v1/models/<model>:predict`, like KServe's graph controller."""
    model_names = dict(model_names or {})

    def resolve(service_name: str) -> str:
        try:
            base = services[service_name].rstrip("/")
        except KeyError:
            raise StepTransportError(f"service {service_name!r} has no URL in the graph file") from None
        return base + predict_path(model_names.get(service_name, SERVED_MODEL_NAME), protocol)

    return resolve


def _timeout(graph: Mapping[str, Any] | None) -> float:
    if graph is None:
        return ROUTER_DEFAULT_SERVICE_TIMEOUT_S
    spec = graph.get("spec", graph)
    value = (spec.get("routerTimeouts") or {}).get("serviceClient")
    return float(value) if value else ROUTER_DEFAULT_SERVICE_TIMEOUT_S


def router_from_file_config(config: Mapping[str, Any], client: Any = None) -> Router:
    """Build a Router from the graph-file dict (format in the module docstring)."""
    mode = config.get("mode", "mirror" if "mirror" in config and "graph" not in config else "graph")
    if mode not in ("graph", "mirror"):
        raise ValueError(f"mode must be 'graph' or 'mirror', got {mode!r}")
    graph = config.get("graph")
    mirror = None
    if mode == "mirror":
        m = config.get("mirror") or {}
        if not m.get("primary") or not m.get("shadow"):
            raise ValueError("mirror mode needs mirror.primary and mirror.shadow")
        mirror = MirrorConfig(m["primary"], m["shadow"], float(m.get("percentage", 100.0)))
        graph = None
    elif graph is None:
        raise ValueError("graph mode needs 'graph'")
    resolve = url_resolver(config.get("services", {}), config.get("model_names"), config.get("protocol", "v1"))
    client = client or H1Client(timeout=_timeout(graph))
    return Router(graph=graph, resolve_url=resolve, client=client, mirror=mirror)


def serve_router(router: Router, host: str, port: int, limits: ReadLimits | None = None) -> None:
    """Serve `router` on host:port in the foreground (uvicorn; one write per response and
    bounded reads, `bounded_http`)."""
    import uvicorn

    uvicorn.run(build_app(router), host=host, port=port, log_level="warning", http=http_protocol(limits))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m airflow_project.serving.router")
    parser.add_argument("--graph", required=True, help="graph file (JSON, see module docstring)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default=DEFAULT_HOST)
    add_limit_flags(parser)
    args = parser.parse_args(argv)
    with open(args.graph, encoding="utf-8") as fh:
        config = json.load(fh)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve_router(router_from_file_config(config), args.host, args.port, limits_from(args))


if __name__ == "__main__":
    main()
