"""Shared helpers of the chart tests (imported by module name: tests/ has no packages)."""

from __future__ import annotations

from functools import lru_cache

import yaml

from airflow_project.release import project

ROOT = project.repo_root()
HELM_DIR = ROOT / "helm"
VALUES = HELM_DIR / "values.yaml"
VALUES_KIND = HELM_DIR / "values-kind.yaml"
RELEASE = "mlops"
NAMESPACE = "mlops"


@lru_cache
def values(kind: bool = False) -> dict:
    base = yaml.safe_load(VALUES.read_text())
    if not kind:
        return base
    return _merge(base, yaml.safe_load(VALUES_KIND.read_text()))


def _merge(a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = _merge(a.get(k), v) if k in a else v
        return out
    return b


def own(objs: list[dict]) -> list[dict]:
    """Objects of the chart's own templates (label part-of=airflow-project)."""
    return [
        o
        for o in objs
        if (o.get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/part-of")
        == "airflow-project"
    ]


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o.get("kind") == kind]


def release_info(objs: list[dict]) -> dict:
    (cm,) = [
        o
        for o in objs
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == f"{RELEASE}-release-info"
    ]
    return cm["data"]
