"""The subset of gjson (https://github.com/tidwall/gjson) that KServe's router evaluates for
Switch and Sequence step conditions: dotted paths with `\\.` escapes, array indexes, `#`
(length), `#(key op value)` / `#(...)#` queries with ==, !=, <, <=, >, >=, % (glob), !%, and
a leading `[@this]` / `@this`.
"""

from __future__ import annotations

import fnmatch
import json
import re
from typing import Any

MISSING = object()
"""What `get` returns for a path that does not exist."""


def _split_path(path: str) -> list[str]:
    parts, buf, depth, i = [], "", 0, 0
    while i < len(path):
        ch = path[i]
        if ch == "\\" and i + 1 < len(path):
            buf += path[i + 1]
            i += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "." and depth == 0:
            parts.append(buf)
            buf = ""
        else:
            buf += ch
        i += 1
    parts.append(buf)
    return parts


def _literal(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    try:
        return json.loads(text)
    except ValueError:
        return text


_QUERY = re.compile(r"^(?P<key>.*?)\s*(?P<op>==|!=|<=|>=|<|>|%|!%)\s*(?P<value>.*)$")


def _matches(item: Any, query: str) -> bool:
    m = _QUERY.match(query)
    if not m:  # bare key: exists
        return get(item, query.strip()) is not MISSING
    key, op, raw = m["key"].strip(), m["op"], m["value"]
    left = get(item, key) if key else item
    if left is MISSING:
        return False
    right = _literal(raw)
    if op in ("%", "!%"):
        ok = isinstance(left, str) and fnmatch.fnmatchcase(left, str(right))
        return ok if op == "%" else not ok
    try:
        if op == "==":
            return left == right
        if op == "!=":
            return left != right
        if isinstance(left, bool) or isinstance(right, bool):
            return False
        if op == "<":
            return left < right
        if op == "<=":
            return left <= right
        if op == ">":
            return left > right
        return left >= right
    except TypeError:
        return False


def get(doc: Any, path: str) -> Any:
    """Evaluate a gjson path (subset) on parsed JSON; `MISSING` when it does not exist."""
    if path.startswith("[@this]"):
        doc, path = [doc], path[len("[@this]"):].lstrip(".")
    elif path.startswith("@this"):
        path = path[len("@this"):].lstrip(".")
    if path == "":
        return doc
    current = doc
    parts = _split_path(path)
    for n, part in enumerate(parts):
        if part == "#":
            if not isinstance(current, list):
                return MISSING
            rest = ".".join(parts[n + 1:])
            if not rest:
                return len(current)
            values = [get(x, rest) for x in current]
            return [v for v in values if v is not MISSING]
        if part.startswith("#(") and (part.endswith((")", ")#"))):
            if not isinstance(current, list):
                return MISSING
            all_matches = part.endswith(")#")
            query = part[2:-2] if all_matches else part[2:-1]
            hits = [x for x in current if _matches(x, query)]
            if all_matches:
                current = hits
            elif hits:
                current = hits[0]
            else:
                return MISSING
            continue
        if isinstance(current, dict):
            if part not in current:
                return MISSING
            current = current[part]
        elif isinstance(current, list) and part.isdigit():
            idx = int(part)
            if idx >= len(current):
                return MISSING
            current = current[idx]
        else:
            return MISSING
    return current


def exists(body: bytes, path: str) -> bool | None:
    """None when `body` is not valid JSON, else whether `path` exists."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return get(doc, path) is not MISSING
