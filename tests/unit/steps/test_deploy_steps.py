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
