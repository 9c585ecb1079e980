"""The HTTP protocol the predictor and the router serve with: uvicorn's httptools protocol
(one socket write per response, `write_coalescing`) with bounded reads.

uvicorn's httptools protocol puts no limit on what a client sends before the application
sees a request: httptools joins header fragments into one `bytes` for as long as they come
(a 256 MiB header raised a predictor from 389 to 639 MiB, and the memory stayed), a
connection with half-sent headers or a stalled body stays open for ever, and so does a
fresh connection that never sends anything. This protocol bounds each of those:

- the request target: at most `ReadLimits.max_request_line` bytes, else 414 (RFC 9112
  section 3: a server MUST answer 414 to a target longer than it will parse);
- the request head (request line and headers): at most `ReadLimits.max_head` bytes, else
  431. While a head is incomplete, what arrives is fed to the parser in slices of
  `FEED_SLICE` bytes and counted, so at most one slice more than the cap is ever held; a
  head that completes near the cap is measured exactly from its parts. (A head pipelined
  behind another request in the same read may be refused up to one slice below the cap:
  60 KiB always pass, Envoy's own default `max_request_headers_kb`);
- a malformed request line or header: 400 (httptools' message);
- the head must be complete within `head_timeout` seconds of its first byte (a fresh
  connection: of the connection's start), the body within `body_timeout` seconds of the
  end of the head, else 408. Between requests, the keep-alive timeout applies as before;
- at most `max_connections` connections at once; the next one is answered 503.

Every refusal is one JSON error answer (`{"error": ...}`, `connection: close`, a generated
`x-request-id`), a WARNING line without a traceback, a half-close, and a short lingering
read that discards what the client is still sending (at most `LINGER_BYTES`, `LINGER_S`)
before the connection is closed, so that the client reads the answer instead of a reset.

It overrides uvicorn's parser callbacks and reads its per-connection state (`cycle`,
`connections`, `server_state`) as uvicorn 0.54's `protocols/http/httptools_impl.py` has them:
`kserve_compat.WRITTEN_FOR` names that release, and the predictor refuses to start with another.

Timers cost the hot path nothing: a request whose head and body arrive in one read (any
prediction) never arms one; the deadlines are armed only when a read ends inside a head
or a body.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import httptools

from airflow_project.serving.constants import (
    BODY_TIMEOUT_S,
    HEAD_TIMEOUT_S,
    MAX_CONNECTIONS,
    MAX_HEAD_BYTES,
    MAX_REQUEST_LINE_BYTES,
)
from airflow_project.serving.request_ids import new_request_id
from airflow_project.serving.write_coalescing import CoalescingHttpToolsProtocol

log = logging.getLogger(__name__)

FEED_SLICE = 4096
"""Bytes fed to the parser at a time when a read is larger (most reads are one request)."""
LINGER_BYTES = 1024 * 1024
LINGER_S = 2.0
"""After a refusal: what is read and discarded at most, and for how long, before closing."""

_IDLE, _HEAD, _BODY = 0, 1, 2
_Base = CoalescingHttpToolsProtocol  # its per-request callbacks, called directly (cheaper than super())


@dataclass(frozen=True)
class ReadLimits:
    """What one client may send and hold (defaults in `serving.constants`)."""

    max_request_line: int = MAX_REQUEST_LINE_BYTES
    max_head: int = MAX_HEAD_BYTES
    head_timeout: float = HEAD_TIMEOUT_S
    body_timeout: float = BODY_TIMEOUT_S
    max_connections: int = MAX_CONNECTIONS

    def __post_init__(self) -> None:
        for name in ("max_request_line", "max_head", "head_timeout", "body_timeout", "max_connections"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ReadLimits.{name} must be positive, got {getattr(self, name)!r}")
        if self.max_head <= FEED_SLICE:
            raise ValueError(f"ReadLimits.max_head must be larger than {FEED_SLICE} bytes, got {self.max_head}")


class _Refusal(Exception):
    """Raised inside a parser callback: answer `status` with `message`, then close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def refusal_head(status: int, body: bytes, default_headers: Any = ()) -> bytes:
    """Status line and headers of a refusal with a JSON `body`."""
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE

    lines = [STATUS_LINE[status]]
    lines.extend(name + b": " + value + b"\r\n" for name, value in default_headers)
    lines.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n" % len(body))
    lines.append(b"x-request-id: " + new_request_id().encode() + b"\r\n\r\n")
    return b"".join(lines)


