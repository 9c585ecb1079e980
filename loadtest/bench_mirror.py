"""Mirroring isolation benchmark: nothing the shadow does may change the primary's answers or
latency.

    python -m loadtest.bench_mirror [--rounds 3] [--quick] [--concurrency 16] [--no-nginx]
                                    [--tracking-uri URI --model-uri URI]

The primary predictor is measured through a mirror in three shadow conditions:

- (a) `healthy`: a second predictor process serving the same version;
- (b) `slow`: a shadow that answers every request 200 ms late (`loadtest.floor_app --delay-ms 200`);
- (c) `killed`: a predictor process that was started and then killed with SIGKILL;

through two mirrors: the local router in mirror mode (`airflow_project.serving.router`, what
`deploy_traffic_mirroring` runs locally for `virtualservice`) and, as the reference a user
would otherwise put in front, nginx's `mirror` directive (Debian's nginx, started here on
127.0.0.1 with a generated configuration, one worker, keep-alive to the same predictors).
Plus the primary `direct`, for the hop each mirror adds.

Every cell is run at concurrency 1 and at `--concurrency` (16) with the benchmark's load
generator (`loadtest.loadgen`, V1 bodies), CPU pinning and interleaved rounds as in
`loadtest.bench_serving`. Targets: for the router, (b) and (c) p99 at most 1.1x (a) p99 at
both levels, and no errors; nginx's figures are reported beside them. Writes
`reports/bench-mirror.md` and `reports/bench-mirror.json`. Not a test: targets are reported
as met or missed; the exit code is 0 unless the benchmark could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
from pathlib import Path

from airflow_project.serving.constants import predict_path
from loadtest import payloads
from loadtest.bench_serving import (
    MODEL_NAME,
    Cell,
    Server,
    add_harness_args,
    add_round_args,
    cpu_split,
    environment,
    free_port,
    harness,
    model_under_test,
    parse_round_args,
    per_round_ratios,
    predictor_server,
    report_heading,
    router_server,
    run_rounds,
    summarize,
    write_report,
)

SHADOWS = ("healthy", "slow", "killed")
MIRRORS = ("router", "nginx")
SLOW_SHADOW_MS = 200
P99_BOUND = 1.1  # (b) and (c) p99 over (a) p99, for the router
V1_PATH = predict_path(MODEL_NAME)


# --------------------------------------------------------------------------- nginx
NGINX_SERVER = """
    upstream shadow_{name} {{ server 127.0.0.1:{shadow_port}; keepalive 64; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            mirror /_mirror;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://primary;
        }}
        location = /_mirror {{
            internal;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://shadow_{name}$request_uri;
        }}
    }}"""


def nginx_config(prefix: Path, primary_port: int, servers: dict[str, tuple[int, int]]) -> str:
    """One worker, keep-alive to the upstreams, one server (port) per shadow condition:
    `servers` is name -> (listen port, shadow port)."""
    blocks = "".join(NGINX_SERVER.format(name=name, port=port, shadow_port=shadow_port)
                     for name, (port, shadow_port) in servers.items())
    temp = "\n".join(f"    {kind}_temp_path {prefix / 'tmp' / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""daemon off;
master_process on;
worker_processes 1;
pid {prefix / 'nginx.pid'};
error_log {prefix / 'error.log'} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_max_body_size 4m;
    # nginx closes a keep-alive connection after 1000 requests by default; the router and
    # the predictors never do, and the closed-loop generator would count the race as errors
    keepalive_requests 1000000;
{temp}
    upstream primary {{ server 127.0.0.1:{primary_port}; keepalive 64; keepalive_requests 1000000; }}
{blocks}
}}
"""


