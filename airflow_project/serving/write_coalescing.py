"""uvicorn's httptools protocol with one socket write per response.

uvicorn writes a response in (at least) two `transport.write()` calls: the status line
and headers when the app sends `http.response.start`, the body when it sends
`http.response.body`. On an otherwise idle connection each call is its own `send()`
system call and its own TCP segment, and the client wakes up for each. For the small
JSON answers of a model server that is a large share of the cost of a request: measured
in `make bench`, one write per response serves ~25% more predictions per second on the
same CPU (loadtest/README.md).

`CoalescingTransport` buffers what is written during one event-loop iteration and hands
it to the real transport in one `write()` at the start of the next iteration (before the
loop waits for I/O again), so nothing waits on a timer. `CoalescingHttpToolsProtocol`
gives every connection such a transport; pass it to uvicorn as `http=`. The predictor
(`server.serve`), the local graph router and the benchmark's HTTP floor all use it, so
they keep running the same HTTP stack.
"""

from __future__ import annotations

import asyncio
from typing import Any

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is locked with uvicorn[standard]
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


class CoalescingTransport:
    """A transport proxy whose `write()`s within one loop iteration become one write.

    Everything but writing and closing is the wrapped transport's own (flow control,
    `get_extra_info`, `is_closing`, ...). `close()` writes what is pending first;
    `abort()` drops it, as the real transport drops its own buffer.
    """

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Hand what is pending to the real transport (one `write`)."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


# What to pass to uvicorn as `http=`: the coalescing protocol, or uvicorn's own choice.
HTTP_PROTOCOL: Any = "auto"

if HttpToolsProtocol is not None:

    class CoalescingHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc,valid-type]
        """uvicorn's httptools protocol writing through a `CoalescingTransport`."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    HTTP_PROTOCOL = CoalescingHttpToolsProtocol
