"""Soak: Locust for a long while against the predictor and the mirror (mirror-mode router),
then the verdict on what must not drift.

    python -m loadtest.soak [--duration 10m] [--users 50] [--spawn-rate 10] [--warmup S] [--window S]
                            [--tracking-uri URI --model-uri URI]

What runs (subprocesses on free ports, as `loadtest.bench_mirror` starts them): an MLflow
server with `wachttijden` registered (or the given model), a primary and a shadow predictor
and the local router in mirror mode in front of them; Locust (headless, `loadtest.run`) with
its predictor users (V1 and V2) and its graph users (V1, through the router). While it runs,
the RSS of the predictors and the router is sampled every few seconds.

Pass when: zero failed requests; p99 stable, the last window's p99 at most 1.5x the first
window's (after warm-up; Locust's current p99 over its 10 s window, the median of the
per-second values in each window); RSS growth of the primary predictor and of the router at
most 10 % from the end of the warm-up to the end. Windows are a minute long, shorter for
short runs (a third of the measured time). Writes `reports/soak.md`, `reports/soak.json`
and Locust's own reports (`reports/soak_*`). Not a test: the verdict is in the report; the
exit code is 0 unless the soak could not run.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from loadtest.bench_serving import (
    add_harness_args,
    git_head,
    harness,
    model_under_test,
    predictor_server,
    router_server,
    version_of,
    write_report,
)
from loadtest.run import run_headless
from loadtest.settings import Settings

P99_GROWTH_BOUND = 1.5
RSS_GROWTH_BOUND = 0.10
SAMPLE_EVERY_S = 5.0


def seconds(text: str) -> float:
    """`10m`, `30s`, `1h30m`, `90` -> seconds (Locust's --run-time format)."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"expected a duration like 10m, 30s or 1h30m, got {text!r}")
    return float(sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts))


class RssSampler(threading.Thread):
    """RSS of named processes every `every` seconds: [(seconds since start, {name: bytes})].
    Also the host's CPU steal (cumulative seconds, `steal` in the samples; 0 where the kernel
    does not report it): on a shared VM a p99 that moves with steal is the machine's."""

    def __init__(self, pids: dict[str, int], every: float = SAMPLE_EVERY_S) -> None:
        super().__init__(daemon=True)
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.every = every
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._halt = threading.Event()
        self.t0 = time.monotonic()

    def sample(self) -> None:
        rss = {"steal": round(getattr(psutil.cpu_times(), "steal", 0.0), 2)}
        for name, proc in self.procs.items():
            try:
                rss[name] = proc.memory_info().rss
            except psutil.Error:
                rss[name] = 0  # gone: a failure the report shows
        self.samples.append((round(time.monotonic() - self.t0, 1), rss))

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=self.every + 5)
        self.sample()


def history_series(history_csv: Path, column: str) -> list[tuple[float, float]]:
    """(seconds since the first row, `column`) of the Aggregated rows of Locust's history."""
    series: list[tuple[float, float]] = []
    with open(history_csv, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("Name") == "Aggregated"]
    if not rows:
        return series
    t0 = int(rows[0]["Timestamp"])
    for row in rows:
        value = row.get(column, "N/A")
        if value not in ("N/A", "", None):
            series.append((int(row["Timestamp"]) - t0, float(value)))
    return series


def p99_series(history_csv: Path) -> list[tuple[float, float]]:
    """Locust's current p99 in ms, per second."""
    return history_series(history_csv, "99%")


def windows(p99: list[tuple[float, float]], rps: list[tuple[float, float]],
            samples: list[tuple[float, dict[str, float]]], width: float, cpus: int) -> list[dict[str, Any]]:
    """The run in consecutive windows: median p99 and req/s, and the host's CPU steal as a
    share of all CPU time (p99 rising while req/s falls and steal climbs is the machine; p99
    rising at steady req/s and no steal is the servers)."""
    end = max((t for t, _ in p99), default=0.0)
    rows = []
    start = 0.0
    while start < end:
        stolen = [(t, s["steal"]) for t, s in samples if start <= t <= start + width and "steal" in s]
        steal = None
        if len(stolen) > 1 and stolen[-1][0] > stolen[0][0]:
            steal = round(100 * (stolen[-1][1] - stolen[0][1]) / ((stolen[-1][0] - stolen[0][0]) * cpus), 1)
        rows.append({"start_s": start, "p99_ms": window_median(p99, start, start + width),
                     "rps": window_median(rps, start, start + width), "steal_pct": steal})
        start += width
    return rows


