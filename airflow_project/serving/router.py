"""Local InferenceGraph router: KServe's router semantics in Python, plus a mirror mode.

Run: `python -m airflow_project.serving.router --graph FILE.json --port P [--host H]`.

Graph file (JSON object):

    {
      "graph":    <InferenceGraph manifest (as built by manifests.inference_graph) or its spec>,
      "services": {"<serviceName>": "http://127.0.0.1:8001", ...},
      "model_names": {"<serviceName>": "wachttijden"},   # optional, default "wachttijden"
      "protocol": "v1",                                     # optional, "v1" | "v2"
      "mode": "graph",                                      # optional, "graph" | "mirror"
      "mirror": {"primary": "<serviceName>", "shadow": "<serviceName>", "percentage": 100}
    }

`services` maps each InferenceService name to its base URL; like KServe's controller the
router calls `<base>/v1/models/<model name>:predict` (or `/v2/models/<m>/infer` with
`"protocol": "v2"`). A step's own `serviceUrl` wins over `serviceName`.

Semantics (from KServe's `cmd/router/main.go`):
- The request path is ignored: every request except `GET /readyz` runs the graph from
  node `root`. `/readyz` answers 200.
- Sequence: steps in order; each gets the original request, or the previous step's
  body with `data: $response`. A step with a `condition` runs only if the previous
  response matches it (gjson), otherwise that response is returned with 200.
  `mapPredictionsToInstances` turns `predictions` into `instances`. A Hard step
  answering non-2xx stops the graph and its body/status are returned; Soft continues.
  The last step's body and status are returned.
- Ensemble: steps in parallel; `{stepName or index: response}` with 200; the first (in
  step order) failed Hard step decides body and status instead.
- Splitter: one step picked at random by `weight` (summing to 100).
- Switch: the first step whose gjson `condition` exists in the request; none -> 404.
- Transport errors (connection refused, timeout, unreadable body) -> 500
  `{"error": "Failed to process request", "cause": "..."}`, also for Soft steps.
- Headers matching the propagate patterns (x-request-id, authorization, traceparent,
  x-b3-*) are forwarded; Content-Type is application/json. The local router adds an
  `x-request-id` when the client sent none, so primary and shadow log the same id.

Steps are called through `H1Client` (a minimal keep-alive HTTP/1.1 client on asyncio +
httptools, idle-connection pool per service; `https://` steps go through aiohttp's
`PooledClient`), closed at shutdown; the HTTP side is a raw ASGI app on uvicorn, behind the
predictor's body-size limit (413 above `MAX_BODY_BYTES`).

Mirror mode (`"mode": "mirror"`): the local stand-in for Istio `VirtualService.mirror`:
the request goes to the primary, whose answer (body and status) is returned; a copy is
sent to the shadow (for `percentage` % of requests) without waiting; shadow failures are
logged and ignored.

Only a subset of gjson is implemented for conditions: dotted paths with `\\.` escapes,
array indexes, `#` (length), `#(key op value)` / `#(...)#` queries with ==, !=, <, <=,
>, >=, % (glob), and a leading `[@this]` / `@this`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import json
import logging
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson ships with kserve
    _orjson = None

from airflow_project.serving.asgi import BodySizeLimitMiddleware
from airflow_project.serving.constants import (
    GRAPH_ROOT_NODE,
    MAX_BODY_BYTES,
    ROUTER_DEFAULT_PROPAGATE_HEADERS,
    ROUTER_DEFAULT_SERVICE_TIMEOUT_S,
    ROUTER_READINESS_PATH,
    SERVED_MODEL_NAME,
    predict_path,
)
from airflow_project.serving.request_ids import new_request_id

log = logging.getLogger(__name__)

_MISSING = object()


class StepTransportError(Exception):
    """A step could not be called (refused, timeout, ...) or its answer was unusable."""


class GraphError(Exception):
    """A graph-level routing failure with its HTTP status (KServe error body)."""

    def __init__(self, status: int, cause: str) -> None:
        super().__init__(cause)
        self.status = status
        self.cause = cause


# --------------------------------------------------------------------------- gjson subset
def _split_path(path: str) -> list[str]:
    parts, buf, depth, i = [], "", 0, 0
    while i < len(path):
        ch = path[i]
        if ch == "\\" and i + 1 < len(path):
            buf += path[i + 1]
            i += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "." and depth == 0:
            parts.append(buf)
            buf = ""
        else:
            buf += ch
        i += 1
    parts.append(buf)
    return parts


def _literal(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    try:
        return json.loads(text)
    except ValueError:
        return text


_QUERY = re.compile(r"^(?P<key>.*?)\s*(?P<op>==|!=|<=|>=|<|>|%|!%)\s*(?P<value>.*)$")


def _matches(item: Any, query: str) -> bool:
    m = _QUERY.match(query)
    if not m:  # bare key: exists
        return gjson_get(item, query.strip()) is not _MISSING
    key, op, raw = m["key"].strip(), m["op"], m["value"]
    left = gjson_get(item, key) if key else item
    if left is _MISSING:
        return False
    right = _literal(raw)
    if op in ("%", "!%"):
        ok = isinstance(left, str) and fnmatch.fnmatchcase(left, str(right))
        return ok if op == "%" else not ok
    try:
        if op == "==":
            return left == right
        if op == "!=":
            return left != right
        if isinstance(left, bool) or isinstance(right, bool):
            return False
        if op == "<":
            return left < right
        if op == "<=":
            return left <= right
        if op == ">":
            return left > right
        return left >= right
    except TypeError:
        return False


def gjson_get(doc: Any, path: str) -> Any:
    """Evaluate a gjson path (subset) on parsed JSON; `_MISSING` when it does not exist."""
    if path.startswith("[@this]"):
        doc, path = [doc], path[len("[@this]"):].lstrip(".")
    elif path.startswith("@this"):
        path = path[len("@this"):].lstrip(".")
    if path == "":
        return doc
    current = doc
    parts = _split_path(path)
    for n, part in enumerate(parts):
        if part == "#":
            if not isinstance(current, list):
                return _MISSING
            rest = ".".join(parts[n + 1:])
            if not rest:
                return len(current)
            values = [gjson_get(x, rest) for x in current]
            return [v for v in values if v is not _MISSING]
        if part.startswith("#(") and (part.endswith((")", ")#"))):
            if not isinstance(current, list):
                return _MISSING
            all_matches = part.endswith(")#")
            query = part[2:-2] if all_matches else part[2:-1]
            hits = [x for x in current if _matches(x, query)]
            if all_matches:
                current = hits
            elif hits:
                current = hits[0]
            else:
                return _MISSING
            continue
        if isinstance(current, dict):
            if part not in current:
                return _MISSING
            current = current[part]
        elif isinstance(current, list) and part.isdigit():
            idx = int(part)
            if idx >= len(current):
                return _MISSING
            current = current[idx]
        else:
            return _MISSING
    return current


def gjson_exists(body: bytes, path: str) -> bool | None:
    """None when `body` is not valid JSON, else whether `path` exists."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return gjson_get(doc, path) is not _MISSING


