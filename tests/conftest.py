"""Test-session configuration shared by every test folder.

Airflow reads its configuration when it is first imported, so the session's
AIRFLOW_HOME (a fresh temporary folder with its own SQLite database) is set
here, before any test module imports Airflow.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="mlops-tests-"))
_AIRFLOW_HOME = _SESSION_HOME / "airflow"
_AIRFLOW_HOME.mkdir()
_DAGS = Path(__file__).resolve().parents[1] / "airflow_project" / "dags"

os.environ.update(
    {
        "MLOPS_TEST_HOME": str(_SESSION_HOME),
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(_DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "NO_PROXY": "127.0.0.1,localhost",
    }
)


def pytest_sessionfinish(session, exitstatus) -> None:
    """Remove the session's folder (Airflow DB, service data) unless asked to keep it."""
    import shutil

    if os.environ.get("MLOPS_KEEP_TEST_HOME") != "1":
        shutil.rmtree(_SESSION_HOME, ignore_errors=True)


def _chart_rendering() -> tuple[bool, str]:
    """Whether the chart tests render the real subcharts, and what with
    (tests/chart/conftest.py prepares them)."""
    from airflow_project.release import chart

    deps = chart.deps_dir()
    missing = tuple(chart.missing_packages(deps))
    return not missing, chart.RenderableChart(deps, "stub" if missing else "real", deps, missing).describe()


def pytest_report_header(config) -> str:
    real, description = _chart_rendering()
    return description if real else "helm chart rendering: stub subcharts (why: the skipped tests' reason)"


SUBCHARTS_SKIP = "needs the real subcharts"
"""How every skip for want of the dependency charts begins (tests/chart/conftest.py,
tests/integration/release/conftest.py)."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Skips for want of the dependency charts are reported at one place, so `-rs` folds
    them into one line with their count instead of one line per test module and line."""
    report = yield
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple) and SUBCHARTS_SKIP in str(longrepr[2]):
        here = Path(__file__)
        where = here.relative_to(Path.cwd()) if here.is_relative_to(Path.cwd()) else here
        report.longrepr = (str(where), pytest_runtest_makereport.__code__.co_firstlineno, longrepr[2])
    return report


def pytest_terminal_summary(terminalreporter) -> None:
    real, description = _chart_rendering()
    if real:  # otherwise the folded skip line says it
        terminalreporter.write_line(description)
