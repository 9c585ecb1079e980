"""Helpers the pipeline test modules share."""

from __future__ import annotations


def pipeline_dag(dag_id: str):
    """A DAG of the project's dags folder (no import errors)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag()
    assert not bag.import_errors
    return bag.get_dag(dag_id)
