"""deploy_steps without MLflow or a cluster: which versions a mirror compares, what a mirror
deployment applies, how long a smoke test keeps trying."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from airflow_project.deploy_steps import SelfComparisonError, resolve_mirror_versions


@dataclass
class FakeVersion:
    version: str
    run_id: str = "run"
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeModel:
    aliases: dict[str, str]


class FakeRegistry:
    """The MlflowClient calls the resolver makes, over versions and aliases in memory."""

    tracking_uri = "http://mlflow.test"

    def __init__(self, versions: list[int], aliases: dict[str, int], export_dates: dict[int, str] | None = None) -> None:
        self.versions = versions
        self.aliases = {a: str(v) for a, v in aliases.items()}
        self.export_dates = export_dates or {v: "2025-01-01" for v in versions}

    def _mv(self, version: str) -> FakeVersion:
        return FakeVersion(version, aliases=sorted(a for a, v in self.aliases.items() if v == version),
                           tags={"export_date": self.export_dates[int(version)]})

    def get_model_version(self, name: str, version: str) -> FakeVersion:
        from mlflow.exceptions import MlflowException

        if int(version) not in self.versions:
            raise MlflowException("no such version", error_code="RESOURCE_DOES_NOT_EXIST")
        return self._mv(version)

    def get_model_version_by_alias(self, name: str, alias: str) -> FakeVersion:
        from mlflow.exceptions import MlflowException

        if alias not in self.aliases:
            raise MlflowException("no such alias", error_code="INVALID_PARAMETER_VALUE")
        return self._mv(self.aliases[alias])

    def search_model_versions(self, _filter: str) -> list[FakeVersion]:
        return [self._mv(str(v)) for v in self.versions]

    def get_registered_model(self, name: str) -> FakeModel:
        return FakeModel(self.aliases)


def test_different_versions_are_used_as_they_are():
    registry = FakeRegistry([1, 2, 3], {"champion": 3, "challenger": 2})
    got = resolve_mirror_versions("champion", "challenger", client=registry)
    assert (got["primary"]["version"], got["shadow"]["version"]) == ("3", "2")
    assert "note" not in got["shadow"]


def test_one_version_behind_both_aliases_shadows_the_newest_other_version():
    registry = FakeRegistry([1, 2, 3, 4], {"champion": 3, "challenger": 3})
    got = resolve_mirror_versions("champion", "challenger", client=registry)
    assert got["primary"]["version"] == "3"
    assert got["shadow"]["version"] == "4" and got["shadow"]["model_uri"] == "models:/wachttijden/4"
    assert got["shadow"]["requested"] == "challenger"
    assert got["shadow"]["note"] == ("primary 'champion' and shadow 'challenger' both resolve to version 3 of "
                                     "model 'wachttijden': shadowing the newest other version 4 instead (by the "
                                     "export date of its training data, 2025-01-01, then its number)")


def test_the_stand_in_shadow_is_the_newest_by_export_date_not_by_number():
    """v4 was trained later, but on an older export (a backfill): v2 is the newer model."""
    registry = FakeRegistry([1, 2, 3, 4], {"champion": 3, "challenger": 3},
                            {1: "2025-01-01", 2: "2025-03-01", 3: "2025-03-01", 4: "2024-03-09"})
    got = resolve_mirror_versions("champion", "challenger", client=registry)
    assert got["shadow"]["version"] == "2"
    assert "newest other version 2 instead (by the export date of its training data, 2025-03-01" in got["shadow"]["note"]


def test_the_only_version_fails_at_once_naming_aliases_and_versions():
    registry = FakeRegistry([2], {"champion": 2, "challenger": 2})
    with pytest.raises(SelfComparisonError) as info:
        resolve_mirror_versions("champion", "challenger", client=registry)
    message = str(info.value)
    assert "primary 'champion' and shadow 'challenger' both resolve to version 2" in message
    assert "no other version to shadow" in message
    assert "existing versions: 2; aliases: challenger -> 2, champion -> 2" in message
    assert isinstance(info.value, ValueError)  # fail_on_bad_input: no retries


def test_a_shadow_named_by_the_primarys_own_number_is_refused():
    registry = FakeRegistry([1, 2], {"champion": 2})
    with pytest.raises(SelfComparisonError, match="a shadow named by number must be another version"):
        resolve_mirror_versions("champion", "2", client=registry)


class RecordingTarget:
    """A deploy target that records what is applied and is Ready at once."""

    name = "kubernetes"

    def __init__(self, namespace: str = "serving") -> None:
        self.namespace = namespace
        self.applied: list[dict] = []

    def apply(self, manifest: dict) -> None:
        self.applied.append(manifest)

    def wait_ready(self, kind: str, name: str, timeout: float = 0) -> str:
        return f"http://{name}.{self.namespace}.svc.cluster.local"


def test_a_graph_behind_the_gateway_gets_its_external_route(monkeypatch):
    """KServe's Standard mode gives an InferenceGraph no Ingress: with the chart's gateway and
    domain the mirror deployment applies the VirtualService that serves its external host."""
    from airflow_project.deploy_steps import deploy_mirroring

    monkeypatch.setenv("MLOPS_SERVING_GATEWAY", "serving/serving-gateway")
    monkeypatch.setenv("MLOPS_INGRESS_DOMAIN", "mlops.test")
    target = RecordingTarget()
    out = deploy_mirroring("wachttijden-graph", "p", "s", mode="graph", target=target)
    assert [(m["kind"], m["metadata"]["name"]) for m in target.applied] == [
        ("InferenceGraph", "wachttijden-graph"), ("VirtualService", "wachttijden-graph-ingress")]
    assert out["graph_host"] == "wachttijden-graph-serving.mlops.test"
    assert out["entry_url"] == "http://wachttijden-graph.serving.svc.cluster.local"


def test_a_graph_without_a_gateway_gets_no_route(monkeypatch):
    from airflow_project.deploy_steps import deploy_mirroring

    monkeypatch.delenv("MLOPS_SERVING_GATEWAY", raising=False)
    target = RecordingTarget()
    out = deploy_mirroring("wachttijden-graph", "p", "s", mode="graph", target=target)
    assert [m["kind"] for m in target.applied] == ["InferenceGraph"] and "graph_host" not in out


def test_smoke_test_keeps_trying_until_its_deadline(monkeypatch):
    """KServe marks a graph Ready as soon as its router Deployment has an Available condition,
    True or not (raw_ig.go PropagateRawStatus): the first requests may find no endpoint."""
    import httpx

    from airflow_project import deploy_steps

    now = [0.0]
    calls = []

    def predict(url, rows, model_name, **kwargs):
        calls.append(now[0])
        if now[0] < 60:
            raise httpx.ConnectError("connection refused")
        return [4.0]

    monkeypatch.setattr(deploy_steps, "_predict", predict)

    def sleep(seconds: float) -> None:
        now[0] += seconds

    result = deploy_steps.smoke_test("http://graph", graph=True, timeout=120, clock=lambda: now[0], sleep=sleep)
    assert result["prediction"] == 4.0 and len(calls) > 5
    calls.clear()
    now[0] = -1000.0
    with pytest.raises(deploy_steps.SmokeTestError, match=r"failed for 120s \(\d+ attempts\): connection refused"):
        deploy_steps.smoke_test("http://graph", graph=True, timeout=120, clock=lambda: now[0], sleep=sleep)
