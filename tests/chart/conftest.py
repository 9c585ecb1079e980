"""Fixtures for the chart tests: a working helm (installed into .tools/bin when missing),
a copy of the chart with its real subcharts ($CHART_DEPS_DIR or helm/charts/; stubs only as
the last fallback, refused under CI=true), and cached renders.

Two ways to render, both cached for the session:
- `plan_render(env, stage)`: the `helm upgrade --install` step of that stage, exactly as
  `make deploy` builds it (airflow_project.release.plan), run as `helm template`;
- `render(env, stages, extra)`: the chart's values files with ad-hoc flags.
"""

from __future__ import annotations

import chart_helpers
import pytest
from chart_helpers import NAMESPACE, RELEASE, SITE_VALUES, PlanRenders

from airflow_project.release import chart, tools


@pytest.fixture(scope="session")
def helm() -> str:
    return tools.ensure_helm(chart_helpers.ROOT)


@pytest.fixture(scope="session")
def renderable(tmp_path_factory) -> chart.RenderableChart:
    return chart.prepare(tmp_path_factory.mktemp("chart"))


@pytest.fixture()
def real_subcharts(renderable) -> None:
    """For tests about what the upstream charts render (under CI=true, `renderable` has
    already failed instead of falling back to stubs)."""
    if renderable.mode != "real":
        pytest.skip(f"needs the real subcharts: {renderable.describe()}")


@pytest.fixture(scope="session")
def plan_render(helm, renderable) -> PlanRenders:
    return PlanRenders(helm, renderable)


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
            else:
                values.append(SITE_VALUES)
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
