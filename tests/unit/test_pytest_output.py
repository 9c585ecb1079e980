"""What `make test` shows: which subcharts the chart tests render (at the start, and at the
end when they are the real ones) and every skip with its reason, for any pytest run of this
project (pyproject addopts); without the dependency charts, their one short reason once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from airflow_project.release import chart
from airflow_project.settings import REPO_ROOT


def _pytest(*args: str, deps: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("MLOPS_E2E", "PYTEST_ADDOPTS", "CI")}
    env[chart.DEPS_ENV] = str(deps)
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_plain_pytest_run_shows_the_chart_header_and_skip_reasons(tmp_path) -> None:
    for dep in chart.dependencies():  # what the header looks at: the packages are there
        (tmp_path / chart.package_name(dep)).write_bytes(b"")
    out = _pytest("tests/e2e", deps=tmp_path)
    header, _, rest = out.partition("collected")
    assert f"helm chart rendering: REAL subcharts from {tmp_path}" in header  # before the tests run
    assert "helm chart rendering: REAL" in rest  # and again at the end
    assert "SKIPPED [" in out and "set MLOPS_E2E=1" in out  # the reason, not just an "s"


def test_without_the_dependency_charts_their_reason_is_printed_once(tmp_path) -> None:
    out = _pytest("tests/chart/test_kind_budget.py", "tests/chart/test_image_providers.py", deps=tmp_path)
    assert out.count(f"set {chart.DEPS_ENV} or run `make chart-deps`") == 1, out
    (line,) = [line for line in out.splitlines() if "needs the real subcharts" in line]
    assert line.startswith("SKIPPED [") and len(line) < 300, line
    assert "helm chart rendering: stub subcharts" in out.partition("collected")[0]
