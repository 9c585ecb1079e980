"""MLflow's messages keep their level: records reach the root logger's handlers (an Airflow
task's log) instead of MLflow's own stderr handler, and its console prints become records."""

from __future__ import annotations

import logging
import sys

import pytest

from airflow_project.registry import mlflow_logs_at_their_level


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture()
def root_records():
    handler = Collect()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)


def test_mlflow_records_and_prints_reach_the_root_at_their_level(root_records, capsys):
    from mlflow.utils.logging_utils import eprint

    mlflow_logger = logging.getLogger("mlflow")
    before = mlflow_logger.handlers[:]
    with mlflow_logs_at_their_level():
        logging.getLogger("mlflow.tracking.fluent").info("Experiment with name 'x' does not exist.")
        logging.getLogger("mlflow.utils.environment").warning("pip version unknown")
        eprint("Successfully registered model 'wachttijden'.")
        print("FutureWarning: something is deprecated", file=sys.stderr)
        print("no newline at the end", file=sys.stderr, end="")
    got = [(r.name, r.levelname, r.getMessage()) for r in root_records]
    assert got == [
        ("mlflow.tracking.fluent", "INFO", "Experiment with name 'x' does not exist."),
        ("mlflow.utils.environment", "WARNING", "pip version unknown"),
        ("mlflow.console", "INFO", "Successfully registered model 'wachttijden'."),
        ("mlflow.console", "WARNING", "FutureWarning: something is deprecated"),
        ("mlflow.console", "INFO", "no newline at the end"),
    ]
    assert capsys.readouterr().err == ""  # nothing went to stderr as raw text
    assert mlflow_logger.handlers == before  # restored


def test_a_handler_writing_to_stderr_does_not_loop(capsys):
    """A root handler that writes to whatever sys.stderr is (as some do) gets the real stream."""
    handler = logging.StreamHandler()  # binds sys.stderr when created: inside the block below
    root = logging.getLogger()
    with mlflow_logs_at_their_level():
        handler.stream = sys.stderr
        root.addHandler(handler)
        try:
            logging.getLogger("mlflow.x").warning("once")
        finally:
            root.removeHandler(handler)
    assert capsys.readouterr().err.count("once") == 1


def test_the_requirements_check_is_skipped_only_while_logging_and_still_exists_upstream():
    """MLflow's `_process_conda_env` calls warn_dependency_requirement_mismatches by its name in
    mlflow.utils.environment; an MLflow release without it would make the skip a silent no-op."""
    from mlflow.utils import environment

    from airflow_project.registry import requirements_checked_already

    original = environment.warn_dependency_requirement_mismatches
    with requirements_checked_already():
        assert environment.warn_dependency_requirement_mismatches is not original
        assert environment.warn_dependency_requirement_mismatches(["scikit-learn==0.0.1"]) is None
    assert environment.warn_dependency_requirement_mismatches is original