def window_median(series: list[tuple[float, float]], start: float, end: float) -> float | None:
    values = [v for t, v in series if start <= t < end]
    return statistics.median(values) if values else None


def rss_growth(samples: list[tuple[float, dict[str, float]]], name: str, warmup: float) -> dict[str, Any]:
    """RSS at the end of the warm-up, at the end, and the growth between them."""
    after = [(t, s[name]) for t, s in samples if t >= warmup and name in s]
    if not after:
        return {"baseline_mib": None, "end_mib": None, "growth": None, "peak_mib": None}
    base, end = after[0][1], after[-1][1]
    mib = 2**20
    return {"baseline_mib": round(base / mib, 1), "end_mib": round(end / mib, 1),
            "peak_mib": round(max(v for _, v in after) / mib, 1),
            "growth": round((end - base) / base, 4) if base else None}


def verdict(report: dict[str, Any]) -> dict[str, bool]:
    p99 = report["p99"]
    rss = report["rss"]
    return {
        "zero failures": report["requests"] > 0 and report["failures"] == 0,
        "p99 stable": p99["ratio"] is not None and p99["ratio"] <= P99_GROWTH_BOUND,
        "predictor RSS": rss["primary"]["growth"] is not None and rss["primary"]["growth"] <= RSS_GROWTH_BOUND,
        "router RSS": rss["router"]["growth"] is not None and rss["router"]["growth"] <= RSS_GROWTH_BOUND,
    }