class BoundedHttpToolsProtocol(CoalescingHttpToolsProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's httptools protocol, one write per response, with `limits` on every read."""

    limits = ReadLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._state = _IDLE
        self._head_bytes = 0
        self._slice = 0
        self._deadline: Any = None
        self._refused = False
        self._linger_left = 0

    # ---- connection
    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        over = len(self.connections) >= self.limits.max_connections
        super().connection_made(transport)
        if over:
            self.connections.discard(self)  # a refused connection takes no place
            self._refuse(503, f"more than {self.limits.max_connections} connections at once; retry later")
            return
        # A fresh connection must send its first request head in time (uvicorn arms no timer
        # until a response has completed, so a silent connection stayed open for ever).
        self._arm(self.limits.head_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    # ---- reading
    def data_received(self, data: bytes) -> None:
        if self._refused:  # lingering: discard, within bounds
            self._linger_left -= len(data)
            if self._linger_left <= 0:
                self.transport.close()
            return
        self._unset_keepalive_if_required()
        size = len(data)
        if size <= FEED_SLICE:  # the usual read: a whole request (inlined `_feed`, the hot path)
            self._slice = size
            try:
                self.parser.feed_data(data)
            except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
                self._parser_stopped(exc)
                return
            if self._refused:
                return
            state = self._state
            if state == _HEAD:
                self._head_bytes += size
                if self._head_bytes > self.limits.max_head:
                    self._refuse(431, self._too_large)
                    return
        else:
            view = memoryview(data)
            for start in range(0, size, FEED_SLICE):
                if not self._feed(view[start:start + FEED_SLICE], min(FEED_SLICE, size - start)):
                    return
            state = self._state
        if state == _HEAD:
            if self._deadline is None:
                self._arm(self.limits.head_timeout, self._head_timed_out)
        elif state == _BODY and self._deadline is None:
            self._arm(self.limits.body_timeout, self._body_timed_out)

    def _feed(self, data: Any, size: int) -> bool:
        """Feed one slice; False once the connection is refused (or upgraded)."""
        self._slice = size
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._parser_stopped(exc)
            return False
        if self._state == _HEAD:
            self._head_bytes += size
            if self._head_bytes > self.limits.max_head:
                self._refuse(431, self._too_large)
                return False
        return not self._refused

    def _parser_stopped(self, exc: Exception) -> None:
        """The parser raised: a refusal from a callback, an upgrade, or a malformed request."""
        if isinstance(exc, httptools.HttpParserUpgrade):
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        elif isinstance(exc, httptools.HttpParserCallbackError):
            refusal = exc.__context__
            if isinstance(refusal, _Refusal):
                self._refuse(refusal.status, refusal.message)
            else:  # as uvicorn's own protocol answers any parser failure
                self._refuse(400, f"malformed HTTP request ({type(refusal).__name__}: {refusal})")
        else:
            self._refuse(400, f"malformed HTTP request ({exc})")

    @property
    def _too_large(self) -> str:
        return f"request head (request line and headers) larger than {self.limits.max_head} bytes"

    # ---- parser callbacks
    def on_message_begin(self) -> None:
        _Base.on_message_begin(self)
        self._state = _HEAD
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.limits.max_request_line:
            raise _Refusal(414, f"request target longer than {self.limits.max_request_line} bytes")

    def on_headers_complete(self) -> None:
        self._state = _BODY
        if self._deadline is not None:
            self._cancel_deadline()
        if self._head_bytes + self._slice > self.limits.max_head:
            # A head that ends in this slice was not counted in full: count its parts exactly
            # (only heads near the cap get here; a request in one read never does).
            size = (len(self.parser.get_method()) + len(self.url) + len(" HTTP/1.1\r\n\r\n") + 1
                    + sum(len(k) + len(v) + 4 for k, v in self.headers))
            if size > self.limits.max_head:
                raise _Refusal(431, self._too_large)
        _Base.on_headers_complete(self)

    def on_message_complete(self) -> None:
        self._state = _IDLE
        if self._deadline is not None:
            self._cancel_deadline()
        _Base.on_message_complete(self)

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, msg)

    # ---- deadlines
    def _arm(self, seconds: float, callback: Any) -> None:
        self._deadline = self.loop.call_later(seconds, callback)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_timed_out(self) -> None:
        self._deadline = None
        if self._state == _HEAD:
            self._refuse(408, f"request head not complete within {self.limits.head_timeout:g} s")
        elif self._state == _IDLE and self.cycle is None and not self.transport.is_closing():
            log.warning("%s: no request within %g s of connecting; closing", self._peer(), self.limits.head_timeout)
            self.transport.close()

    def _body_timed_out(self) -> None:
        self._deadline = None
        if self._state == _BODY:
            self._refuse(408, f"request body not complete within {self.limits.body_timeout:g} s")

    # ---- refusing
    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "-"

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` (unless a response has started), half-close, linger, close."""
        if self._refused:
            return
        self._refused = True
        self._cancel_deadline()
        log.warning("%d to %s: %s", status, self._peer(), message)
        cycle = self.cycle
        transport = self.transport
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:  # too late for an answer of our own
                transport.close()
                return
            cycle.disconnected = True  # the application stops waiting for the body
            cycle.message_event.set()
        if transport.is_closing():
            return
        body = json.dumps({"error": message}).encode()
        transport.write(refusal_head(status, body, self.server_state.default_headers) + body)
        transport.flush()
        with contextlib.suppress(OSError, RuntimeError, NotImplementedError, AttributeError):
            transport.write_eof()
        self._linger_left = LINGER_BYTES
        self.loop.call_later(LINGER_S, transport.close)


def http_protocol(limits: ReadLimits | None = None) -> type[BoundedHttpToolsProtocol]:
    """The protocol class to pass to uvicorn as `http=`, bounded by `limits`."""
    if limits is None or limits == ReadLimits():
        return BoundedHttpToolsProtocol
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"limits": limits})


def add_limit_flags(parser: Any) -> None:
    """The command-line flags for `ReadLimits` (predictor and router)."""
    parser.add_argument("--header-timeout", dest="head_timeout", type=float, default=HEAD_TIMEOUT_S,
                        help="seconds a request head may take to arrive (a new connection: from connecting)")
    parser.add_argument("--body-timeout", dest="body_timeout", type=float, default=BODY_TIMEOUT_S,
                        help="seconds a request body may take to arrive after its head")
    parser.add_argument("--max-connections", dest="max_connections", type=int, default=MAX_CONNECTIONS,
                        help="connections held at once; more are answered 503")


def limits_from(args: Any) -> ReadLimits:
    return ReadLimits(head_timeout=args.head_timeout, body_timeout=args.body_timeout,
                      max_connections=args.max_connections)
