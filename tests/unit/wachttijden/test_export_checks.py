"""The data checks, one measure at a time on small frames, and the gate on a clean and a
drifted pair."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from airflow_project.wachttijden import export_checks as checks
from airflow_project.wachttijden import synthetic
from airflow_project.wachttijden.dataset import clean, select_features
from airflow_project.wachttijden.schema import COLUMNS, FEATURES, TARGET

ROW = ("Behandeling", "Orthopedie (305)", "SpoedZorgNet", "Ziekenhuis")


def _frame(*rows: tuple[str, ...]) -> pd.DataFrame:
    """An export as select_features leaves it: the five columns as strings."""
    return pd.DataFrame(list(rows), columns=list(COLUMNS), dtype=str)


def _export(seed: int, rows: int = 4000, **drift) -> pd.DataFrame:
    return select_features(synthetic.generate(synthetic.SyntheticConfig(rows=rows, seed=seed, **drift)))


@pytest.fixture(scope="module")
def baseline() -> pd.DataFrame:
    return clean(_export(1), "baseline")[0]


# --------------------------------------------------------------------------- drop reasons
def test_each_drop_reason_is_counted_once_in_order():
    frame = _frame(("", *ROW), ("onbekend", *ROW), ("inf", *ROW), ("-2", *ROW),
                   ("4", "Behandeling", "", "SpoedZorgNet", "Ziekenhuis"),
                   ("", "Behandeling", "", "SpoedZorgNet", "Ziekenhuis"),  # empty target wins
                   ("3", "Behandeling", "Orthopedie (305)", "SpoedZorgNet", ""),  # filled, kept
                   ("2,5", *ROW))
    report = checks.check_export(frame, None, source="small.csv")
    rows = report.to_dict()["rows"]
    assert rows == {"read": 8, "usable": 2, "filled_type_zorginstelling": 1,
                    "dropped": {"empty_target": 2, "target_not_a_number": 2, "negative_target": 1,
                                "empty_feature": 1}}
    assert report.usable_share == pytest.approx(2 / 8)


def test_usable_share_gate_names_measure_value_and_threshold():
    frame = _frame(*[("5", *ROW)] * 7, *[("onbekend", *ROW)] * 3)
    report = checks.check_export(frame, None, source="x.csv", baseline_note="no champion yet")
    assert not report.passed and report.gate == "failed"
    [reason] = report.reasons
    assert reason.startswith("usable_share 0.700 is below min_usable_share 0.800 (7 of 10 rows usable")
    assert "3 not a number" in reason
    lenient = checks.check_export(frame, None, source="x.csv",
                                  thresholds=checks.GateThresholds(min_usable_share=0.7))
    assert lenient.passed


def test_an_export_without_a_usable_row_is_reported_not_raised():
    report = checks.check_export(_frame(("onbekend", *ROW)), None, source="x.csv")
    assert report.usable_share == 0.0 and not report.passed
    assert report.target["new"] == {"rows": 0.0}


# --------------------------------------------------------------------------- categories
def test_new_and_missing_categories_with_their_counts():
    old = {f: {"a": 5, "b": 3} for f in FEATURES}
    new = {**{f: {"a": 4, "b": 1} for f in FEATURES}, "SPECIALISME": {"a": 2, "c": 7}}
    added, missing = checks.category_changes(old, new)
    assert added == {"SPECIALISME": {"c": 7}}
    assert missing == {"SPECIALISME": {"b": 3}}


def test_renamed_specialisms_show_as_new_and_missing(baseline):
    report = checks.check_export(_export(2, renamed_specialisms=2), baseline, source="x",
                                 baseline_source="champion")
    assert set(report.new_categories) == {"SPECIALISME"}
    assert set(report.new_categories["SPECIALISME"]) == {"301 - Oogheelkunde",
                                                        "302 - Keel-, neus- en oorheelkunde"}
    assert set(report.missing_categories["SPECIALISME"]) == {"Oogheelkunde (301)",
                                                            "Keel-, neus- en oorheelkunde (302)"}
    assert report.missing_categories["SPECIALISME"]["Oogheelkunde (301)"] == int(
        (baseline["SPECIALISME"] == "Oogheelkunde (301)").sum())


# --------------------------------------------------------------------------- drift statistics
def test_psi_is_zero_for_the_same_sample_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, 5000)
    assert checks.psi(x, x) == pytest.approx(0.0)
    small, large = checks.psi(x, x + 1), checks.psi(x, x + 5)
    assert 0 < small < large
    assert checks.psi(x, rng.integers(0, 20, 5000)) < 0.02  # same distribution: noise only


def test_psi_puts_values_beyond_the_baseline_in_the_open_outer_bins():
    assert checks.psi([1, 2, 3, 4] * 100, [100] * 50) > 5  # all mass in the top bin


def test_categorical_psi_uses_epsilon_for_an_unseen_category():
    same = checks.categorical_psi({"a": 50, "b": 50}, {"a": 50, "b": 50})
    assert same == pytest.approx(0.0)
    one_percent_new = checks.categorical_psi({"a": 100}, {"a": 99, "z": 1})
    q = 0.01
    assert one_percent_new == pytest.approx((q - 1e-4) * np.log(q / 1e-4) + (0.99 - 1) * np.log(0.99), rel=1e-6)
    with pytest.raises(ValueError, match="at least one value"):
        checks.categorical_psi({}, {"a": 1})


def test_ks_statistic_is_the_largest_cdf_gap():
    assert checks.ks_statistic([1, 2, 3], [1, 2, 3]) == 0.0
    assert checks.ks_statistic([1, 1, 1, 1], [2, 2, 2, 2]) == 1.0


def test_target_summary():
    summary = checks.target_summary([1, 2, 3, 4, 100])
    assert summary["rows"] == 5 and summary["median"] == 3 and summary["max"] == 100
    assert summary["mean"] == pytest.approx(22.0)


# --------------------------------------------------------------------------- the gate, clean and drifted
def test_clean_export_passes_against_the_baseline(baseline):
    report = checks.check_export(_export(2), baseline, source="clean", baseline_source="champion v1")
    assert report.passed and report.reasons == []
    assert report.drift is not None and report.drift < 0.05
    assert report.new_categories == {} and report.missing_categories == {}
    assert set(report.drift_by_column) == {TARGET, *FEATURES}
    assert report.headline().endswith("new categories 0, missing 0; gate passed")


def test_drifted_export_fails_on_both_measures(baseline):
    drifted = _export(2, target_shift_weeks=4.0, renamed_specialisms=3, unusable_share=0.3)
    report = checks.check_export(drifted, baseline, source="drifted", baseline_source="champion v1")
    assert not report.passed
    usable, drift = report.reasons
    assert usable.startswith("usable_share 0.6") and "below min_usable_share 0.800" in usable
    assert drift.startswith(f"drift {report.drift:.3f} is above max_drift 0.200 (PSI against champion v1: ")
    assert "SPECIALISME" in drift and "WACHTTIJD" in drift
    assert report.drift_by_column[TARGET] > 1.0
    assert report.target["new"]["median"] > report.target["baseline"]["median"] + 3


def test_shifted_target_alone_fails_on_drift(baseline):
    report = checks.check_export(_export(2, target_shift_weeks=4.0), baseline, source="x", baseline_source="b")
    [reason] = report.reasons
    assert "WACHTTIJD" in reason and report.drift_column == TARGET


def test_override_lets_a_failed_gate_through_and_is_reported(baseline):
    drifted = _export(2, target_shift_weeks=4.0)
    report = checks.check_export(drifted, baseline, source="x", baseline_source="b",
                                 override="  NZa changed the definition, checked by A.  ")
    assert not report.passed and report.gate == "overridden"
    assert report.to_dict()["override"] == "NZa changed the definition, checked by A."


def test_without_baseline_the_baseline_checks_are_not_applicable():
    report = checks.check_export(_export(3, target_shift_weeks=9.0), None, source="x",
                                 baseline_note="no champion yet")
    data = report.to_dict()
    assert report.passed and data["drift"] is None
    assert data["baseline"] == {"source": None, "applicable": False, "note": "no champion yet"}
    assert "drift not measured (no champion yet)" in report.headline()


def test_report_json_has_the_cli_keys_and_round_trips(baseline):
    report = checks.check_export(_export(2), baseline, source="x", baseline_source="b")
    data = json.loads(json.dumps(report.to_dict()))
    assert {"usable_share", "drift", "new_categories", "missing_categories", "passed", "reasons"} <= set(data)
    assert report.metrics()["psi_SPECIALISME"] == pytest.approx(data["drift_by_column"]["SPECIALISME"])


def test_thresholds_refuse_nonsense_and_fill_defaults():
    assert checks.GateThresholds.from_optional(None, None) == checks.GateThresholds()
    assert checks.GateThresholds.from_optional(0.5, None).max_drift == checks.DEFAULT_MAX_DRIFT
    with pytest.raises(ValueError, match="min_usable_share must be between 0 and 1"):
        checks.GateThresholds(min_usable_share=1.5)
    with pytest.raises(ValueError, match="max_drift must be above 0"):
        checks.GateThresholds(max_drift=0)


def test_distribution_plot_is_a_png(baseline):
    png = checks.target_distribution_plot(baseline[TARGET], baseline[TARGET] + 2)
    assert png.startswith(b"\x89PNG")
    assert checks.target_distribution_plot(None, [1.0, 2.0], baseline_note="no champion yet").startswith(b"\x89PNG")


def test_the_plot_says_baseline_only_when_there_is_one():
    assert checks.distribution_title(True) == "WACHTTIJD: baseline vs new export"
    title = checks.distribution_title(False, "no champion yet, the first model")
    assert title == "WACHTTIJD of the new export (no baseline: no champion yet, the first model)"
    assert "baseline vs" not in title


def test_the_tail_above_the_shown_weeks_is_left_out_not_piled_into_the_last_bin():
    values = np.array([3.0] * 90 + [5.0] * 5 + [200.0] * 5)
    shares, hidden = checks.weekly_shares(values, top=5)
    assert hidden == 5
    assert shares[5] == pytest.approx(0.05)  # only the rows of week 5, not the 200-week tail
    assert shares.sum() == pytest.approx(0.95)  # shares of all rows: the hidden ones are not spread


def test_report_lists_the_largest_new_categories_and_counts_all(baseline):
    garbled = _export(2).assign(ROAZ_REGIO=[f"regio {i}" for i in range(4000)])
    report = checks.check_export(garbled, baseline, source="x", baseline_source="b")
    data = report.to_dict()
    assert len(data["new_categories"]["ROAZ_REGIO"]) == checks.LISTED_CATEGORIES
    assert data["new_categories_total"]["ROAZ_REGIO"] == len(report.new_categories["ROAZ_REGIO"]) > 3000
    assert data["missing_categories_total"]["ROAZ_REGIO"] == 11
    assert report.metrics()["new_categories"] > 3000
