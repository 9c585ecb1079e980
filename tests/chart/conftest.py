"""Fixtures for the chart tests: a working helm (installed into .tools/bin when missing),
a copy of the chart with its real subcharts ($CHART_DEPS_DIR or helm/charts/; stubs only as
the last fallback, refused under CI=true), and cached renders.

Two ways to render, both cached for the session:
- `plan_render(env, stage)`: the `helm upgrade --install` step of that stage, exactly as
  `make deploy` builds it (airflow_project.release.plan), run as `helm template`;
- `render(env, stages, extra)`: the chart's values files with ad-hoc flags.
"""

from __future__ import annotations

import pytest
from chart_helpers import NAMESPACE, PLAN_TAG, RELEASE, ROOT, SITE_VALUES

from airflow_project.release import chart, plan, tools

PLAN_VALUES = {"production": (str(SITE_VALUES.relative_to(ROOT)),), "kind": ()}


@pytest.fixture(scope="session")
def helm() -> str:
    return tools.ensure_helm(ROOT)


@pytest.fixture(scope="session")
def renderable(tmp_path_factory) -> chart.RenderableChart:
    return chart.prepare(tmp_path_factory.mktemp("chart"))


@pytest.fixture()
def real_subcharts(renderable) -> None:
    """For tests about what the upstream charts render (under CI=true, `renderable` has
    already failed instead of falling back to stubs)."""
    if renderable.mode != "real":
        pytest.skip(f"needs the real subcharts: {renderable.describe()}")


def plan_config(env: str, helm: str) -> plan.DeployConfig:
    return plan.DeployConfig(
        env=env,
        release=RELEASE,
        namespace=NAMESPACE,
        tag=PLAN_TAG,
        helm=helm,
        values=PLAN_VALUES[env],
    )


class PlanRenders:
    """Every helm step of the real plan, rendered once."""

    def __init__(self, helm: str, rc: chart.RenderableChart):
        self.helm = helm
        self.rc = rc
        self._cache: dict[tuple[str, str], list[dict]] = {}

    def steps(self, env: str) -> list[plan.Step]:
        return [s for s in plan.build(plan_config(env, self.helm)) if "upgrade" in s.argv[1:2]]

    def __call__(self, env: str, stage: str = "airflow") -> list[dict]:
        key = (env, stage)
        if key not in self._cache:
            (step,) = [s for s in self.steps(env) if s.name == stage]
            argv = chart.template_argv(step.argv, self.rc.path, ROOT, self.helm)
            self._cache[key] = chart.run_template(argv)
        return self._cache[key]


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
