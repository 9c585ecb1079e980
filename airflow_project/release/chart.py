"""Render the umbrella chart offline, with the real subcharts.

``helm template`` refuses a chart whose dependencies are missing, even disabled ones.
The chart is copied to a work folder and its ``charts/`` filled from a directory of
packaged dependencies: ``$CHART_DEPS_DIR``, else ``helm/charts/`` as ``helm dependency
build`` leaves it. Only when a dependency is missing there do stub subcharts (Chart.yaml
and an empty values.yaml) stand in; they hide upstream defaults, schemas and objects, so
under ``CI=true`` that fallback is an error instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from .project import repo_root

STAGE_TAGS = ("crds", "controllers", "kserve", "platform", "airflow")
DEPS_ENV = "CHART_DEPS_DIR"


def chart_dir(root: Path | None = None) -> Path:
    return (root or repo_root()) / "helm"


def load_chart(chart: Path | None = None) -> dict:
    chart = chart or chart_dir()
    return yaml.safe_load((chart / "Chart.yaml").read_text())


def dependencies(chart: Path | None = None) -> list[dict]:
    return list(load_chart(chart).get("dependencies") or [])


def dependency_key(dep: dict) -> str:
    """The values key of a dependency: its alias or name."""
    return dep.get("alias") or dep["name"]


def package_name(dep: dict) -> str:
    """The file ``helm package``/``helm dependency build`` writes for a dependency."""
    return f"{dep['name']}-{dep['version']}.tgz"


def deps_dir(root: Path | None = None) -> Path:
    """Where the packaged dependencies are: ``$CHART_DEPS_DIR`` or ``helm/charts/``."""
    configured = os.environ.get(DEPS_ENV, "").strip()
    return Path(configured).resolve() if configured else chart_dir(root) / "charts"


def missing_packages(deps: Path, chart: Path | None = None) -> list[str]:
    return [package_name(d) for d in dependencies(chart) if not (deps / package_name(d)).is_file()]


def install_packages(deps: Path, chart: Path | None = None) -> list[Path]:
    """Copy the pinned dependency packages from ``deps`` into the chart's ``charts/``: what
    ``helm dependency build`` would download, for air-gapped installs."""
    chart = chart or chart_dir()
    missing = missing_packages(deps, chart)
    if missing:
        raise RuntimeError(f"{deps} lacks the chart dependencies {', '.join(missing)}")
    (chart / "charts").mkdir(exist_ok=True)
    copied = []
    for dep in dependencies(chart):
        target = chart / "charts" / package_name(dep)
        shutil.copy2(deps / package_name(dep), target)
        copied.append(target)
    return copied


def repositories(chart: Path | None = None) -> list[str]:
    """The chart repositories of the dependencies, in Chart.yaml order, once each."""
    return list(dict.fromkeys(d["repository"] for d in dependencies(chart)))


def repository_probe_url(repository: str) -> str:
    """Where a repository answers an HTTP request: a classic repository's index.yaml, an
    OCI registry's API root (/v2/, which answers 401 without a token)."""
    if repository.startswith("oci://"):
        host = repository.removeprefix("oci://").split("/", 1)[0]
        return f"https://{host}/v2/"
    return repository.rstrip("/") + "/index.yaml"


