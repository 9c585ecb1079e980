"""The soak's verdict comes from the right figures: Locust's per-second p99 in the first and
last windows, RSS from the end of the warm-up, and no failure at all."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from loadtest.soak import markdown, p99_series, rss_growth, seconds, verdict, window_median, windows

HEADER = ("Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,"
          "99.99%,100%,Total Request Count,Total Failure Count,Total Median Response Time,"
          "Total Average Response Time,Total Min Response Time,Total Max Response Time,Total Average Content Size\n")


def test_durations_in_locusts_format() -> None:
    assert seconds("10m") == 600 and seconds("30s") == 30 and seconds("1h30m") == 5400 and seconds("45") == 45
    with pytest.raises(argparse.ArgumentTypeError):
        seconds("ten minutes")


def test_p99_windows_come_from_the_aggregated_rows(tmp_path: Path) -> None:
    rows = []
    for t in range(100):
        p99 = "N/A" if t == 0 else str(5 if t < 50 else 9)
        rows.append(f"{1000 + t},10,,Aggregated,100,0,1,1,1,1,2,3,4,{p99},9,9,9,{t * 100},0,1,1,1,9,20\n")
        rows.append(f"{1000 + t},10,POST,graph V1,50,0,1,1,1,1,2,3,4,99,9,9,9,{t * 50},0,1,1,1,9,20\n")
    path = tmp_path / "soak_stats_history.csv"
    path.write_text(HEADER + "".join(rows))
    series = p99_series(path)
    assert series[0] == (1, 5.0) and len(series) == 99  # N/A skipped, endpoint rows ignored
    assert window_median(series, 10, 40) == 5.0 and window_median(series, 70, 100) == 9.0
    assert window_median(series, 200, 300) is None


def test_windows_put_p99_next_to_throughput_and_cpu_steal() -> None:
    p99 = [(t, 5.0 if t < 60 else 20.0) for t in range(1, 120)]
    rps = [(t, 1000.0 if t < 60 else 400.0) for t in range(1, 120)]
    # steal: none in the first minute, then 30 s of 2 CPUs' 120 s stolen
    samples = [(float(t), {"steal": 0.0 if t <= 60 else (t - 60) / 2, "router": 1}) for t in range(0, 125, 5)]
    got = windows(p99, rps, samples, width=60, cpus=2)
    assert got == [{"start_s": 0.0, "p99_ms": 5.0, "rps": 1000.0, "steal_pct": 0.0},
                   {"start_s": 60.0, "p99_ms": 20.0, "rps": 400.0, "steal_pct": 25.0}]
    report = _report()
    report["verdict"], report["windows"] = verdict(report), got
    assert "| 60 | 20.0 | 400 | 25.0 |" in markdown(report)


def test_rss_growth_is_measured_from_the_end_of_the_warm_up() -> None:
    mib = 2**20
    samples = [(0.0, {"router": 10 * mib}), (60.0, {"router": 30 * mib}), (120.0, {"router": 32 * mib}),
               (600.0, {"router": 33 * mib})]
    got = rss_growth(samples, "router", warmup=60.0)
    assert got == {"baseline_mib": 30.0, "end_mib": 33.0, "peak_mib": 33.0, "growth": 0.1}


def _report(failures: int = 0, ratio: float = 1.2, growth: float = 0.05) -> dict:
    rss = {"baseline_mib": 100.0, "end_mib": 100.0 * (1 + growth), "peak_mib": 110.0, "growth": growth}
    return {"date": "d", "git": "g", "locust": "2.47.0", "requests": 1000, "failures": failures, "rps": 100.0,
            "config": {"users": 50, "duration_s": 600.0, "spawn_rate": 10.0, "warmup_s": 60.0, "window_s": 60.0},
            "p99": {"first_ms": 10.0, "last_ms": 10.0 * ratio, "ratio": ratio},
            "rss": {"primary": rss, "router": rss, "shadow": rss}, "loadavg": [1.0, 1.0]}


def test_the_verdict_and_its_report() -> None:
    good = _report()
    good["verdict"] = verdict(good)
    assert all(good["verdict"].values())
    bad = _report(failures=1, ratio=1.6, growth=0.11)
    bad["verdict"] = verdict(bad)
    assert not any(bad["verdict"].values())
    text = markdown(bad)
    assert "| failures | 1 of 1000 requests | 0 | **NO** |" in text
    assert "= 1.60 | <= 1.5 | **NO** |" in text
    assert "(+11.0 %; peak 110.0 MiB) | <= 10 % | **NO** |" in text