def markdown(report: dict[str, Any]) -> str:
    cfg, p99, ok = report["config"], report["p99"], report["verdict"]
    lines = [
        "# Soak",
        "",
        (f"{report['date']}, git {report['git']}: {cfg['users']} Locust users for {cfg['duration_s']:.0f} s against "
         "the predictor (V1 and V2) and the mirror router (V1; primary and shadow predictor behind it). "
         "Generated by `make soak` (`python -m loadtest.soak`); not a test."),
        "",
        "| check | value | bound | met |",
        "|---|---|---|---|",
        (f"| failures | {report['failures']} of {report['requests']} requests | 0 | "
         f"{'yes' if ok['zero failures'] else '**NO**'} |"),
        (f"| p99, last window / first window | {_num(p99['last_ms'])} / {_num(p99['first_ms'])} ms = "
         f"{_num(p99['ratio'], 2)} | <= {P99_GROWTH_BOUND} | {'yes' if ok['p99 stable'] else '**NO**'} |"),
    ]
    for name, label in (("primary", "predictor RSS"), ("router", "router RSS")):
        r = report["rss"][name]
        growth = "-" if r["growth"] is None else f"{100 * r['growth']:+.1f} %"
        lines.append(f"| {label} growth after warm-up | {_num(r['baseline_mib'])} -> {_num(r['end_mib'])} MiB "
                     f"({growth}; peak {_num(r['peak_mib'])} MiB) | <= {100 * RSS_GROWTH_BOUND:.0f} % | "
                     f"{'yes' if ok[label] else '**NO**'} |")
    shadow = report["rss"]["shadow"]
    lines += [
        "",
        (f"Shadow predictor RSS (info): {_num(shadow['baseline_mib'])} -> {_num(shadow['end_mib'])} MiB. "
         f"Throughput {report['rps']:.0f} req/s overall."),
        "",
        "## How it was measured",
        "",
        (f"- Locust {report['locust']}, {cfg['users']} users (spawn rate {cfg['spawn_rate']}/s), `PredictorUser` and "
         f"`GraphUser` of `loadtest/locustfile.py` (every answer checked: 200 and one number per row)."),
        (f"- Warm-up {cfg['warmup_s']:.0f} s; windows of {cfg['window_s']:.0f} s: the first starts after the warm-up, "
         "the last ends with the run; each window's p99 is the median of Locust's per-second current p99 "
         "(its 10 s window)."),
        (f"- RSS sampled every {SAMPLE_EVERY_S:.0f} s with psutil; growth = (end - end of warm-up) / end of warm-up."),
        f"- Load average (1 min) at start {report['loadavg'][0]}, at end {report['loadavg'][1]}.",
        "- Locust's reports: `reports/soak.html`, `reports/soak_stats*.csv`; every figure in `reports/soak.json`.",
    ]
    if report.get("windows"):
        lines += ["", "## Per window", "",
                  "p99 and req/s: medians of Locust's per-second values; steal: the host's CPU steal, share of all CPU time.",
                  "", "| from s | p99 ms | req/s | steal % |", "|---:|---:|---:|---:|"]
        lines += [f"| {w['start_s']:.0f} | {_num(w['p99_ms'])} | {_num(w['rps'], 0)} | {_num(w['steal_pct'])} |"
                  for w in report["windows"]]
    return "\n".join(lines) + "\n"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.soak")
    p.add_argument("--duration", type=seconds, default=seconds("10m"), help="e.g. 10m, 30s (default 10m)")
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--spawn-rate", type=float, default=10.0)
    p.add_argument("--warmup", type=float, help="seconds before RSS and p99 are compared (default: 60, "
                   "or a quarter of a short run)")
    p.add_argument("--window", type=float, help="seconds of the first and last p99 windows (default: 60, "
                   "or a third of the measured time)")
    add_harness_args(p)
    args = p.parse_args(argv)
    warmup = args.warmup if args.warmup is not None else min(60.0, args.duration / 4)
    window = args.window if args.window is not None else min(60.0, (args.duration - warmup) / 3)

    with harness("soak-", args.keep) as (work, servers):
        tracking_uri, model_uri = model_under_test(work, servers, args.tracking_uri, args.model_uri)
        primary = predictor_server("primary", model_uri, tracking_uri, work, None)
        shadow = predictor_server("shadow", model_uri, tracking_uri, work, None)
        for server in (primary, shadow):
            servers.append(server.start())
        for server in (primary, shadow):
            server.wait_ready()
        router = router_server("router-mirror", {
            "mode": "mirror", "mirror": {"primary": "primary", "shadow": "shadow", "percentage": 100},
            "services": {"primary": primary.url, "shadow": shadow.url}}, work, None)
        servers.append(router.start())
        router.wait_ready(60)
        assert primary.proc and shadow.proc and router.proc
        settings = Settings.from_env().with_(
            predictor_url=primary.url, graph_url=router.url, target="both", users=args.users,
            spawn_rate=args.spawn_rate, run_time=f"{int(args.duration)}s", p95_ms=1e9,
            reports_dir=str(args.reports_dir))
        args.reports_dir.mkdir(parents=True, exist_ok=True)
        prefix = args.reports_dir / "soak"
        sampler = RssSampler({"primary": primary.proc.pid, "shadow": shadow.proc.pid, "router": router.proc.pid})
        load_start = os.getloadavg()[0]
        print(f"soak: {args.users} users for {args.duration:.0f} s against {primary.url} and {router.url} "
              f"(warm-up {warmup:.0f} s, windows {window:.0f} s)", flush=True)
        sampler.start()
        result = run_headless(settings, prefix=prefix, timeout=args.duration + 120, extra=["--csv-full-history"])
        sampler.stop()
        history = Path(f"{prefix}_stats_history.csv")
        series = p99_series(history)
        end = series[-1][0] if series else 0.0
        first, last = window_median(series, warmup, warmup + window), window_median(series, end - window, end + 1)
        with open(result.stats_csv, newline="") as fh:
            total = next(r for r in csv.DictReader(fh) if r["Name"] == "Aggregated")
        report: dict[str, Any] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "git": git_head(),
            "locust": version_of("locust"),
            "model": {"uri": model_uri},
            "config": {"duration_s": args.duration, "users": args.users, "spawn_rate": args.spawn_rate,
                       "warmup_s": warmup, "window_s": window},
            "locust_exit_code": result.returncode,
            "requests": int(total["Request Count"]), "failures": int(total["Failure Count"]),
            "rps": float(total["Requests/s"]),
            "p99": {"first_ms": first, "last_ms": last,
                    "ratio": round(last / first, 3) if first and last is not None else None},
            "rss": {name: rss_growth(sampler.samples, name, warmup) for name in ("primary", "shadow", "router")},
            "rss_samples": sampler.samples,
            "p99_series": series,
            "windows": windows(series, history_series(history, "Requests/s"), sampler.samples, window,
                               psutil.cpu_count() or 1),
            "loadavg": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        }
        report["verdict"] = verdict(report)
        write_report(args.reports_dir, "soak", report, markdown(report))
        print(f"Locust's log: {result.log}", flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(main())
