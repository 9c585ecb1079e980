"""Generated request ids (`serving.request_ids`): shared by the predictor and the router."""

from __future__ import annotations

import os
import uuid

from airflow_project.serving.request_ids import new_request_id


def test_generated_request_ids_are_unique_uuids_and_new_per_forked_process():
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert {uuid.UUID(i).version for i in ids} == {4}
    assert all(str(uuid.UUID(i)) == i for i in ids)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write_end, new_request_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read_end, 100).decode()
    os.close(read_end)
    os.close(write_end)
    assert uuid.UUID(child).version == 4
    assert child[:24] != ids[0][:24]  # a forked worker does not repeat the parent's ids