# --------------------------------------------------------------------------- the graph
def _spec(graph: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = graph.get("spec", graph)
    if "nodes" not in spec or GRAPH_ROOT_NODE not in spec["nodes"]:
        raise ValueError(f"graph must have spec.nodes.{GRAPH_ROOT_NODE}")
    for node_name, node in spec["nodes"].items():
        if node.get("routerType") not in ("Sequence", "Ensemble", "Splitter", "Switch"):
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


def _ok(status: int) -> bool:
    return 200 <= status <= 299


def error_body(cause: str) -> bytes:
    return json.dumps({"error": "Failed to process request", "cause": cause}).encode()


class PooledClient:
    """Keep-alive HTTP client for the graph steps (aiohttp, one connection pool).

    The session is created on first use inside the serving event loop and closed by
    `aclose()` (the app's lifespan shutdown). `post()` returns (body, status) and turns
    every transport problem (refused, reset, timeout, unreadable body) into
    `StepTransportError`, like the httpx path.
    """

    def __init__(self, timeout: float = ROUTER_DEFAULT_SERVICE_TIMEOUT_S, limit: int = 256) -> None:
        self.timeout = timeout
        self.limit = limit
        self._session: Any = None

    def _open(self) -> Any:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self.limit, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
            cookie_jar=aiohttp.DummyCookieJar(),  # no state between requests
        )
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[bytes, int]:
        import aiohttp

        session = self._session or self._open()
        try:
            async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                return await response.read(), response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise StepTransportError(f"Post {url!r}: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _H1Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection (httptools response parser)."""

    def __init__(self, loop: Any) -> None:
        import httptools

        self.loop = loop
        self.parser = httptools.HttpResponseParser(self)
        self.transport: Any = None
        self.waiter: Any = None
        self.body: list[bytes] = []
        self.status = 0
        self.keep_alive = False
        self.closed = False
        self.got_bytes = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except Exception as exc:  # noqa: BLE001 - a malformed response
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("connection closed by the service"))

    def _fail(self, exc: BaseException) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()
        self.closed = True

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def request(self, data: bytes) -> tuple[bytes, int]:
        self.body = []
        self.status = 0
        self.got_bytes = False
        self.waiter = self.loop.create_future()
        self.transport.write(data)
        try:
            await self.waiter
        except BaseException:  # failed, timed out or cancelled: the connection is unusable
            self.closed = True
            self.transport.close()
            raise
        finally:
            self.waiter = None
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        return body, self.status


