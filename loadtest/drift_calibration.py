"""Where the data gate's default thresholds come from: the drift statistic measured on
exports that must pass and exports that must be stopped; and where the promotion rule's
backtest margin comes from (`margin_spread`).

    python -m loadtest.drift_calibration [--rows 20000]      (make calibrate-drift)

Two kinds of data, every figure seeded (the same run gives the same table):

- synthetic: `mlops data generate` exports of other seeds against a baseline (clean), and
  with each drift option of the generator;
- NZa-shaped: a panel like the real export, built here: about 170 locations (hospitals
  offering most specialisms, clinics a few), every offered (specialism, type of wait) a row,
  waiting times right-skewed (lognormal, median 3-8 weeks by type, long tail), each cell
  drifting month to month (a per-cell random walk of 10% a month plus a system-wide 3%),
  whole weeks, ~4% `onbekend`/empty. Month 0 is the baseline; months 1-6 are what a
  champion meets while it stays champion; then the changes a person should look at.

Writes reports/drift-calibration.md and prints it. A measurement, not a test: the unit
test `tests/unit/wachttijden/test_drift_calibration.py` asserts that the defaults separate
the two groups on a small run.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from airflow_project.wachttijden import export_checks, synthetic
from airflow_project.wachttijden.categories import ROAZ_REGIOS, SPECIALISMEN, TYPES_WACHTTIJD
from airflow_project.wachttijden.dataset import clean, select_features
from airflow_project.wachttijden.schema import FEATURES, TARGET

REPORT = Path(__file__).resolve().parents[1] / "reports" / "drift-calibration.md"
PASS, STOP = "pass", "stop"


@dataclass(frozen=True)
class Case:
    data: str  # synthetic | NZa-shaped
    scenario: str
    expect: str  # pass | stop
    report: export_checks.ExportReport


# --------------------------------------------------------------------------- NZa-shaped panel
_TYPE_MEDIAN_WEEKS = {"Polikliniekbezoek": 5.0, "Diagnostiek": 3.0, "Behandeling": 8.0}


@dataclass(frozen=True)
class Panel:
    """The cells of an NZa-shaped export and their log waiting time in month 0."""

    cells: pd.DataFrame  # the four features per row
    log_level: np.ndarray

    @classmethod
    def build(cls, seed: int = 7, hospitals: int = 110, clinics: int = 60) -> Panel:
        rng = np.random.default_rng(seed)
        spec_effect = rng.normal(0.0, 0.4, len(SPECIALISMEN))
        rows = []
        for location in range(hospitals + clinics):
            hospital = location < hospitals
            region = ROAZ_REGIOS[rng.integers(len(ROAZ_REGIOS))]
            offered = (np.flatnonzero(rng.random(len(SPECIALISMEN)) < 0.8) if hospital
                       else rng.choice(len(SPECIALISMEN), size=rng.integers(2, 5), replace=False))
            for s in offered:
                for kind in TYPES_WACHTTIJD:
                    rows.append((kind, SPECIALISMEN[s], region, "Ziekenhuis" if hospital else "Kliniek",
                                 np.log(_TYPE_MEDIAN_WEEKS[kind]) + spec_effect[s]))
        cells = pd.DataFrame(rows, columns=[*FEATURES, "log_level"])
        log_level = cells.pop("log_level").to_numpy() + rng.normal(0.0, 0.6, len(cells))
        return cls(cells, log_level)

    def months(self, count: int, seed: int = 11, cell_sd: float = 0.10, system_sd: float = 0.03
               ) -> list[np.ndarray]:
        """Log levels of months 0..count-1: a random walk per cell plus a shared one."""
        rng = np.random.default_rng(seed)
        levels = [self.log_level]
        for _ in range(count - 1):
            levels.append(levels[-1] + rng.normal(0.0, cell_sd, len(self.cells)) + rng.normal(0.0, system_sd))
        return levels

    def export(self, log_level: np.ndarray, seed: int, missing_share: float = 0.04) -> pd.DataFrame:
        """One month as select_features leaves it: strings, whole weeks, some `onbekend`/empty."""
        rng = np.random.default_rng(seed)
        frame = self.cells.copy()
        weeks = np.clip(np.rint(np.exp(log_level)), 0, None).astype(int).astype(str).astype(object)
        missing = rng.random(len(frame)) < missing_share
        weeks[missing] = np.where(rng.random(int(missing.sum())) < 0.5, "onbekend", "")
        frame.insert(0, TARGET, weeks)
        return frame


def _check(frame: pd.DataFrame, baseline: pd.DataFrame, source: str) -> export_checks.ExportReport:
    return export_checks.check_export(frame, baseline, source=source, baseline_source="month 0")


def nza_shaped_cases(months: int = 7) -> list[Case]:
    panel = Panel.build()
    levels = panel.months(months)
    baseline, _ = clean(panel.export(levels[0], seed=0), "month 0")
    cases = [Case("NZa-shaped", f"month {m} vs month 0", PASS, _check(panel.export(levels[m], seed=m), baseline,
                                                                      f"month {m}"))
             for m in range(1, months)]
    month1 = panel.export(levels[1], seed=1)
    rise = panel.export(levels[1] + np.log(1.10), seed=1)
    cases.append(Case("NZa-shaped", "month 1, every waiting time +10% (a busy season)", PASS,
                      _check(rise, baseline, "+10%")))
    changes = {
        "month 1, every waiting time +50%": panel.export(levels[1] + np.log(1.5), seed=1),
        "month 1, waiting times in days instead of weeks": month1.assign(
            **{TARGET: [str(int(w) * 7) if w.isdigit() else w for w in month1[TARGET]]}),
        "month 1, one ROAZ region missing": month1[month1["ROAZ_REGIO"] != ROAZ_REGIOS[0]],
        "month 1, 3 specialisms renamed": month1.assign(SPECIALISME=[
            synthetic.renamed(s) if s in SPECIALISMEN[:3] else s for s in month1["SPECIALISME"]]),
        "month 1, 30% of rows unusable": month1.assign(**{TARGET: np.where(
            np.random.default_rng(3).random(len(month1)) < 0.3, "onbekend", month1[TARGET])}),
    }
    cases += [Case("NZa-shaped", name, STOP, _check(frame, baseline, name)) for name, frame in changes.items()]
    return cases


# --------------------------------------------------------------------------- synthetic
def synthetic_cases(rows: int) -> list[Case]:
    def export(config: synthetic.SyntheticConfig) -> pd.DataFrame:
        return select_features(synthetic.generate(config))

    base = synthetic.SyntheticConfig(rows=rows, seed=1)
    baseline, _ = clean(export(base), "seed 1")
    cases = []
    for seed in (2, 3, 4):
        cases.append(Case("synthetic", f"seed {seed} vs seed 1, {rows:,} rows", PASS,
                          _check(export(replace(base, seed=seed)), baseline, f"seed {seed}")))
    small = max(1000, rows // 20)
    small_baseline, _ = clean(export(replace(base, rows=small)), "small")
    cases.append(Case("synthetic", f"seed 2 vs seed 1, {small:,} rows each", PASS,
                      _check(export(replace(base, rows=small, seed=2)), small_baseline, "small")))
    drifts = {
        "waiting time +1 week": replace(base, seed=2, target_shift_weeks=1.0),
        "waiting time +4 weeks": replace(base, seed=2, target_shift_weeks=4.0),
        "waiting time x1.5": replace(base, seed=2, target_scale=1.5),
        "1 specialism renamed": replace(base, seed=2, renamed_specialisms=1),
        "30% of rows unusable": replace(base, seed=2, unusable_share=0.3),
        "--drifted (all three)": replace(synthetic.DRIFTED, rows=rows, seed=2),
    }
    for name, config in drifts.items():
        expect = PASS if name == "waiting time +1 week" else STOP
        cases.append(Case("synthetic", name, expect, _check(export(config), baseline, name)))
    return cases


def run(rows: int = 20_000) -> list[Case]:
    return synthetic_cases(rows) + nza_shaped_cases()


# --------------------------------------------------------------------------- the promotion margin
def margin_spread(pairs: int = 25, rows: int = 7500) -> np.ndarray:
    """How much an equally good champion's backtest 'beats' a new version's hold-out MAE by
    chance: pairs of decision trees on two synthetic exports of the same process (an
    NZa-sized export: ~1,500 hold-out rows); 1 - champion backtest MAE / new hold-out MAE."""
    from airflow_project.wachttijden import training

    def export(seed: int) -> pd.DataFrame:
        return clean(select_features(synthetic.generate(synthetic.SyntheticConfig(rows=rows, seed=seed))), "x")[0]

    out = []
    for i in range(pairs):
        old, new = export(1000 + 2 * i), export(1001 + 2 * i)
        champion = training.train(old).pipeline
        trained = training.train(new)
        backtest = float(np.abs(champion.predict(new.loc[:, list(FEATURES)]) - new[TARGET]).mean())
        out.append(1.0 - backtest / trained.metrics["mae"])
    return np.asarray(out)


def margin_report(spread: np.ndarray) -> str:
    from airflow_project.registry import BACKTEST_MARGIN

    return "\n".join([
        "# Promotion margin",
        "",
        (f"Champion backtest vs new hold-out MAE, equally good models ({spread.size} pairs): 'beats by' "
        f"mean {spread.mean():+.3f}, sd {spread.std(ddof=1):.3f}, 90th percentile {np.quantile(spread, 0.9):.3f}, "
        f"max {spread.max():.3f}. Margin: {BACKTEST_MARGIN:.2f} "
        f"(exceeded by chance in {np.mean(spread > BACKTEST_MARGIN):.0%} of these pairs)."),
    ]) + "\n"


def report(cases: list[Case]) -> str:
    t = export_checks.GateThresholds()
    lines = [
        "# Data gate calibration",
        "",
        (f"Defaults: min_usable_share {t.min_usable_share}, max_drift {t.max_drift} "
        f"({export_checks.DRIFT_STATISTIC.upper()}, the largest over the target and the four features). "
        "Made by `make calibrate-drift` (seeded: the same figures every run)."),
        "",
        "| data | scenario | expected | usable share | PSI target | PSI features (max) | KS target | gate |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for case in cases:
        r = case.report
        features = max((v for k, v in r.drift_by_column.items() if k != TARGET), default=float("nan"))
        gate = "passed" if r.passed else "stopped"
        flag = "" if (gate == "passed") == (case.expect == PASS) else " **(unexpected)**"
        lines.append(f"| {case.data} | {case.scenario} | {case.expect} | {r.usable_share:.3f} | "
                     f"{r.drift_by_column.get(TARGET, float('nan')):.3f} | {features:.3f} | "
                     f"{r.ks_target if r.ks_target is not None else float('nan'):.3f} | {gate}{flag} |")
    clean_max = max((c.report.drift or 0.0) for c in cases if c.expect == PASS)
    drift_min = min((c.report.drift or 0.0) for c in cases if c.expect == STOP and c.report.usable_share >= t.min_usable_share)
    lines += ["", (f"Largest drift among exports that must pass: {clean_max:.3f}; smallest among drifted "
              f"exports that only the drift measure can stop: {drift_min:.3f}.")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows of each synthetic export")
    parser.add_argument("--pairs", type=int, default=25, help="model pairs for the promotion margin")
    parser.add_argument("--output", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    text = report(run(args.rows)) + "\n" + margin_report(margin_spread(args.pairs))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
