"""The 413 every client reads: the answer is written first, the rest of the refused body is
read and discarded within bounds, and only then does the response end (and the server close)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from airflow_project.serving.asgi import BodySizeLimitMiddleware, Linger


async def _never_called(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the app must not see a refused body")


def _run(middleware: BodySizeLimitMiddleware, headers: list[tuple[bytes, bytes]], chunks: list[bytes],
         *, stall: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """Drive the middleware; the body comes in `chunks` (then, with `stall`, nothing more)."""
    events: list[str] = []
    sent: list[dict[str, Any]] = []
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        if not pending:
            if stall:
                await asyncio.sleep(3600)
            return {"type": "http.disconnect"}
        chunk = pending.pop(0)
        events.append(f"read {len(chunk)}")
        return {"type": "http.request", "body": chunk, "more_body": bool(pending) or stall}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        events.append("send " + message["type"].rsplit(".", 1)[1] + (" more" if message.get("more_body") else ""))

    scope = {"type": "http", "method": "POST", "headers": headers}
    asyncio.run(middleware(scope, receive, send))
    return sent, events


def test_a_declared_oversized_body_is_answered_first_then_read_to_its_end() -> None:
    guard = BodySizeLimitMiddleware(_never_called, max_bytes=10)
    sent, events = _run(guard, [(b"content-length", b"70")], [b"x" * 30, b"x" * 30, b"x" * 10])
    assert events == ["send start", "send body more", "read 30", "read 30", "read 10", "send body"]
    assert sent[0]["status"] == 413 and (b"connection", b"close") in sent[0]["headers"]
    assert b"request body of 70 bytes exceeds the limit of 10 bytes" in sent[1]["body"]
    assert sent[2] == {"type": "http.response.body", "body": b"", "more_body": False}


def test_a_streamed_body_is_refused_when_it_crosses_the_limit_and_read_to_its_end() -> None:
    guard = BodySizeLimitMiddleware(_never_called, max_bytes=10)
    _, events = _run(guard, [], [b"x" * 6, b"x" * 6, b"x" * 6])
    assert events == ["read 6", "read 6", "send start", "send body more", "read 6", "send body"]


def test_expect_100_continue_is_answered_without_inviting_the_body() -> None:
    guard = BodySizeLimitMiddleware(_never_called, max_bytes=10)
    _, events = _run(guard, [(b"content-length", b"70"), (b"expect", b"100-continue")], [b"x" * 70])
    assert events == ["send start", "send body more", "send body"]  # never read


def test_lingering_is_bounded_in_bytes() -> None:
    guard = BodySizeLimitMiddleware(_never_called, max_bytes=10, linger=Linger(max_bytes=25))
    _, events = _run(guard, [(b"content-length", b"1000")], [b"x" * 10] * 100)
    assert events.count("read 10") == 3 and events[-1] == "send body"


@pytest.mark.timeout(10)
def test_lingering_is_bounded_in_time() -> None:
    guard = BodySizeLimitMiddleware(_never_called, max_bytes=10, linger=Linger(max_seconds=0.3, read_timeout=0.2))
    _, events = _run(guard, [(b"content-length", b"1000")], [b"x" * 10], stall=True)
    assert events == ["send start", "send body more", "read 10", "send body"]


def test_a_body_within_the_limit_reaches_the_app() -> None:
    got: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        got.append((await receive())["body"])

    _run(BodySizeLimitMiddleware(app, max_bytes=10), [], [b"12345", b"67890"])
    assert got == [b"1234567890"]
