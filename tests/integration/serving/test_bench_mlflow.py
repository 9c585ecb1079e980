"""The serving benchmark's MLflow server does not disturb what it measures: no job runner
(MLflow 3's huey consumers polled ~40 % of a core during the measurements) and it runs on
the servers' CPU set, not the load generator's (as the local platform's MLflow runs)."""

from __future__ import annotations

import os

import psutil
import pytest

from loadtest.bench_serving import cpu_split, start_mlflow, stop_all

pytestmark = pytest.mark.integration


def test_the_benchmarks_mlflow_runs_without_its_job_runner_on_the_server_cpus(tmp_path):
    _, server_cpus, _ = cpu_split()
    cpus = server_cpus or set(os.sched_getaffinity(0))  # one CPU: nothing to keep apart
    server = start_mlflow(tmp_path, cpus)
    try:
        server.wait_ready(180)
        assert server.proc is not None
        leader = psutil.Process(server.proc.pid)
        tree = [leader, *leader.children(recursive=True)]
        commands = [" ".join(p.cmdline()) for p in tree]
        assert not any("huey" in c for c in commands), commands
        assert all(set(p.cpu_affinity()) == cpus for p in tree), [(c, p.cpu_affinity()) for c, p in zip(commands, tree)]
    finally:
        stop_all([server])
