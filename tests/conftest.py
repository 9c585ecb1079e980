"""Test-session configuration shared by every test folder.

Airflow reads its configuration when it is first imported, so the session's
AIRFLOW_HOME (a fresh temporary folder with its own SQLite database) is set
here, before any test module imports Airflow.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

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


def _chart_rendering() -> str:
    """Which subcharts the chart tests render with (tests/chart/conftest.py prepares them)."""
    from airflow_project.release import chart

    deps = chart.deps_dir()
    missing = tuple(chart.missing_packages(deps))
    return chart.RenderableChart(deps, "stub" if missing else "real", deps, missing).describe()


def pytest_report_header(config) -> str:
    return _chart_rendering()


def pytest_terminal_summary(terminalreporter) -> None:
    terminalreporter.write_line(_chart_rendering())