def nginx_server(work: Path, primary_port: int, shadow_ports: dict[str, int],
                 cpus: set[int] | None) -> tuple[Server, dict[str, int]]:
    """nginx in front of the primary, mirroring to each shadow on a port of its own (returned
    by shadow name)."""
    binary = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                            if os.path.exists(p)), None)
    if binary is None:
        raise RuntimeError("nginx not found: `make bench` installs Debian's nginx-light, or "
                           "`apt-get install nginx-light`; `--no-nginx` leaves the reference out")
    prefix = work / "nginx"
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "tmp" / kind).mkdir(parents=True, exist_ok=True)
    ports = {name: (free_port(), shadow_port) for name, shadow_port in shadow_ports.items()}
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(prefix, primary_port, ports))
    server = Server("nginx", [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                    ports["healthy"][0], "/v2/health/ready", work / "nginx.log", cpus=cpus)
    return server, {name: port for name, (port, _) in ports.items()}


# --------------------------------------------------------------------------- the figures
def isolation(raw: dict[str, dict[str, list[dict]]], levels: dict[str, int]) -> list[dict]:
    """Per mirror and level: (b)/(a) and (c)/(a) p99, per round then the median; errors."""
    rows = []
    for mirror in MIRRORS:
        for level, concurrency in levels.items():
            base = raw[level].get(f"{mirror}-healthy") or []
            for shadow in ("slow", "killed"):
                cells = raw[level].get(f"{mirror}-{shadow}") or []
                per_round = per_round_ratios(cells, base, "p99", "p99")
                if not per_round:
                    continue
                value = statistics.median(per_round)
                errors = sum(c["errors"] for c in cells)
                target = mirror == "router"
                rows.append({
                    "mirror": mirror, "level": level, "concurrency": concurrency, "shadow": shadow,
                    "p99_ratio": round(value, 3), "min": round(min(per_round), 3), "max": round(max(per_round), 3),
                    "errors": errors, "target": f"<= {P99_BOUND}, 0 errors" if target else "-",
                    "met": (value <= P99_BOUND and errors == 0) if target else None,
                })
    return rows


def hops(summary: dict[str, dict[str, dict]]) -> dict[str, float]:
    """What each mirror adds to a request (healthy shadow, p50 - direct p50), per level."""
    out = {}
    for level, cells in summary.items():
        if "direct" not in cells:
            continue
        for mirror in MIRRORS:
            if f"{mirror}-healthy" in cells:
                out[f"{mirror}@{level}"] = round(cells[f"{mirror}-healthy"]["p50_ms"] - cells["direct"]["p50_ms"], 4)
    return out


LABELS = {"direct": "primary, direct (no mirror)",
          **{f"{m}-{s}": f"{m}, shadow {s}" for m in MIRRORS for s in SHADOWS}}


def markdown(report: dict) -> str:
    env, cfg = report["environment"], report["config"]
    lines = [
        *report_heading("Mirroring isolation benchmark", report, "loadtest.bench_mirror"),
        ("The primary predictor answered through a mirror while its shadow is (a) healthy, (b) answers "
         f"{SLOW_SHADOW_MS} ms late, (c) was killed. Targets for this project's router: (b) and (c) p99 "
         f"<= {P99_BOUND}x (a) p99 and no errors, at both levels. nginx's `mirror` directive is the reference."),
        "",
        "## Isolation",
        "",
        "| mirror | concurrency | shadow | p99 / healthy p99 | range | errors | target | met |",
        "|---|---:|---|---:|---|---:|---|---|",
    ]
    for r in report["isolation"]:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "**NO**")
        lines.append(f"| {r['mirror']} | {r['concurrency']} | {r['shadow']} | {r['p99_ratio']:.2f} | "
                     f"{r['min']:.2f} - {r['max']:.2f} | {r['errors']} | {r['target']} | {met} |")
    hop = report["hops"]
    if hop:
        lines += ["", "## Hop (healthy shadow: mirror p50 - direct p50)", ""]
        for level in report["summary"]:
            parts = [f"{m} {hop[f'{m}@{level}']:.3f} ms" for m in MIRRORS if f"{m}@{level}" in hop]
            lines.append(f"- concurrency {report['config']['levels'][level]}: " + ", ".join(parts))
    for level, concurrency in cfg["levels"].items():
        lines += ["", f"## Concurrency {concurrency}", "",
                  "| target | req/s | p50 ms | p99 ms | p99.9 ms | errors | p50 spread |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, s in report["summary"][level].items():
            spread = f"{s['p50_spread_pct']}%" if s["p50_spread_pct"] is not None else "-"
            lines.append(f"| {LABELS.get(name, name)} | {s['throughput_rps']:.0f} | {s['p50_ms']:.3f} | "
                         f"{s['p99_ms']:.3f} | {s['p999_ms']:.3f} | {s['errors']} | {spread} |")
    lines += [
        "",
        "## How it was measured",
        "",
        (f"- {cfg['rounds']} round(s), every cell once per round, interleaved; {cfg['warmup_s']} s warm-up, "
         f"{cfg['duration_s']} s measured per cell; ratios are taken within a round, then the median."),
        ("- Load generator `loadtest/loadgen.py` (closed loop, keep-alive), the same single-row V1 bodies for "
         "every cell (`loadtest/payloads.py`)."),
        f"- CPU pinning: {env['pinning']['description']}",
        ("- Router: `airflow_project.serving.router` in mirror mode with its shadow guard "
         "(`serving/shadow_guard.py`: copies in flight bounded, a breaker after transport failures)."),
        (f"- nginx {report['nginx_version']}: `mirror` + `proxy_pass` to keep-alive upstreams, one worker, "
         "access log off, error log at `warn` (its configuration is in the JSON report)."
         if report.get("nginx_version") else "- nginx: not run (`--no-nginx`)."),
        (f"- Load average (1 min) at start {env['loadavg_start'][0]}, at end {report['loadavg_end'][0]}."),
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_mirror")
    add_round_args(p, "connections at the loaded level")
    p.add_argument("--no-nginx", action="store_true", help="leave out the nginx reference")
    add_harness_args(p)
    args = parse_round_args(p, argv)
    gen_cpus, server_cpus, pinning = cpu_split(args.no_pin)
    with harness("bench-mirror-", args.keep) as (work, servers):
        tracking_uri, model_uri = model_under_test(work, servers, args.tracking_uri, args.model_uri, server_cpus)
        print(f"serving {model_uri}", flush=True)
        primary = predictor_server("primary", model_uri, tracking_uri, work, server_cpus)
        healthy = predictor_server("shadow-healthy", model_uri, tracking_uri, work, server_cpus)
        doomed = predictor_server("shadow-killed", model_uri, tracking_uri, work, server_cpus)
        slow_port = free_port()
        slow = Server("shadow-slow", [sys.executable, "-m", "loadtest.floor_app", "--port", str(slow_port),
                                      "--delay-ms", str(SLOW_SHADOW_MS)], slow_port, "/", work / "shadow-slow.log",
                      cpus=server_cpus)
        shadows = {"healthy": healthy, "slow": slow, "killed": doomed}
        for server in (primary, *shadows.values()):
            servers.append(server.start())
        for server in (primary, *shadows.values()):
            server.wait_ready()
        routers = {name: router_server(f"router-{name}", {
            "mode": "mirror", "mirror": {"primary": "primary", "shadow": "shadow", "percentage": 100},
            "services": {"primary": primary.url, "shadow": shadow.url}}, work, server_cpus)
            for name, shadow in shadows.items()}
        for router in routers.values():
            servers.append(router.start())
        for router in routers.values():
            router.wait_ready(60)
        nginx = nginx_version = None
        nginx_ports: dict[str, int] = {}
        if not args.no_nginx:
            nginx, nginx_ports = nginx_server(work, primary.port, {n: s.port for n, s in shadows.items()},
                                              server_cpus)
            servers.append(nginx.start())
            nginx.wait_ready(30)
            nginx_version = _nginx_version(nginx.argv[0])
        # (c): the shadow dies the way a crash or the OOM killer ends it
        assert doomed.proc is not None
        os.killpg(doomed.proc.pid, signal.SIGKILL)
        doomed.proc.wait(timeout=10)

        bodies = work / "bodies-v1.json"
        bodies.write_text(json.dumps([payloads.v1_body(b) for b in payloads.pool(size=256)]))
        endpoints = {"direct": primary.url + V1_PATH}
        endpoints.update({f"router-{name}": router.url + V1_PATH for name, router in routers.items()})
        endpoints.update({f"nginx-{name}": f"http://127.0.0.1:{port}{V1_PATH}" for name, port in nginx_ports.items()})
        levels = {"c1": 1, f"c{args.concurrency}": args.concurrency}
        cells = [Cell(target, level, url, bodies, "v1", concurrency)
                 for level, concurrency in levels.items() for target, url in endpoints.items()]
        env_info = environment(pinning)
        raw = run_rounds(cells, args, gen_cpus)
        summary = {level: {t: {**summarize(rs), "p999_ms": statistics.median(r["latency_ms"]["p999"] for r in rs)}
                           for t, rs in by_t.items()} for level, by_t in raw.items()}
        report = {
            "model": {"uri": model_uri, "tracking_uri": tracking_uri},
            "config": {"rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
                       "levels": levels, "slow_shadow_ms": SLOW_SHADOW_MS, "p99_bound": P99_BOUND},
            "environment": env_info,
            "nginx_version": nginx_version,
            "nginx_config": (work / "nginx" / "nginx.conf").read_text() if nginx is not None else None,
            "summary": summary,
            "isolation": isolation(raw, levels),
            "hops": hops(summary),
            "raw": raw,
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        }
        write_report(args.reports_dir, "bench-mirror", report, markdown(report))
        return 0


def _nginx_version(binary: str) -> str:
    import subprocess

    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    return (out.stderr or out.stdout).strip().rsplit("/", 1)[-1]


if __name__ == "__main__":
    sys.exit(main())
