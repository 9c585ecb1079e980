"""The gate's default thresholds separate exports that must pass from drifted ones, on the
calibration's own data (a small run of loadtest/drift_calibration.py)."""

from __future__ import annotations

from loadtest import drift_calibration as cal


def test_defaults_pass_clean_exports_and_stop_drifted_ones():
    cases = cal.run(rows=3000)
    wrong = [(c.data, c.scenario, c.report.reasons) for c in cases
             if c.report.passed != (c.expect == cal.PASS)]
    assert not wrong
    assert {c.data for c in cases} == {"synthetic", "NZa-shaped"}
    assert sum(c.expect == cal.STOP for c in cases) >= 8


def test_report_lists_every_case():
    cases = cal.run(rows=2000)
    text = cal.report(cases)
    assert text.count("\n| ") == len(cases) + 2  # header, separator, one row per case
    assert "(unexpected)" not in text


def test_margin_measurement_reports_the_chance_spread():
    spread = cal.margin_spread(pairs=3, rows=2000)
    assert spread.shape == (3,) and all(-0.5 < x < 0.5 for x in spread)
    assert "exceeded by chance in" in cal.margin_report(spread)
