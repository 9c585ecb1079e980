"""The Node.js the README names runs every package `npm ci` installs (Azurite and its
dependencies), so installing prints no EBADENGINE warnings: upgrading Azurite to a release
that wants a newer Node fails here first."""

from __future__ import annotations

import json
import re

import pytest

from airflow_project.settings import REPO_ROOT

# The newest release line of the Node the README names (npm compares full versions).
NODE_LINE_LATEST_MINOR = 19


def _version(text: str) -> tuple[int, ...]:
    parts = [int(p) if p.isdigit() else 0 for p in text.strip().lstrip("v=").replace("x", "0").split(".")]
    return tuple((parts + [0, 0, 0])[:3])


def satisfies(version: tuple[int, ...], spec: str) -> bool:
    """npm's `engines` ranges as the lock file has them: `||` of space-separated comparators
    (>=, >, <=, <, ^, a bare version, *)."""
    for alternative in spec.split("||"):
        ok = True
        for comparator in re.findall(r"(>=|<=|>|<|\^|~)?\s*([\dx.*]+)", alternative):
            op, bound = comparator
            if bound == "*":
                continue
            b = _version(bound)
            if op == ">=":
                ok &= version >= b
            elif op == ">":
                ok &= version > b
            elif op == "<=":
                ok &= version <= b
            elif op == "<":
                ok &= version < b
            elif op == "^":
                ok &= version >= b and version[0] == b[0]
            elif op == "~":
                ok &= version >= b and version[:2] == b[:2]
            else:
                ok &= version[:len(bound.split("."))] == b[:len(bound.split("."))]
        if ok:
            return True
    return False


@pytest.mark.parametrize(("spec", "expected"), [
    (">=22.0.0", False), (">=20.0.0", True), ("^18.19.0 || >=20.6.0", True), ("^18.19.0", False),
    (">= 0.8", True), ("*", True), ("<=0.11.8 || >0.11.10", True), (">=9.3.0 || >=8.10.0 <9.0.0", True),
])
def test_the_range_check(spec: str, expected: bool) -> None:
    assert satisfies((20, NODE_LINE_LATEST_MINOR, 0), spec) is expected


def test_every_locked_node_package_runs_on_the_readmes_node() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    major = int(re.search(r"Node\.js (\d+)", readme).group(1))
    node = (major, NODE_LINE_LATEST_MINOR, 0)
    lock = json.loads((REPO_ROOT / "package-lock.json").read_text())
    refused = {name.removeprefix("node_modules/"): package["engines"]["node"]
               for name, package in lock["packages"].items()
               if isinstance(package.get("engines"), dict) and "node" in package["engines"]
               and not satisfies(node, package["engines"]["node"])}
    assert not refused, f"need a newer Node than the README's Node.js {major}: {refused}"
    azurite = lock["packages"]["node_modules/azurite"]["version"]
    assert json.loads((REPO_ROOT / "package.json").read_text())["devDependencies"]["azurite"] == azurite