def repository_problem(repository: str, timeout: float = 10.0) -> str | None:
    """None when the repository answers at all (any HTTP status), else why not."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(repository_probe_url(repository), method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # it answered
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))
    return None


def fetch_if_missing(helm: str, chart: Path | None = None, *, probe=repository_problem,
                     run=subprocess.run, timeout: float = 600.0) -> str:
    """Fill ``helm/charts/`` with ``helm dependency build`` when it lacks a pinned package and
    no ``$CHART_DEPS_DIR`` is set, if the repositories answer. Never raises: returns the one
    line that says what happened (what `make test` prints before the tests)."""
    chart = chart or chart_dir()
    configured = os.environ.get(DEPS_ENV, "").strip()
    if configured:
        return f"chart dependencies: from {DEPS_ENV}={configured}"
    missing = missing_packages(chart / "charts", chart)
    if not missing:
        return f"chart dependencies: {chart / 'charts'} has all {len(dependencies(chart))}"
    for repository in repositories(chart):
        problem = probe(repository)
        if problem:
            return (f"chart dependencies: not fetched, {repository} does not answer ({problem}); "
                    f"the chart tests that need them are skipped")
    try:
        proc = run([helm, "dependency", "build", str(chart)], capture_output=True, text=True,
                   timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"chart dependencies: helm dependency build failed ({exc}); the chart tests that need them are skipped"
    still = missing_packages(chart / "charts", chart)
    if proc.returncode != 0 or still:
        last = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or [f"{len(still)} still missing"]
        return f"chart dependencies: helm dependency build failed ({last[0][:200]}); the chart tests that need them are skipped"
    return f"chart dependencies: fetched {len(missing)} into {chart / 'charts'}"


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
    source: Path | None = None  # the packaged dependencies copied in (real mode)
    missing: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.mode == "real":
            return f"helm chart rendering: REAL subcharts from {self.source}"
        if not self.missing:
            return "helm chart rendering: the chart's own templates (stub subcharts by request)"
        return (
            f"helm chart rendering: STUB subcharts, {len(self.missing)} dependency packages missing "
            f"from {self.source}: set {DEPS_ENV} or run `make chart-deps`"
        )


def prepare(
    workdir: Path, chart: Path | None = None, *, deps: Path | None = None, force_stub: bool = False
) -> RenderableChart:
    """A renderable copy of the chart in ``workdir/chart``.

    Raises RuntimeError under ``CI=true`` when it would have to fall back to stubs.
    """
    chart = chart or chart_dir()
    deps = deps or deps_dir(chart.parent)
    copy = workdir / "chart"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(chart, copy, ignore=shutil.ignore_patterns("charts", "Chart.lock", "*.tgz"))
    missing = tuple(missing_packages(deps, chart))
    if not missing and not force_stub:
        (copy / "charts").mkdir()
        for dep in dependencies(chart):
            shutil.copy2(deps / package_name(dep), copy / "charts" / package_name(dep))
        return RenderableChart(copy, "real", deps)
    rendered = RenderableChart(copy, "stub", deps, missing)
    if not force_stub and os.environ.get("CI", "").lower() == "true":
        raise RuntimeError(f"CI=true refuses stub subcharts: {rendered.describe()}")
    write_stubs(copy)
    return rendered


def stage_set_flags(stage_tags: list[str] | tuple[str, ...]) -> list[str]:
    """``--set tags.X=true|false`` flags enabling exactly ``stage_tags``."""
    flags = []
    for tag in STAGE_TAGS:
        flags += ["--set", f"tags.{tag}={'true' if tag in stage_tags else 'false'}"]
    return flags


# `helm upgrade --install` flags that `helm template` does not take (with their arguments).
_INSTALL_ONLY = {"--wait": 0, "--create-namespace": 0, "--timeout": 1, "--atomic": 0}


def template_argv(upgrade_argv: list[str], chart_copy: Path, root: Path, helm: str) -> list[str]:
    """The ``helm template`` equivalent of a plan's ``helm upgrade --install`` step, rendering
    ``chart_copy``: the chart folder and its values files map into the copy, other
    relative paths are taken from ``root``."""
    if upgrade_argv[1:3] != ["upgrade", "--install"]:
        raise ValueError(f"not a helm upgrade --install step: {upgrade_argv}")
    release, chart_arg, rest = upgrade_argv[3], upgrade_argv[4], upgrade_argv[5:]

    def local(path: str) -> str:
        p = Path(path)
        if p.is_absolute():
            return path
        if p.parts[: len(Path(chart_arg).parts)] == Path(chart_arg).parts:
            return str(chart_copy / p.relative_to(chart_arg))
        return str(root / p)

    argv = [helm, "template", release, str(chart_copy)]
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg in _INSTALL_ONLY:
            i += 1 + _INSTALL_ONLY[arg]
            continue
        if arg in ("-f", "--values"):
            argv += [arg, local(rest[i + 1])]
            i += 2
            continue
        argv.append(arg)
        i += 1
    return argv


def run_template(argv: list[str]) -> list[dict]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stderr}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


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
    return run_template(cmd + (extra or []))
