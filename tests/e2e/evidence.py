"""What the kind suite reads as evidence, as pure functions (no cluster needed; unit-tested
in tests/unit/test_e2e_evidence.py against a real predictor's log lines):

- a task try's `log_id`, as Airflow's Elasticsearch handler and the Logstash pipeline build
  it from `[elasticsearch] log_id_template`, and the Elasticsearch query that finds its lines;
- the predictors' prediction log lines (one JSON object per prediction on stdout) and which
  of a set of requests a predictor's log shows it received.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def log_id(template: str, task_instance: Mapping[str, Any]) -> str:
    """`{dag_id}-{task_id}-{run_id}-{map_index}-{try_number}` for a task instance of the
    REST API (map_index -1 when the task is not mapped)."""
    return template.format(
        dag_id=task_instance["dag_id"], task_id=task_instance["task_id"], run_id=task_instance["dag_run_id"],
        map_index=task_instance.get("map_index", -1), try_number=task_instance["try_number"],
    )


def log_search(log_id_value: str, size: int = 200) -> dict[str, Any]:
    """The query body that finds one try's lines (Airflow's handler matches log_id as a phrase)."""
    return {"size": size, "query": {"match_phrase": {"log_id": log_id_value}}}


def prediction_records(log_text: str, since: float = 0.0) -> list[dict[str, Any]]:
    """Prediction log records (`event: prediction`) written at or after `since` (epoch s)."""
    out = []
    for line in log_text.splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            record = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == "prediction" and float(record.get("ts", 0)) >= since:
            out.append(record)
    return out


def received(records: Iterable[Mapping[str, Any]], requests: Sequence[Sequence[Mapping[str, str]]]) -> list[int]:
    """Indices of `requests` (each a list of feature rows) that some record's inputs equal."""
    seen = [list(r.get("inputs") or []) for r in records]
    return [i for i, rows in enumerate(requests) if [dict(row) for row in rows] in seen]


def request_ids(records: Iterable[Mapping[str, Any]]) -> set[str]:
    return {str(r.get("request_id")) for r in records}
