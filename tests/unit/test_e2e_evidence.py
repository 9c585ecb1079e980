"""The kind suite's evidence readers (tests/e2e/evidence.py), checked without a cluster."""

from __future__ import annotations

import importlib.util
import json
import sys

import yaml

from airflow_project.settings import REPO_ROOT


def evidence():
    spec = importlib.util.spec_from_file_location("e2e_evidence", REPO_ROOT / "tests" / "e2e" / "evidence.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_log_id_is_the_one_airflow_and_the_pipeline_build():
    values = yaml.safe_load((REPO_ROOT / "helm" / "values.yaml").read_text())
    template = values["airflow"]["config"]["elasticsearch"]["log_id_template"]
    ti = {"dag_id": "prepare_dataset", "task_id": "select_features", "dag_run_id": "manual__2026-12-04T10:00:00+00:00",
          "map_index": -1, "try_number": 1}
    assert evidence().log_id(template, ti) == "prepare_dataset-select_features-manual__2026-12-04T10:00:00+00:00--1-1"
    assert evidence().log_search("x")["query"] == {"match_phrase": {"log_id": "x"}}


def test_prediction_records_and_which_requests_a_predictor_received():
    e = evidence()
    rows = [[{"SPECIALISME": "Cardiologie"}], [{"SPECIALISME": "Urologie"}]]
    log = "\n".join([
        "INFO uvicorn started",
        json.dumps({"event": "prediction", "ts": 10.0, "request_id": "a", "inputs": rows[0]}),
        json.dumps({"event": "prediction", "ts": 5.0, "request_id": "old", "inputs": rows[1]}),
        "2026-12-04T10:00:00Z stdout F " + json.dumps({"event": "prediction", "ts": 11.0, "request_id": "b",
                                                        "inputs": rows[1]}),
    ])
    records = e.prediction_records(log, since=9.0)
    assert e.request_ids(records) == {"a", "b"}
    assert e.received(records, rows) == [0, 1]
    assert e.received(e.prediction_records(log, since=10.5), rows) == [1]
