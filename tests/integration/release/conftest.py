"""Rendered pods run for real: fixtures shared with the chart tests (the chart rendered with
its real subcharts, exactly as `make deploy` renders each stage), from tests/chart."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "chart"))

from chart_helpers import ROOT, PlanRenders

from airflow_project.release import chart, tools


@pytest.fixture(scope="session")
def plan_render(tmp_path_factory) -> PlanRenders:
    """The plan's renders; skips (naming what is missing) without the real subcharts, whose
    objects are what these tests run (under CI=true `chart.prepare` fails instead)."""
    rc = chart.prepare(tmp_path_factory.mktemp("release-chart"))
    if rc.mode != "real":
        pytest.skip(f"needs the real subcharts: {rc.describe()}")
    return PlanRenders(tools.ensure_helm(ROOT), rc)
