"""The mirroring benchmark judges isolation from the right cells and writes nginx's reference
configuration with a mirror per shadow condition."""

from __future__ import annotations

from pathlib import Path

from loadtest.bench_mirror import hops, isolation, markdown, nginx_config


def _cell(p50: float, p99: float, errors: int = 0) -> dict:
    return {"latency_ms": {"p50": p50, "p99": p99, "p999": p99}, "errors": errors, "throughput_rps": 1000.0,
            "requests": 1000, "error_samples": []}


def _raw(router_slow_p99: float, router_killed_errors: int = 0) -> dict:
    level = {
        "direct": [_cell(0.2, 1.0)],
        "router-healthy": [_cell(0.6, 2.0)], "router-slow": [_cell(0.6, router_slow_p99)],
        "router-killed": [_cell(0.5, 1.8, router_killed_errors)],
        "nginx-healthy": [_cell(0.5, 2.0)], "nginx-slow": [_cell(200.0, 205.0)], "nginx-killed": [_cell(0.4, 3.0)],
    }
    return {"c1": level}


def test_isolation_judges_the_router_against_its_healthy_shadow():
    rows = {(r["mirror"], r["shadow"]): r for r in isolation(_raw(router_slow_p99=2.1), {"c1": 1})}
    assert rows["router", "slow"]["p99_ratio"] == 1.05 and rows["router", "slow"]["met"] is True
    assert rows["router", "killed"]["met"] is True
    assert rows["nginx", "slow"]["p99_ratio"] == 102.5 and rows["nginx", "slow"]["met"] is None  # reference only


def test_a_slower_p99_or_any_error_misses_the_target():
    rows = {(r["mirror"], r["shadow"]): r for r in isolation(_raw(2.4, router_killed_errors=1), {"c1": 1})}
    assert rows["router", "slow"]["met"] is False
    assert rows["router", "killed"]["met"] is False and rows["router", "killed"]["p99_ratio"] == 0.9


def test_hops_are_each_mirrors_p50_over_direct():
    summary = {"c1": {"direct": {"p50_ms": 0.2}, "router-healthy": {"p50_ms": 0.6}, "nginx-healthy": {"p50_ms": 0.5}}}
    assert hops(summary) == {"router@c1": 0.4, "nginx@c1": 0.3}


def test_the_report_marks_a_missed_target():
    raw = _raw(2.4)
    summary = {"c1": {name: {"throughput_rps": 1000.0, "p50_ms": cells[0]["latency_ms"]["p50"],
                             "p99_ms": cells[0]["latency_ms"]["p99"], "p999_ms": 1.0, "errors": 0,
                             "p50_spread_pct": None} for name, cells in raw["c1"].items()}}
    report = {"environment": {"date": "d", "git": "g", "pinning": {"description": "none"}, "loadavg_start": [0.5]},
              "config": {"rounds": 1, "duration_s": 3, "warmup_s": 1, "levels": {"c1": 1}},
              "model": {"uri": "models:/wachttijden/1"}, "isolation": isolation(raw, {"c1": 1}),
              "hops": hops(summary), "summary": summary, "nginx_version": "1.22.1", "loadavg_end": [0.5]}
    text = markdown(report)
    assert "| router | 1 | slow | 1.20 | 1.20 - 1.20 | 0 | <= 1.1, 0 errors | **NO** |" in text
    assert "- concurrency 1: router 0.400 ms, nginx 0.300 ms" in text


def test_nginx_mirrors_each_condition_to_its_shadow_over_keep_alive(tmp_path: Path):
    conf = nginx_config(tmp_path, 9000, {"healthy": (9101, 9001), "slow": (9102, 9002)})
    assert "upstream primary { server 127.0.0.1:9000; keepalive 64;" in conf
    for name, port, shadow in (("healthy", 9101, 9001), ("slow", 9102, 9002)):
        assert f"upstream shadow_{name} {{ server 127.0.0.1:{shadow};" in conf
        assert f"listen 127.0.0.1:{port};" in conf
        assert f"proxy_pass http://shadow_{name}$request_uri;" in conf
    assert conf.count("mirror /_mirror;") == 2 and "worker_processes 1;" in conf and "daemon off;" in conf


def test_every_report_records_the_environment_it_ran_in():
    """The heading and the environment section every benchmark report shares."""
    import platform
    from importlib.metadata import version

    from loadtest.bench_serving import environment, git_head, report_heading

    env = environment({"description": "none"})
    assert env["python"] == platform.python_version()
    assert env["versions"]["kserve"] == version("kserve") and env["git"] == git_head() != ""
    heading = report_heading("Mirroring isolation benchmark", {"environment": env, "model": {"uri": "m"}},
                             "loadtest.bench_mirror")
    assert heading[0] == "# Mirroring isolation benchmark" and f"git {env['git']}" in heading[2]
