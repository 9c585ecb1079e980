"""`make scan`: checkov on the rendered own templates and the Dockerfile, zero failures."""

from __future__ import annotations

import pytest

from airflow_project.release import scan

pytestmark = pytest.mark.chart


def test_every_suppression_has_a_reason():
    sup = scan.suppressions()
    assert set(sup) <= {"kubernetes", "dockerfile"}
    for entries in sup.values():
        for entry in entries:
            assert entry["id"].startswith("CKV")
            assert len(entry.get("reason", "").split()) >= 8, entry["id"]


def test_checkov_finds_no_failed_checks(helm):
    failed = scan.scan()
    assert not failed, [(fw, c["check_id"], c.get("resource")) for fw, c in failed]
