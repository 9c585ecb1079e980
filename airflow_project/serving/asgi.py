"""Small pure-ASGI pieces shared by the predictor and the local graph router (no kserve)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from airflow_project.serving.constants import MAX_BODY_BYTES
from airflow_project.serving.request_ids import choose


@dataclass(frozen=True)
class Linger:
    """How long and how much of a refused body to read and discard before closing.

    A server that answers 413 and closes while request bytes are still unread makes the
    kernel send a reset, which can destroy the answer before the client reads it: clients
    that send the whole body before reading (Python's urllib, and clients built the same
    way) get `ConnectionResetError` instead of the 413. nginx reads and discards for a
    while first (its "lingering close": `lingering_time` 30 s, `lingering_timeout` 5 s);
    so does this, within these bounds, after the 413 has been written.
    """

    max_bytes: int = 16 * MAX_BODY_BYTES
    max_seconds: float = 30.0
    read_timeout: float = 5.0


async def linger(receive: Any, bounds: Linger) -> int:
    """Read and discard the rest of a request body until it ends, the client goes away, or a
    bound is hit; returns the bytes discarded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bounds.max_seconds
    discarded = 0
    while discarded <= bounds.max_bytes:
        wait = min(bounds.read_timeout, deadline - loop.time())
        if wait <= 0:
            break
        try:
            message = await asyncio.wait_for(receive(), wait)
        except TimeoutError:
            break
        if message["type"] != "http.request":
            break
        discarded += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return discarded


class BodySizeLimitMiddleware:
    """Pure ASGI middleware: reject request bodies above `max_bytes` with 413.

    Checks Content-Length first, then counts streamed (chunked) bytes; the body is
    buffered (bounded by the limit) and replayed to the app. A refused body is read and
    discarded after the 413 has been written (`Linger`), and the connection is then closed
    (`connection: close`), unless the client asked `Expect: 100-continue` and has not sent
    it: then nothing is in flight and reading would invite it.
    """

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES, linger: Linger = Linger()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.linger = linger

    async def _reject(self, receive: Any, send: Any, size: str, *, body_in_flight: bool,
                      request_id: bytes) -> None:
        body = json.dumps(
            {"error": f"body: request body of {size} bytes exceeds the limit of {self.max_bytes} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), (b"x-request-id", request_id)],
            }
        )
        # The whole answer first (the server writes it out while we read), the end of the
        # response only after the lingering read: the server closes the connection then.
        await send({"type": "http.response.body", "body": body, "more_body": True})
        if body_in_flight:
            await linger(receive, self.linger)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        expects_continue = False
        declared = -1
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
            elif key == b"expect":
                expects_continue = value.lower() == b"100-continue"
        if declared > self.max_bytes:
            await self._reject(receive, send, str(declared), body_in_flight=not expects_continue,
                               request_id=choose(header(scope, b"x-request-id"))[1])
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
            more = message.get("more_body", False)
            if total > self.max_bytes:
                await self._reject(receive, send, f"more than {self.max_bytes}", body_in_flight=more,
                                   request_id=choose(header(scope, b"x-request-id"))[1])
                return
            chunks.append(chunk)
        await self.app(scope, replay_body(b"".join(chunks), receive, False), send)


def replay_body(body: bytes, receive: Any, more: bool) -> Any:
    """A `receive` that yields `body` first (then, when `more`, the rest of the stream)."""
    sent = False

    async def replay() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        # the rest of the stream when `more`, else disconnect notifications
        return await receive()

    return replay


# --------------------------------------------------------------------------- small answers
def header(scope: Any, name: bytes) -> bytes | None:
    """The first value of request header `name` (lower case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


async def send_json(send: Any, status: int, content: Any, headers: Any = ()) -> None:
    """One JSON answer: `content` (bytes as they are, anything else as JSON)."""
    body = content if isinstance(content, bytes) else json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------- Content-Encoding
ACCEPTED_ENCODINGS = "gzip, deflate"
"""What `decode_body` accepts besides identity (sent as `Accept-Encoding` with a 415, RFC 9110 15.5.16)."""


class BodyProblem(ValueError):
    """A request body that cannot be decoded: answer `status` with the message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def decode_body(body: bytes, coding: bytes, max_bytes: int) -> bytes:
    """`body` decoded from its `Content-Encoding` (gzip, x-gzip, deflate, identity), at most
    `max_bytes` decoded: a small body that inflates past the limit is a 413 like a large one."""
    import zlib

    name = coding.strip().lower().decode("latin-1")
    if name in ("", "identity"):
        return body
    if name in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif name == "deflate":
        # RFC 9110's deflate is zlib-wrapped; some clients send raw deflate: take both.
        wbits = zlib.MAX_WBITS if body[:1] and body[0] & 0x0F == 8 and int.from_bytes(body[:2], "big") % 31 == 0 \
            else -zlib.MAX_WBITS
    else:
        raise BodyProblem(415, f"Content-Encoding {name!r} is not supported; send {ACCEPTED_ENCODINGS} or identity")
    inflate = zlib.decompressobj(wbits)
    try:
        decoded = inflate.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise BodyProblem(400, f"body: Content-Encoding {name}, but the body is not {name} data ({exc})") from None
    if len(decoded) > max_bytes:
        raise BodyProblem(413, f"body: request body decodes to more than the limit of {max_bytes} bytes")
    if not inflate.eof:
        raise BodyProblem(400, f"body: Content-Encoding {name}, but the compressed data ends early")
    if inflate.unused_data.strip(b"\x00"):
        raise BodyProblem(400, f"body: Content-Encoding {name}, but {len(inflate.unused_data)} bytes follow the data")
    return decoded
