"""The gjson subset KServe's router evaluates for step conditions (`serving.gjson`)."""

from __future__ import annotations

import json

import pytest

from airflow_project.serving import gjson

DOC = {"a": {"b.c": [1, 2, 3]}, "items": [{"n": 1, "s": "xy", "ok": True}, {"n": 7, "s": "zz"}],
       "instances": [{"kind": "x"}]}


def test_gjson_subset():
    doc = b'{"a": {"b.c": [1, 2, 3]}, "items": [{"n": 1, "s": "xy"}, {"n": 7}]}'
    assert gjson.exists(doc, "a.b\\.c.2")
    assert not gjson.exists(doc, "a.b\\.c.3")
    assert gjson.exists(doc, "items.#(n>5)")
    assert not gjson.exists(doc, "items.#(n>50)")
    assert gjson.exists(doc, 'items.#(s%"x*")')
    assert gjson.exists(doc, "[@this].#(items)")
    assert gjson.exists(b"{", "a") is None


@pytest.mark.parametrize(("path", "value"), [
    ("a.b\\.c.1", 2),                      # escaped dot, array index
    ("items.#", 2),                        # length
    ("items.#.n", [1, 7]),                 # every element's field
    ("items.#(n==7).s", "zz"),             # first match, then a field
    ("items.#(n<8)#", DOC["items"]),       # all matches
    ('items.#(s!%"x*").n', 7),             # not a glob
    ("items.#(ok==true).n", 1),            # JSON literal on the right
    ("@this.a.b\\.c.0", 1),
    ("", DOC),
])
def test_get_evaluates_paths(path, value):
    assert gjson.get(DOC, path) == value


@pytest.mark.parametrize("path", [
    "a.x", "a.b\\.c.9", "items.#(n>50)", "items.0.n.deeper", "instances.#(kind==\"y\")", "items.#(ok>1)",
])
def test_missing_paths_are_missing(path):
    assert gjson.get(DOC, path) is gjson.MISSING
    assert gjson.exists(json.dumps(DOC).encode(), path) is False


def test_bare_key_query_means_the_key_exists():
    assert gjson.get(DOC, "items.#(ok).n") == 1
    assert gjson.get(DOC, "items.#(missing)") is gjson.MISSING
