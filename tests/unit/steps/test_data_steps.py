"""The Airflow-free task steps and the Airflow-side helpers, with plain values (no Airflow run)."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from airflow_project.data_steps import latest_preprocessed, raw_input, training_input
from airflow_project.datalake import BlobRef
from airflow_project.task_context import asset_event_path, run_date

DAY = dt.date(2024, 3, 7)


class Lake:
    """The part of DataLake the steps list with."""

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def list(self, container: str, prefix: str = "") -> list[str]:
        assert container == "preprocessed"
        return sorted(n for n in self.names if n.startswith(prefix))


def test_raw_input_is_the_days_export_unless_a_path_is_given():
    assert raw_input(None, DAY) == BlobRef("raw", "wachttijden/2024/03/07/wachttijden.csv")
    assert raw_input("", DAY) == BlobRef("raw", "wachttijden/2024/03/07/wachttijden.csv")
    assert raw_input(" /wachttijden/2024/01/31/wachttijden.csv", DAY) == BlobRef(
        "raw", "wachttijden/2024/01/31/wachttijden.csv")


def test_training_input_explicit_then_asset_event_then_newest():
    lake = Lake(["wachttijden/2024/01/01/wachttijden.csv", "wachttijden/2024/02/01/wachttijden.csv",
                 "wachttijden/2024/03/01/notes.txt"])
    event = "preprocessed/wachttijden/2024/01/01/wachttijden.csv"
    assert training_input(lake, "wachttijden/2023/12/31/wachttijden.csv", event) == (
        "preprocessed/wachttijden/2023/12/31/wachttijden.csv")  # container optional
    assert training_input(lake, "intermediate/x.parquet", event) == "intermediate/x.parquet"
    assert training_input(lake, None, event) == event
    assert training_input(lake, "  ", None) == "preprocessed/wachttijden/2024/02/01/wachttijden.csv"
    with pytest.raises(ValueError, match="must look like '<container>/<path>'"):
        training_input(lake, None, "nowhere")


def test_no_preprocessed_dataset_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="run prepare_dataset first"):
        latest_preprocessed(Lake([]))  # type: ignore[arg-type]


def test_the_newest_asset_event_with_a_path_wins():
    events = {"wachttijden_preprocessed": [SimpleNamespace(extra={"path": "preprocessed/a.csv"}),
                                           SimpleNamespace(extra={"path": "preprocessed/b.csv"}),
                                           SimpleNamespace(extra=None)]}
    assert asset_event_path(events) == "preprocessed/b.csv"
    assert asset_event_path({}) is None
    assert asset_event_path(None) is None


def test_run_date_is_the_logical_date_else_when_the_run_was_due():
    due = dt.datetime(2026, 1, 2, 3, tzinfo=dt.UTC)
    logical = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert run_date(logical, SimpleNamespace(run_after=due)) == logical
    assert run_date(None, SimpleNamespace(run_after=due)) == due


def test_dataset_day_reads_the_export_date_from_a_path():
    from airflow_project.datalake import dataset_day

    assert dataset_day("preprocessed/wachttijden/2024/03/07/wachttijden.csv") == dt.date(2024, 3, 7)
    assert dataset_day("wachttijden/2024/03/07/other.csv") == dt.date(2024, 3, 7)
    assert dataset_day("wachttijden/2024/13/07/wachttijden.csv") is None
    assert dataset_day("/home/me/prepared.csv") is None


def test_preprocessed_output_is_the_intermediate_path_as_csv():
    from airflow_project.data_steps import preprocessed_output

    assert str(preprocessed_output(BlobRef("intermediate", "wachttijden/2024/03/07/wachttijden.parquet"))) == (
        "preprocessed/wachttijden/2024/03/07/wachttijden.csv")
