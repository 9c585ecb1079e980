"""Fixtures for the chart tests: a working helm (installed into .tools/bin when missing)
and a renderable chart (real dependencies when `helm dependency build` has run, else stubs).
"""

from __future__ import annotations

import pytest
from chart_helpers import NAMESPACE, RELEASE, ROOT

from airflow_project.release import chart, tools


@pytest.fixture(scope="session")
def helm() -> str:
    return tools.ensure_helm(ROOT)


@pytest.fixture(scope="session")
def renderable(tmp_path_factory) -> chart.RenderableChart:
    return chart.prepare(tmp_path_factory.mktemp("chart"))


def pytest_report_header(config):
    mode = (
        "real dependencies"
        if chart.real_dependencies_present()
        else "STUB subcharts (dependencies not downloaded)"
    )
    return f"helm chart rendering: {mode}"


@pytest.fixture(scope="session", autouse=True)
def _say_render_mode(renderable, request):
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"[tests/chart] {renderable.describe()}")
    yield


class Renderer:
    def __init__(self, helm: str, rc: chart.RenderableChart):
        self.helm = helm
        self.rc = rc
        self._cache: dict = {}

    def __call__(
        self, env: str = "production", stages=chart.STAGE_TAGS, extra: tuple = ()
    ) -> list[dict]:
        key = (env, tuple(stages), tuple(extra))
        if key not in self._cache:
            values = [self.rc.path / "values.yaml"]
            if env == "kind":
                values.append(self.rc.path / "values-kind.yaml")
            self._cache[key] = chart.template(
                self.helm,
                self.rc.path,
                values,
                release=RELEASE,
                namespace=NAMESPACE,
                extra=[*chart.stage_set_flags(tuple(stages)), *extra],
            )
        return self._cache[key]


@pytest.fixture(scope="session")
def render(helm, renderable) -> Renderer:
    return Renderer(helm, renderable)
