"""Small pure-ASGI pieces shared by the predictor and the local graph router (no kserve)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from airflow_project.serving.constants import MAX_BODY_BYTES


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

    async def _reject(self, receive: Any, send: Any, size: str, *, body_in_flight: bool) -> None:
        body = json.dumps(
            {"error": f"body: request body of {size} bytes exceeds the limit of {self.max_bytes} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")],
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
            await self._reject(receive, send, str(declared), body_in_flight=not expects_continue)
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
                await self._reject(receive, send, f"more than {self.max_bytes}", body_in_flight=more)
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
