"""Request ids (predictor and router): generated for requests that arrive without a usable
`x-request-id`, and the rule that decides whether an incoming one is kept.

Light on purpose (stdlib only): the router imports it without kserve.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import uuid

log = logging.getLogger(__name__)

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


# What uvicorn refuses to write in a response header (`HEADER_VALUE_RE` in
# uvicorn/protocols/http/httptools_impl.py): a control character other than HTAB.
_NOT_IN_HEADER = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_SHOWN = 80
"""Characters of a refused id quoted in the log line."""


def from_header(value: bytes) -> str | None:
    """The id an incoming `x-request-id` carries, or None when it cannot be kept byte for byte.

    Kept: a non-empty header value without control characters that is UTF-8, because the
    same id goes back in the response header (the same bytes), into the V2 body and into
    the JSON prediction log line (both UTF-8). Anything else is replaced by a new id.
    """
    if not value or _NOT_IN_HEADER.search(value):
        return None
    try:
        return value.decode("utf-8") if not value.isascii() else value.decode("ascii")
    except UnicodeDecodeError:
        return None


def header_value(request_id: str) -> bytes | None:
    """`request_id` (e.g. a V2 body's `id`) as response header bytes, or None if it cannot be one."""
    try:
        value = request_id.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from JSON's \\ud800
        return None
    return value if value and not _NOT_IN_HEADER.search(value) else None


def choose(header: bytes | None, body_id: str | None = None, where: str = "") -> tuple[str, bytes]:
    """(id, its header bytes) for a request: its `x-request-id` when that can be kept, else the
    V2 body's `id` when that can be a header value, else a new id. A refused id is named in
    one WARNING line (quoted, shortened), with the id that replaces it."""
    if header:
        rid = from_header(header)
        if rid is not None:
            return rid, header
    if body_id:
        value = header_value(body_id)
        if value is not None:
            return body_id, value
    rid = new_request_id()
    if header:
        log.warning("%sx-request-id %r is not a UTF-8 header value without control characters; answering as %s",
                    where, header[:_SHOWN], rid)
    elif body_id:
        log.warning("%sV2 id %r cannot be an x-request-id header value; answering as %s",
                    where, body_id[:_SHOWN], rid)
    return rid, rid.encode("ascii")
