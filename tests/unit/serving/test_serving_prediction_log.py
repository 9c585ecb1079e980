"""The prediction log's own writer: one stream write per event-loop iteration."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time

from airflow_project.serving.constants import PREDICTION_LOGGER
from airflow_project.serving.predictor import _LineBatcher
from airflow_project.serving.write_coalescing import CoalescingTransport


class RecordingStream(io.StringIO):
    def __init__(self, events: list[str] | None = None) -> None:
        super().__init__()
        self.writes: list[str] = []
        self.events = events if events is not None else []

    def write(self, text: str) -> int:
        self.writes.append(text)
        self.events.append("log")
        return super().write(text)


def _handler(stream) -> logging.StreamHandler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def test_lines_of_one_loop_iteration_are_one_write_after_it():
    stream = RecordingStream()
    lines = _LineBatcher(_handler(stream))

    async def scenario():
        lines.add('{"a": 1}')
        lines.add('{"b": 2}')
        written_within_iteration = list(stream.writes)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        lines.add('{"c": 3}')
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return written_within_iteration

    assert asyncio.run(scenario()) == []
    assert stream.writes == ['{"a": 1}\n{"b": 2}\n', '{"c": 3}\n']


def test_outside_an_event_loop_a_line_is_written_at_once():
    stream = RecordingStream()
    _LineBatcher(_handler(stream)).add("line")
    assert stream.writes == ["line\n"]


def test_a_prediction_line_reaches_stdout_before_its_response_reaches_the_socket():
    events: list[str] = []
    lines = _LineBatcher(_handler(RecordingStream(events)))

    class Socket:
        def write(self, data):
            events.append("response")

        def is_closing(self):
            return False

    async def scenario():
        response = CoalescingTransport(Socket(), asyncio.get_running_loop())  # type: ignore[arg-type]
        lines.add("prediction")  # the fast path logs, then sends the response
        response.write(b"HTTP/1.1 200 OK\r\n\r\n")
        response.write(b"{}")
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert events == ["log", "response"]


def test_a_broken_stream_is_reported_the_logging_way_not_raised():
    class Broken(io.StringIO):
        def write(self, text):
            raise OSError("stdout is gone")

    handler = _handler(Broken())
    reported = []
    handler.handleError = lambda record: reported.append(record.getMessage())  # type: ignore[method-assign]
    _LineBatcher(handler).add("lost line")
    assert reported == ["lost line"]


def test_model_writes_its_lines_through_the_batcher(model, monkeypatch):
    """With only its own stdout handler (as `serve()` runs it) the model uses the batcher."""
    logger = logging.getLogger(PREDICTION_LOGGER)
    assert model._lines is not None and logger.handlers[0] is model._lines.handler
    # pytest attaches its capture handlers to this logger too; serve() runs with ours alone
    monkeypatch.setattr(logger, "handlers", [model._lines.handler])
    added: list[str] = []
    add = model._lines.add
    monkeypatch.setattr(model._lines, "add", lambda line: (added.append(line), add(line)))
    stream = RecordingStream()
    previous = model._lines.handler.setStream(stream)
    try:
        model.log_prediction("v1", "rid-1", [("a", "b", "c", "d")], [1.5], time.perf_counter(), "127.0.0.1:1")
    finally:
        model._lines.handler.setStream(previous)
    assert len(added) == 1 and stream.writes == [added[0] + "\n"]
    record = json.loads(stream.writes[0])
    assert (record["request_id"], record["outputs"], record["client"]) == ("rid-1", [1.5], "127.0.0.1:1")
