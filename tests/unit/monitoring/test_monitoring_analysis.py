"""The measures on small hand-made frames, and the report's thresholds."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from airflow_project.monitoring import analysis
from airflow_project.monitoring.capture import COLUMNS, ServedTraffic
from airflow_project.monitoring.report import (
    PRIMARY,
    SHADOW,
    Labels,
    Reference,
    build_report,
    version_roles,
)
from airflow_project.monitoring.thresholds import DEFAULT_MAX_MAE_RATIO, MonitorThresholds
from airflow_project.wachttijden import export_checks
from airflow_project.wachttijden.schema import FEATURES, TARGET

A = ("Behandeling", "Orthopedie (305)", "Acute Zorg Euregio", "Ziekenhuis")
B = ("Diagnostiek", "Urologie (306)", "SpoedZorgNet", "Kliniek")
C = ("Behandeling", "Neurologie (330)", "SpoedZorgNet", "Ziekenhuis")
T0 = dt.datetime(2026, 1, 5, 12, tzinfo=dt.UTC)


def served(rows: list[tuple[tuple[str, ...], float]], version: str = "3", service: str = "",
           ids: list[str] | None = None) -> pd.DataFrame:
    ids = ids or [f"r{i}" for i in range(len(rows))]
    return pd.DataFrame([{"request_id": rid, "time": T0, "namespace": "serving", "service": service,
                          "version": version, **dict(zip(FEATURES, combo)), "prediction": p, "latency_ms": 2.0}
                         for rid, (combo, p) in zip(ids, rows)], columns=list(COLUMNS))


def labelled(rows: list[tuple[tuple[str, ...], float]]) -> pd.DataFrame:
    return pd.DataFrame([{TARGET: y, **dict(zip(FEATURES, combo))} for combo, y in rows])


LABELS = labelled([(A, 10.0), (A, 14.0), (B, 5.0)])  # A: two locations, B: one, C: none
SERVED = served([(A, 12.0), (A, 12.0), (B, 8.0), (C, 7.0)])


def test_realised_mae_matches_the_hand_computation():
    # A (predicted 12) against its two rows: (|12-10| + |12-14|) / 2 = 2, served twice;
    # B (predicted 8) against 5: 3; C has no labelled row: not scored, counted.
    result = analysis.realised_error(SERVED, LABELS)
    assert result.mae == pytest.approx((2 + 2 + 3) / 3)
    assert (result.scored, result.unlabelled, result.combinations, result.unlabelled_combinations,
            result.label_rows) == (3, 1, 2, 1, 3)
    assert result.labelled_share == pytest.approx(0.75)


def test_realised_error_without_any_labelled_combination():
    result = analysis.realised_error(served([(C, 7.0)]), LABELS)
    assert result.mae is None and result.unlabelled == 1 and result.scored == 0


def counts(combos: list[tuple[str, ...]]) -> dict[str, dict[str, int]]:
    return analysis.served_counts(pd.DataFrame([dict(zip(FEATURES, c)) for c in combos]))


def test_input_drift_uses_the_gates_psi_and_category_changes():
    baseline = counts([A] * 500 + [B] * 500)
    drift = analysis.input_drift(baseline, counts([A] * 250 + [B] * 250))
    assert all(d.psi == pytest.approx(0.0) and d.gated for d in drift.features.values())
    renamed = counts([A] * 250 + [C] * 250)
    drift = analysis.input_drift(baseline, renamed)
    assert drift.features["SPECIALISME"].psi == pytest.approx(
        export_checks.categorical_psi(baseline["SPECIALISME"], renamed["SPECIALISME"]))
    assert drift.new_categories["SPECIALISME"] == {"Neurologie (330)": 250}
    assert drift.missing_categories["SPECIALISME"] == {"Urologie (306)": 500}
    assert drift.largest.column in ("SPECIALISME", "TYPE_WACHTTIJD", "ROAZ_REGIO", "TYPE_ZORGINSTELLING")
    assert drift.largest.psi > 1.0


def test_a_drift_on_few_rows_is_reported_but_not_gated():
    baseline = counts([A] * 500 + [B] * 500)
    drift = analysis.input_drift(baseline, counts([A] * 3 + [C]))
    spec = drift.features["SPECIALISME"]
    assert spec.noise == pytest.approx(export_checks.psi_noise(3, 1000, 4))
    assert not spec.gated and drift.largest is None


def test_prediction_drift_is_the_gates_numeric_psi():
    rng = np.random.default_rng(0)
    reference = rng.normal(10, 3, 5000)
    same = analysis.prediction_drift(reference, rng.normal(10, 3, 2000))
    shifted = analysis.prediction_drift(reference, rng.normal(14, 3, 2000))
    assert same.drift.psi < 0.05 and same.drift.gated
    assert shifted.drift.psi == pytest.approx(export_checks.psi(reference, rng.normal(14, 3, 2000)), abs=0.2)
    assert shifted.drift.psi > 0.5 and shifted.served_mean > same.served_mean


def test_shadow_agreement_joins_by_request_id_and_instance():
    primary = served([(A, 12.0), (B, 8.0), (A, 12.0)], version="3", ids=["x", "y", "only-primary"])
    shadow = served([(B, 9.5), (A, 11.0)], version="4", ids=["y", "x"])
    result = analysis.shadow_agreement(primary, shadow, LABELS, primary_version="3", shadow_version="4")
    assert result.requests == 2
    assert result.metrics["mae_primary_vs_shadow"] == pytest.approx((1.0 + 1.5) / 2)
    assert result.metrics["share_within_1_week"] == pytest.approx(0.5)
    assert result.realised_primary.mae == pytest.approx((2 + 3) / 2)  # A 12 -> 2, B 8 -> 3
    assert result.realised_shadow.mae == pytest.approx((2 + 4.5) / 2)  # A 11 -> (1+3)/2, B 9.5 -> 4.5
    assert analysis.shadow_agreement(primary, served([(A, 1.0)], ids=["z"])) is None


def test_service_health_counts_requests_once():
    frame = served([(A, 1.0), (A, 1.0), (B, 2.0)], ids=["a", "a", "b"])
    frame.loc[2, "latency_ms"] = 10.0
    health = analysis.service_health(frame, failed=1)
    assert (health.requests, health.instances, health.failed) == (2, 3, 1)
    assert health.latency_p50_ms == pytest.approx(6.0) and health.failed_share == pytest.approx(1 / 3)


def traffic(frame: pd.DataFrame) -> ServedTraffic:
    for name in ("request_id", "namespace", "service", "version", *FEATURES):
        frame[name] = frame[name].astype("category")
    return ServedTraffic(frame, requests=int(frame["request_id"].nunique()))


def test_roles_from_services_and_from_shared_request_ids():
    both = pd.concat([served([(A, 1.0)] * 3, "3", "wachttijden-primary", ["a", "b", "c"]),
                      served([(A, 1.5)] * 3, "4", "wachttijden-shadow", ["a", "b", "c"])])
    assert version_roles(traffic(both.reset_index(drop=True))) == {"3": PRIMARY, "4": SHADOW}
    lines = pd.concat([served([(A, 1.0)] * 3, "5", ids=["a", "b", "c"]), served([(A, 1.5)] * 2, "4", ids=["a", "b"])])
    assert version_roles(traffic(lines.reset_index(drop=True))) == {"4": SHADOW, "5": PRIMARY}


def reference(version: str, holdout: float, combos: list[tuple[str, ...]]) -> Reference:
    baseline = labelled([(c, 10.0) for c in combos])
    return Reference(version, baseline, "train.csv", np.full(len(combos), 10.0) + np.arange(len(combos)) % 7,
                     holdout_mae=holdout)


def test_report_passes_clean_traffic_and_names_each_crossed_threshold():
    clean = [A] * 300 + [B] * 300
    ref = reference("3", 2.5, clean)
    ok = traffic(served([(c, 10.0 + i % 7) for i, c in enumerate(clean)]))
    report = build_report(ok, {"3": ref}, source="x", labels=Labels(labelled([(A, 10.0), (B, 13.0)]), "next.csv"))
    assert report.passed, report.reasons
    assert report.version("3").mae_ratio is not None

    drifted = traffic(served([(C, 30.0)] * 600))
    bad = build_report(drifted, {"3": reference("3", 2.0, clean)}, source="x",
                       labels=Labels(labelled([(C, 10.0)]), "next.csv"))
    reasons = " | ".join(bad.reasons)
    assert not bad.passed
    assert "v3: input drift" in reasons and "SPECIALISME" in reasons
    assert "prediction drift" in reasons
    assert "realised MAE 20.000 is 10.00x the hold-out MAE 2.000" in reasons
    assert bad.metrics()["v3/realised_mae"] == pytest.approx(20.0)
    assert bad.to_dict()["versions"]["3"]["realised"]["scored"] == 600


def test_a_shadows_measures_never_fail_the_report():
    clean = [(c, 10.0 + i % 7) for i, c in enumerate([A] * 400 + [B] * 400)]
    frame = pd.concat([served(clean, "3", "wachttijden-primary"),
                       served([(C, 40.0)] * 800, "4", "wachttijden-shadow")]).reset_index(drop=True)
    refs = {v: reference(v, 2.0, [A] * 400 + [B] * 400) for v in ("3", "4")}
    report = build_report(traffic(frame), refs, source="x")
    assert report.passed and report.version("4").role == SHADOW
    assert report.agreement is not None and report.agreement.requests == 800
    assert report.metrics()["agreement/mae_primary_vs_shadow"] > 25


def test_thresholds_default_to_the_gate_and_the_promotion_margin():
    from airflow_project.registry import BACKTEST_MARGIN

    t = MonitorThresholds.from_optional(None, None)
    assert t.max_drift == export_checks.DEFAULT_MAX_DRIFT and t.max_mae_ratio == DEFAULT_MAX_MAE_RATIO
    assert DEFAULT_MAX_MAE_RATIO == pytest.approx(1 + BACKTEST_MARGIN)
    with pytest.raises(ValueError, match="max_mae_ratio"):
        MonitorThresholds(max_mae_ratio=0)
