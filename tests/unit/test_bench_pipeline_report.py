"""The pipeline benchmark's report judges the targets from the right figures, and its
reference script does the platform's work: the same rows, the same model, the same MAE."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from loadtest.bench_pipeline import (
    CLI,
    CLI_CHECKED,
    DAG,
    DAG_COLD,
    REFERENCE,
    SCRIPT,
    Measurement,
    report,
)


def _results(script: float, cli: float, check: float, dag: float, cold: float,
             rows: int = 1_000_000, round_: int = 0) -> list[Measurement]:
    return [Measurement(rows, SCRIPT, script, 800, round_), Measurement(rows, CLI, cli, 1000, round_),
            Measurement(rows, CLI_CHECKED, cli + check, 1000, round_), Measurement(rows, DAG, dag, 1200, round_),
            Measurement(rows, DAG_COLD, cold, 1200, round_)]


def test_ratios_are_taken_against_the_script_and_the_dag_against_the_checked_cli():
    text = report(_results(script=10.0, cli=14.0, check=4.0, dag=15.0, cold=28.0))
    assert "| 1,000,000 | script | 10.0 | 800 |  |" in text
    assert "| 1,000,000 | dag, cold process | 28.0 | 1200 | 2.80 |" in text
    assert "1,000,000 rows: CLI path 1.40x the script (target <= 1.5x at 1M rows): met" in text
    assert "1,000,000 rows: DAG path 1.50x the script (target <= 1.5x at 1M rows): met" in text
    assert "DAG path 0.83x the CLI path with its data check (target <= 1.3x): met" in text


def test_targets_can_be_missed():
    text = report(_results(script=10.0, cli=16.0, check=2.0, dag=24.0, cold=61.0))
    assert "CLI path 1.60x the script (target <= 1.5x at 1M rows): MISSED" in text
    assert "DAG path 1.33x the CLI path with its data check (target <= 1.3x): MISSED" in text
    assert "slowest path 61.0 s (target <= 60 s): MISSED" in text


def test_only_one_million_rows_is_judged_against_the_script():
    text = report(_results(script=2.0, cli=8.0, check=1.0, dag=9.0, cold=17.0, rows=100_000))
    assert "100,000 rows: CLI path 4.00x the script (target <= 1.5x at 1M rows): for information" in text
    assert "slowest path" not in text


def test_rounds_are_judged_by_their_own_ratios_not_by_a_slow_round():
    """Round 2 ran on a machine twice as busy: every path doubled, its ratios did not."""
    results = _results(10.0, 14.0, 4.0, 15.0, 28.0) + _results(20.0, 28.0, 8.0, 30.0, 56.0, round_=1) + \
        _results(10.0, 15.0, 4.0, 16.0, 28.0, round_=2)
    text = report(results)
    assert "| 1,000,000 | cli | 15.0 (14.0 - 28.0) | 1000 | 1.40 |" in text
    assert "CLI path 1.40x (rounds 1.40 - 1.50) the script (target <= 1.5x at 1M rows): met" in text
    assert "3 round(s)" in text


def test_the_profile_table_lists_the_steps_that_cost_something():
    profiles = {"cli train": {"read prepared CSV": 0.6, "model card": 0.01, "total": 9.0},
                "dag runs": {"read prepared CSV": 1.2, "model card": 0.02, "total": 20.0}}
    text = report(_results(10.0, 14.0, 4.0, 15.0, 28.0), profiles, "busy machine")
    assert "| read prepared CSV | 0.60 | 1.20 |" in text and "| total | 9.00 | 20.00 |" in text
    assert "model card" not in text.split("## Where the time goes")[1]
    assert "busy machine" in text


def test_the_reference_script_keeps_the_platforms_rows_and_mae(tmp_path: Path):
    from airflow_project.wachttijden import dataset, synthetic, training

    raw = synthetic.to_raw_bytes(synthetic.generate(synthetic.SyntheticConfig(rows=5_000, seed=8)))
    (tmp_path / "raw.csv").write_bytes(raw)
    script = json.loads(subprocess.run([sys.executable, str(REFERENCE), str(tmp_path / "raw.csv")],
                                       capture_output=True, text=True, check=True).stdout)
    cleaned, cleaning = dataset.prepare(raw, "raw.csv")
    platform = training.train(dataset.read_prepared(dataset.to_prepared_bytes(cleaned), "prepared.csv"))
    assert (script["rows_read"], script["rows_kept"]) == (cleaning.rows_in, cleaning.rows_out)
    assert script["mae"] == platform.metrics["mae"]
