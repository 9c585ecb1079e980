"""Small pure-ASGI pieces shared by the predictor and the local graph router (no kserve)."""

from __future__ import annotations

import json
from typing import Any

from airflow_project.serving.constants import MAX_BODY_BYTES


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
