"""Request ids for requests that arrive without `x-request-id` (predictor and router).

Light on purpose (stdlib only): the router imports it without kserve.
"""

from __future__ import annotations

import itertools
import os
import uuid

_prefix = ""
_counter = itertools.count(1)


def _reset() -> None:
    global _prefix, _counter
    _prefix = str(uuid.uuid4())[:24]  # "xxxxxxxx-xxxx-4xxx-yxxx-": 74 random bits
    _counter = itertools.count(1)


_reset()
os.register_at_fork(after_in_child=_reset)


def new_request_id() -> str:
    """A UUID-shaped id: a random per-process prefix, then a counter.

    Unique within the process by construction and across processes by the prefix's 74
    random bits (a forked child draws a new prefix). `uuid4()` per request costs a system
    call and several microseconds, a measurable share of a fast-path prediction; these
    ids identify log lines and traces, they are not secrets.
    """
    return f"{_prefix}{next(_counter):012x}"
