"""The InferenceService with capture (KServe's logger writing to the data lake) validates
strictly against the KServe CRD the chart installs (`kserve-crd` v0.20.0), as the API server
would check what the deploy DAGs apply."""

from __future__ import annotations

import pytest
from chart_helpers import by_kind
from crd_schema import CRDs

from airflow_project.serving import manifests

pytestmark = [pytest.mark.chart, pytest.mark.usefixtures("real_subcharts")]


@pytest.fixture(scope="module")
def crds(plan_render) -> CRDs:
    return CRDs(by_kind(plan_render("production"), "CustomResourceDefinition"))


def captured(**capture) -> dict:
    config = manifests.ServingConfig(capture=manifests.Capture("serving-logs-credentials", **capture))
    return manifests.inference_service("wachttijden-primary", "models:/wachttijden/3", config, cluster_local=True)


def test_the_logger_spec_validates_against_the_kserve_crd(crds):
    isvc = captured()
    assert isvc["spec"]["predictor"]["logger"]["storage"]["path"]
    assert crds.errors(isvc) == []


def test_the_crd_would_refuse_a_logger_it_does_not_know(crds):
    isvc = captured()
    isvc["spec"]["predictor"]["logger"]["storage"]["secretName"] = "x"  # not a LoggerStorageSpec field
    isvc["spec"]["predictor"]["logger"]["mode"] = "everything"
    errors = crds.errors(isvc)
    assert any("secretName" in e for e in errors) and any("everything" in e for e in errors)
