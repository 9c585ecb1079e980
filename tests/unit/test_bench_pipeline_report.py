"""The pipeline benchmark's report judges the targets from the right figures."""

from __future__ import annotations

from loadtest.bench_pipeline import CLI, DAG, DAG_COLD, Measurement, report


def _results(cli: float, dag: float, cold: float, rows: int = 1_000_000) -> list[Measurement]:
    return [Measurement(rows, CLI, cli, 1000), Measurement(rows, DAG, dag, 1200),
            Measurement(rows, DAG_COLD, cold, 1200)]


def test_ratio_target_uses_the_dag_run_on_a_running_airflow():
    text = report(_results(cli=15.0, dag=18.0, cold=28.0))
    assert "DAG path 1.20x the CLI path (target <= 1.3x): met" in text
    assert "| 1,000,000 | dag, cold process | 28.0 | 1200 | 1.87 |" in text


def test_ratio_and_time_targets_can_be_missed():
    text = report(_results(cli=15.0, dag=21.0, cold=61.0))
    assert "DAG path 1.40x the CLI path (target <= 1.3x): MISSED" in text
    assert "slowest path 61.0 s (target <= 60 s): MISSED" in text


def test_time_target_only_reported_for_one_million_rows():
    text = report(_results(cli=8.0, dag=9.0, cold=17.0, rows=100_000))
    assert "100,000 rows: DAG path 1.12x" in text
    assert "slowest path" not in text
