"""Refuse to release values that are still placeholders.

helm/values.yaml leaves the site-specific values of a production install empty (the
MLflow database host, the storage account, the ingress domain) or at KServe's example
domain: a render with them installs but cannot work. `make deploy` (and its DRY_RUN
plan) merges the values files and ``--set`` flags of the plan the way helm does and
stops with the name of each value that is empty where it is required, or looks like a
placeholder (an example domain, "changeme", "<your-...>").
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

# values path -> what belongs there
REQUIRED: dict[str, str] = {
    "mlflow.backendStore.postgres.host": "the Postgres server of MLflow's backend store",
    "mlflow.artifactRoot.azureBlob.storageAccount": "the Azure storage account for model artifacts",
    "kserve-resources.kserve.controller.gateway.domain": "the DNS domain of the ingress gateway",
}

PLACEHOLDER = re.compile(
    r"""(?ix)
    (?:^|[.@/])example\.(?:com|org|net|internal|local)\b   # example.com, db.example.internal
    | \.example(?:$|[.:/])                                  # host.example
    | \bchange[-_]?me\b | \breplace[-_]?me\b | \bTODO\b | \bFIXME\b
    | <[^<>]+>                                              # <your-account>
    """
)


class PlaceholderError(ValueError):
    """The values a release would install still contain placeholders."""


def merge(base: Any, override: Any) -> Any:
    """helm's merge of values files: maps merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = merge(base.get(key), value) if key in base else value
        return out
    return override


def _set(values: dict, path: str, value: Any) -> None:
    keys = path.split(".")
    node = values
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value


def merged_values(files: Sequence[Path], set_flags: Sequence[str] = ()) -> dict:
    """Values as helm sees them: files in order, then ``--set``/``--set-string`` flags
    (simple dotted paths, which is all the plan passes)."""
    values: dict = {}
    for path in files:
        values = merge(values, yaml.safe_load(Path(path).read_text()) or {})
    for flag, assignment in itertools.pairwise(set_flags):
        if flag in ("--set", "--set-string"):
            key, _, raw = assignment.partition("=")
            value: Any = raw
            if flag == "--set" and raw in ("true", "false"):
                value = raw == "true"
            _set(values, key, value)
    return values


def strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, value) of every string in a values tree or a rendered object."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from strings(value, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def _get(values: dict, path: str) -> Any:
    node: Any = values
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def problems(values: dict) -> list[str]:
    """One line per placeholder: the values path, its value and what it should be."""
    out = []
    for path, what in REQUIRED.items():
        value = _get(values, path)
        if value is None or (isinstance(value, str) and not value.strip()):
            out.append(f"{path} is empty: set it to {what}")
    for path, value in strings(values):
        match = PLACEHOLDER.search(value)
        if match:
            out.append(f"{path} = {value!r} is a placeholder ({match.group(0)!r})")
    return out


def check(files: Sequence[Path], set_flags: Sequence[str] = ()) -> None:
    found = problems(merged_values(files, set_flags))
    if found:
        names = ", ".join(str(f) for f in files)
        raise PlaceholderError(
            f"the release values ({names}) still contain placeholders:\n  "
            + "\n  ".join(found)
            + "\nPut your site's values in a file of your own and pass it: "
            "make deploy VALUES=path/to/site-values.yaml"
        )
