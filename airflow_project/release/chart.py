"""Render the umbrella chart offline.

``helm template`` refuses a chart whose dependencies are missing, even disabled ones.
When ``helm dependency build`` has downloaded them (``helm/charts/*.tgz``) we render
the real thing; otherwise we copy the chart to a temporary folder and put stub
subcharts (only Chart.yaml and values.yaml, generated from the dependency list) into
its ``charts/``. The mode is returned so callers can say which one was used.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from .project import repo_root

STAGE_TAGS = ("crds", "controllers", "kserve", "platform", "airflow")


def chart_dir(root: Path | None = None) -> Path:
    return (root or repo_root()) / "helm"


def load_chart(chart: Path | None = None) -> dict:
    chart = chart or chart_dir()
    return yaml.safe_load((chart / "Chart.yaml").read_text())


def dependencies(chart: Path | None = None) -> list[dict]:
    return list(load_chart(chart).get("dependencies") or [])


def dependency_key(dep: dict) -> str:
    """The values key (and condition prefix) of a dependency: its alias or name."""
    return dep.get("alias") or dep["name"]


def real_dependencies_present(chart: Path | None = None) -> bool:
    chart = chart or chart_dir()
    charts = chart / "charts"
    for dep in dependencies(chart):
        tgz = charts / f"{dep['name']}-{dep['version']}.tgz"
        if not tgz.is_file() and not (charts / dep["name"] / "Chart.yaml").is_file():
            return False
    return True


def write_stubs(chart_copy: Path) -> None:
    charts = chart_copy / "charts"
    if charts.exists():
        shutil.rmtree(charts)
    for dep in dependencies(chart_copy):
        stub = charts / dep["name"]
        stub.mkdir(parents=True, exist_ok=True)
        (stub / "Chart.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v2",
                    "name": dep["name"],
                    "version": str(dep["version"]),
                    "description": "offline stub: Chart.yaml and values.yaml only",
                    "type": "application",
                },
                sort_keys=False,
            )
        )
        (stub / "values.yaml").write_text("{}\n")


@dataclass
class RenderableChart:
    path: Path
    mode: str  # "real" or "stub"

    def describe(self) -> str:
        if self.mode == "real":
            return (
                f"rendering {self.path} with the REAL dependencies (helm dependency build has run)"
            )
        return (
            f"rendering a copy of the chart ({self.path}) with STUB subcharts (Chart.yaml + "
            "values.yaml only): dependencies are not downloaded, so only the chart's own "
            "templates produce objects"
        )


def prepare(workdir: Path, chart: Path | None = None, force_stub: bool = False) -> RenderableChart:
    chart = chart or chart_dir()
    if not force_stub and real_dependencies_present(chart):
        return RenderableChart(chart, "real")
    copy = workdir / "chart"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(chart, copy, ignore=shutil.ignore_patterns("charts", "Chart.lock", "*.tgz"))
    write_stubs(copy)
    return RenderableChart(copy, "stub")


def stage_set_flags(stage_tags: list[str] | tuple[str, ...]) -> list[str]:
    """``--set tags.X=true|false`` flags enabling exactly ``stage_tags``."""
    flags = []
    for tag in STAGE_TAGS:
        flags += ["--set", f"tags.{tag}={'true' if tag in stage_tags else 'false'}"]
    return flags


def template(
    helm: str,
    chart: Path,
    values: list[Path],
    *,
    release: str = "mlops",
    namespace: str = "mlops",
    extra: list[str] | None = None,
) -> list[dict]:
    cmd = [helm, "template", release, str(chart), "--namespace", namespace]
    for v in values:
        cmd += ["-f", str(v)]
    cmd += extra or []
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
