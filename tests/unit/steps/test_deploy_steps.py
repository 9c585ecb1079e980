"""deploy_steps without MLflow: which versions a mirror compares."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from airflow_project.deploy_steps import SelfComparisonError, resolve_mirror_versions


@dataclass
class FakeVersion:
    version: str
    run_id: str = "run"
    aliases: list[str] = field(default_factory=list)


@dataclass
class FakeModel:
    aliases: dict[str, str]


class FakeRegistry:
    """The MlflowClient calls the resolver makes, over versions and aliases in memory."""

    tracking_uri = "http://mlflow.test"

    def __init__(self, versions: list[int], aliases: dict[str, int]) -> None:
        self.versions = versions
        self.aliases = {a: str(v) for a, v in aliases.items()}

    def _mv(self, version: str) -> FakeVersion:
        return FakeVersion(version, aliases=sorted(a for a, v in self.aliases.items() if v == version))

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
                                     "model 'wachttijden': shadowing the newest other version 4 instead")


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
