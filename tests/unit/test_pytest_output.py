"""What `make test` shows: which subcharts the chart tests render (at the start and at the
end) and every skip with its reason, for any pytest run of this project (pyproject addopts)."""

from __future__ import annotations

import os
import subprocess
import sys

from airflow_project.settings import REPO_ROOT


def test_a_plain_pytest_run_shows_the_chart_header_and_skip_reasons() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MLOPS_E2E", "PYTEST_ADDOPTS")}
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests/e2e"],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    header, _, rest = out.partition("collected")
    assert "helm chart rendering: " in header  # before the tests run
    assert "helm chart rendering: " in rest  # and again at the end
    assert "SKIPPED [" in out and "set MLOPS_E2E=1" in out  # the reason, not just an "s"
