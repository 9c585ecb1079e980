"""How the local router calls its steps: `H1Client`, a small keep-alive HTTP/1.1 client on
asyncio + httptools (the fast path every `http://` step takes), and `AiohttpClient`, the
adapter it hands `https://` steps to. Both turn every transport problem (refused, reset,
timeout, unreadable answer) into `StepTransportError`, which the router answers with 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

from airflow_project.serving.constants import MODEL_VERSION_HEADER, ROUTER_DEFAULT_SERVICE_TIMEOUT_S

_VERSION_HEADER = MODEL_VERSION_HEADER.encode()


class StepTransportError(Exception):
    """A step could not be called (refused, timeout, ...) or its answer was unusable."""


class StepAnswer(NamedTuple):
    """A step's answer: body, status and the `x-model-version` it said (the router passes it on)."""

    body: bytes
    status: int
    version: bytes | None = None


class StepClient(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> StepAnswer: ...

    async def aclose(self) -> None: ...


class AiohttpClient:
    """The `https://` adapter: aiohttp, one keep-alive connection pool.

    The session is created on first use inside the serving event loop and closed by
    `aclose()` (the app's lifespan shutdown).
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

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> StepAnswer:
        import aiohttp

        session = self._session or self._open()
        try:
            async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                version = next((v for k, v in response.raw_headers if k.lower() == _VERSION_HEADER), None)
                return StepAnswer(await response.read(), response.status, version)
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
        self.version: bytes | None = None

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
    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 15 and name.lower() == _VERSION_HEADER:
            self.version = value

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def request(self, data: bytes) -> StepAnswer:
        self.body = []
        self.status = 0
        self.version = None
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
        return StepAnswer(body, self.status, self.version)


class H1Client:
    """The router's step client: keep-alive HTTP/1.1 for `http://` (asyncio + httptools).

    One idle-connection pool per host:port; a request that fails on a reused idle
    connection before any response byte arrived (the service closed it meanwhile) is
    retried once on a new connection. `https://` URLs go to `AiohttpClient`. The timeout
    covers connect, send and the whole response.
    """

    def __init__(self, timeout: float = ROUTER_DEFAULT_SERVICE_TIMEOUT_S, max_idle: int = 64) -> None:
        self.timeout = timeout
        self.max_idle = max_idle
        self._idle: dict[tuple[str, int], list[_H1Conn]] = {}
        self._targets: dict[str, tuple[tuple[str, int], bytes]] = {}
        self._fallback: AiohttpClient | None = None

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

    async def _exchange(self, addr: tuple[str, int], data: bytes) -> StepAnswer:
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

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> StepAnswer:
        target = self._target(url)
        if target is None:
            if self._fallback is None:
                self._fallback = AiohttpClient(self.timeout)
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
