"""`make scan`: checkov on the rendered own templates and on the Dockerfile.

checkov runs from its own virtualenv (.tools/checkov, see tools.py) with no network
(--skip-download, BC_SKIP_MAPPING). Suppressions live in
tests/chart/checkov-suppressions.yaml, each with a reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import yaml

from . import chart, tools
from .project import repo_root

SUPPRESSIONS = "tests/chart/checkov-suppressions.yaml"


def suppressions(root: Path | None = None) -> dict[str, list[dict]]:
    data = yaml.safe_load(((root or repo_root()) / SUPPRESSIONS).read_text()) or {}
    return {k: list(v or []) for k, v in data.items()}


def _run_checkov(checkov: str, target: list[str], framework: str, skips: list[str]) -> dict:
    cmd = [
        checkov,
        *target,
        "--framework",
        framework,
        "--output",
        "json",
        "--quiet",
        "--compact",
        "--skip-download",
    ]
    if skips:
        cmd += ["--skip-check", ",".join(skips)]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"checkov failed ({proc.returncode}): {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout)
    if isinstance(out, list):  # one report per framework
        out = out[0]
    return out


def render_own(workdir: Path, helm: str, root: Path) -> tuple[Path, str]:
    """Render all stages of the chart's own templates (stub subcharts), kind and production."""
    c = chart.prepare(workdir, chart.chart_dir(root), force_stub=True)
    outdir = workdir / "rendered"
    outdir.mkdir(exist_ok=True)
    for name, values in (
        ("production", ["values.yaml"]),
        ("kind", ["values.yaml", "values-kind.yaml"]),
    ):
        objs = chart.template(helm, c.path, [c.path / v for v in values])
        (outdir / f"{name}.yaml").write_text(yaml.safe_dump_all(objs, sort_keys=False))
    return outdir, c.describe()


def scan(root: Path | None = None) -> list[tuple[str, dict]]:
    """Run both scans; return (framework, failed check) pairs."""
    root = root or repo_root()
    checkov = tools.ensure_checkov(root)
    helm = tools.ensure_helm(root)
    sup = suppressions(root)
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        rendered, how = render_own(Path(tmp), helm, root)
        print(f"[scan] {how}")
        k8s = _run_checkov(
            checkov,
            ["-d", str(rendered)],
            "kubernetes",
            [s["id"] for s in sup.get("kubernetes", [])],
        )
        dock = _run_checkov(
            checkov,
            ["-f", str(root / "Dockerfile")],
            "dockerfile",
            [s["id"] for s in sup.get("dockerfile", [])],
        )
    for fw, report in (("kubernetes", k8s), ("dockerfile", dock)):
        summary = report.get("summary", {})
        print(
            f"[scan] {fw}: passed {summary.get('passed')}, failed {summary.get('failed')}, "
            f"skipped {summary.get('skipped')}"
        )
        for check in report.get("results", {}).get("failed_checks", []):
            failed.append((fw, check))
    return failed


def main() -> int:
    failed = scan()
    for fw, check in failed:
        print(
            f"FAILED [{fw}] {check['check_id']} {check['check_name']}: {check.get('resource')} "
            f"({check.get('file_path')}:{check.get('file_line_range')})"
        )
    return 1 if failed else 0