class H1Client:
    """Minimal keep-alive HTTP/1.1 client for `http://` steps (asyncio + httptools).

    One idle-connection pool per host:port; a request that fails on a reused idle
    connection before any response byte arrived (the service closed it meanwhile) is
    retried once on a new connection. `https://` URLs go through aiohttp (`PooledClient`).
    Every transport problem becomes `StepTransportError`; the timeout covers connect,
    send and the whole response.
    """

    def __init__(self, timeout: float = ROUTER_DEFAULT_SERVICE_TIMEOUT_S, max_idle: int = 64) -> None:
        self.timeout = timeout
        self.max_idle = max_idle
        self._idle: dict[tuple[str, int], list[_H1Conn]] = {}
        self._targets: dict[str, tuple[tuple[str, int], bytes]] = {}
        self._fallback: PooledClient | None = None

    def _target(self, url: str) -> tuple[tuple[str, int], bytes] | None:
        target = self._targets.get(url)
        if target is None:
            from urllib.parse import urlsplit

            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname:
                return None
            port = parts.port or 80
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            host = parts.hostname if port == 80 else f"{parts.hostname}:{port}"
            head = f"POST {path} HTTP/1.1\r\nhost: {host}\r\n".encode("latin-1")
            target = ((parts.hostname, port), head)
            if len(self._targets) < 1024:
                self._targets[url] = target
        return target

    async def _connect(self, addr: tuple[str, int]) -> _H1Conn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: _H1Conn(loop), addr[0], addr[1])
        return conn

    async def _exchange(self, addr: tuple[str, int], data: bytes) -> tuple[bytes, int]:
        idle = self._idle.setdefault(addr, [])
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            try:
                result = await conn.request(data)
            except (ConnectionError, OSError):
                if conn.got_bytes:
                    raise
                continue  # stale keep-alive connection: try another / a new one
            self._release(addr, conn)
            return result
        conn = await self._connect(addr)
        result = await conn.request(data)
        self._release(addr, conn)
        return result

    def _release(self, addr: tuple[str, int], conn: _H1Conn) -> None:
        idle = self._idle[addr]
        if conn.keep_alive and not conn.closed and len(idle) < self.max_idle:
            idle.append(conn)
        elif conn.transport is not None:
            conn.transport.close()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[bytes, int]:
        target = self._target(url)
        if target is None:
            if self._fallback is None:
                self._fallback = PooledClient(self.timeout)
            return await self._fallback.post(url, body, headers)
        addr, head = target
        lines = [head]
        for k, v in headers.items():
            lines.append(f"{k}: {v}\r\n".encode("latin-1"))
        lines.append(b"content-length: %d\r\n\r\n" % len(body))
        lines.append(body)
        data = b"".join(lines)
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(addr, data)
        except TimeoutError as exc:
            raise StepTransportError(f"Post {url!r}: Timeout: no complete answer within {self.timeout} s") from exc
        except Exception as exc:  # refused, reset, malformed answer, ...
            raise StepTransportError(f"Post {url!r}: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                if conn.transport is not None:
                    conn.transport.close()
        self._idle.clear()
        if self._fallback is not None:
            await self._fallback.aclose()


@dataclass
class MirrorConfig:
    primary: str
    shadow: str
    percentage: float = 100.0


@dataclass
class Router:
    """Executes an InferenceGraph spec (or mirrors) against HTTP services."""

    graph: Mapping[str, Any] | None
    resolve_url: Callable[[str], str]
    client: Any
    """An `H1Client` (default), a `PooledClient` (aiohttp) or an `httpx.AsyncClient`
    (tests inject transports): anything with `post(url, body, headers)` and `aclose()`."""
    mirror: MirrorConfig | None = None
    propagate: tuple[str, ...] = ROUTER_DEFAULT_PROPAGATE_HEADERS
    rng: random.Random = field(default_factory=random.Random)
    _background: set[asyncio.Task[Any]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.spec = _spec(self.graph) if self.graph is not None else None
        if self.spec is None and self.mirror is None:
            raise ValueError("need a graph or a mirror configuration")
        self._patterns = [re.compile(p) for p in self.propagate]

    def forward_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        out = {k: v for k, v in headers.items() if any(p.search(k) for p in self._patterns)}
        out["content-type"] = "application/json"
        return out

    async def call_service(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[bytes, int]:
        if not isinstance(self.client, httpx.AsyncClient):
            return await self.client.post(url, body, headers)
        try:
            response = await self.client.post(url, content=body, headers=dict(headers))
            return response.content, response.status_code
        except httpx.HTTPError as exc:
            raise StepTransportError(f"Post {url!r}: {type(exc).__name__}: {exc}") from exc

    def _step_url(self, step: Mapping[str, Any]) -> str:
        return step.get("serviceUrl") or self.resolve_url(step["serviceName"])

    async def execute_step(self, step: Mapping[str, Any], body: bytes, headers: Mapping[str, str]) -> tuple[bytes, int]:
        if step.get("nodeName"):
            return await self.route_node(step["nodeName"], body, headers)
        return await self.call_service(self._step_url(step), body, headers)

    async def route_node(self, node_name: str, body: bytes, headers: Mapping[str, str]) -> tuple[bytes, int]:
        assert self.spec is not None
        node = self.spec["nodes"][node_name]
        steps = list(node.get("steps") or [])
        kind = node["routerType"]
        if kind == "Splitter":
            point, end = self.rng.randrange(100), 0
            for step in steps:
                end += int(step.get("weight") or 0)
                if point < end:
                    return await self.execute_step(step, body, headers)
            raise GraphError(500, "no route was selected by the splitter")
        if kind == "Switch":
            for step in steps:
                if gjson_exists(body, step.get("condition", "")):
                    return await self.execute_step(step, body, headers)
            raise GraphError(404, "None of the routes matched with the switch condition")
        if kind == "Ensemble":
            results = await asyncio.gather(
                *(self.execute_step(s, body, headers) for s in steps), return_exceptions=True
            )
            merged: dict[str, Any] = {}
            for i, (step, result) in enumerate(zip(steps, results)):
                if isinstance(result, BaseException):
                    raise result
                content, status = result
                try:
                    parsed = json.loads(content)
                except (ValueError, UnicodeDecodeError) as exc:
                    raise StepTransportError(f"step {step.get('name') or i}: response is not JSON: {exc}") from exc
                if not isinstance(parsed, dict):
                    raise StepTransportError(f"step {step.get('name') or i}: response is not a JSON object")
                if not _ok(status) and step.get("dependency") == "Hard":
                    return json.dumps(parsed).encode(), status
                merged[step.get("name") or str(i)] = parsed
            return json.dumps(merged).encode(), 200
        # Sequence
        response: bytes | None = None
        status = 200
        for i, step in enumerate(steps):
            request = response if step.get("data") == "$response" and i > 0 and response is not None else body
            if step.get("mapPredictionsToInstances"):
                try:
                    decoded = json.loads(request)
                    if isinstance(decoded, dict) and decoded.get("predictions"):
                        decoded = {"instances": decoded["predictions"]}
                        request = json.dumps(decoded).encode()
                except (ValueError, UnicodeDecodeError):
                    pass
            if step.get("condition"):
                exists = gjson_exists(response or b"", step["condition"])
                if exists is None:
                    raise GraphError(500, "invalid response")
                if not exists:
                    return response or b"", 200
            response, status = await self.execute_step(step, request, headers)
            if step.get("dependency") == "Hard" and not _ok(status):
                return response, status
        return response or b"", status

    async def handle(self, body: bytes, headers: Mapping[str, str]) -> tuple[bytes, int]:
        forwarded = self.forward_headers(headers)
        forwarded.setdefault("x-request-id", new_request_id())
        try:
            if self.mirror is not None:
                return await self._mirror(body, forwarded)
            return await self.route_node(GRAPH_ROOT_NODE, body, forwarded)
        except GraphError as exc:
            log.warning("graph error: %s", exc.cause)
            return error_body(exc.cause), exc.status
        except StepTransportError as exc:
            log.warning("step failed: %s", exc)
            return error_body(str(exc)), 500

    async def _mirror(self, body: bytes, headers: Mapping[str, str]) -> tuple[bytes, int]:
        assert self.mirror is not None
        if self.rng.random() * 100.0 < self.mirror.percentage:
            task = asyncio.create_task(self._shadow(body, headers))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return await self.call_service(self.resolve_url(self.mirror.primary), body, headers)

    async def _shadow(self, body: bytes, headers: Mapping[str, str]) -> None:
        assert self.mirror is not None
        try:
            _, status = await self.call_service(self.resolve_url(self.mirror.shadow), body, headers)
            if not _ok(status):
                log.info("shadow %s answered %d", self.mirror.shadow, status)
        except StepTransportError as exc:
            log.info("shadow %s unreachable (ignored): %s", self.mirror.shadow, exc)


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
    """

    async def send_response(send: Any, status: int, content: bytes, media: bytes | None) -> None:
        headers = [(b"content-length", str(len(content)).encode())]
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
        if scope["path"] == ROUTER_READINESS_PATH and method in ("GET", "HEAD"):
            await send_response(send, 200, _READY_BODY, b"application/json")
            return
        if method not in _GRAPH_METHODS:
            await send_response(send, 405, b"Method Not Allowed", b"text/plain; charset=utf-8")
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
        content, status = await router.handle(body, headers)
        await send_response(send, status, content, b"application/json" if _is_json(content) else None)

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


def serve_router(router: Router, host: str, port: int) -> None:
    """Serve `router` on host:port in the foreground (uvicorn, one write per response)."""
    import uvicorn

    from airflow_project.serving.write_coalescing import HTTP_PROTOCOL

    uvicorn.run(build_app(router), host=host, port=port, log_level="warning", http=HTTP_PROTOCOL)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m airflow_project.serving.router")
    parser.add_argument("--graph", required=True, help="graph file (JSON, see module docstring)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    with open(args.graph, encoding="utf-8") as fh:
        config = json.load(fh)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve_router(router_from_file_config(config), args.host, args.port)


if __name__ == "__main__":
    main()
