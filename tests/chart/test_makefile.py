"""The Makefile on a machine where nothing is installed yet: what `make` would run, read
with `make -n` in a fresh copy of the repository (no .venv). The real run, `make install
helm lint` with a bare Python first on PATH, is tests/integration/release/test_make_bare.py."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from chart_helpers import ROOT, fresh_copy

pytestmark = pytest.mark.chart

RELEASE_MODULE = "-m airflow_project.release"


def test_release_tooling_always_runs_in_the_project_environment(tmp_path):
    """`RELEASE_PY` used to fall back to the runner's python3 when .venv did not exist when
    make read the Makefile, which is always the case in a fresh clone: `make install helm`
    then ran `python3 -m airflow_project.release tools` without PyYAML."""
    if not shutil.which("make"):
        pytest.skip("make not installed")
    copy = fresh_copy(tmp_path / "repo")
    proc = subprocess.run(
        ["make", "-n", "install", "helm", "chart-deps", "requirements", "deploy", "DRY_RUN=1"],
        cwd=copy, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "CHART_DEPS_DIR": str(tmp_path / "charts")},  # chart-deps runs the tooling too
    )
    assert proc.returncode == 0, proc.stderr
    calls = [line.strip() for line in proc.stdout.splitlines() if RELEASE_MODULE in line]
    assert len(calls) == 4, proc.stdout  # tools, chart-deps --from, export-requirements, plan
    wrong = [c for c in calls if not c.lstrip("@").startswith(f".venv/bin/python {RELEASE_MODULE}")]
    assert not wrong, "\n".join(wrong)
    # and the environment is created before the first of them
    lines = proc.stdout.splitlines()
    sync = next(i for i, line in enumerate(lines) if line.startswith("uv sync"))
    first = next(i for i, line in enumerate(lines) if RELEASE_MODULE in line)
    assert sync < first


def test_fresh_copy_has_the_tracked_files_and_no_environment(tmp_path):
    copy = fresh_copy(tmp_path / "repo")
    assert (copy / "Makefile").read_text() == (ROOT / "Makefile").read_text()
    assert not (copy / ".venv").exists() and not (copy / "node_modules").exists()
