"""Run Locust as a subprocess (never imported here): the web UI or a headless CI run.

    python -m loadtest.run ui [--target both] [--host-header H] ...
    python -m loadtest.run ci [--target both] [--users 4] [--run-time 30s] [--p95-ms 250]

`ui` serves Locust's web UI on 127.0.0.1:8089. `ci` runs headless for a fixed time and
user count, writes `reports/loadtest.html` and `reports/loadtest_*.csv`, then applies
`loadtest.slo.check`: exit 1 on any failed request or a p95 above the bound.
Defaults come from `loadtest.settings` (environment); flags override them. SIGINT and
SIGTERM are passed on to Locust, which is waited for: nothing keeps its port afterwards.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from loadtest import slo
from loadtest.settings import WEB_HOST, WEB_PORT, Settings

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LOCUSTFILE = HERE / "locustfile.py"


def locust_binary() -> str:
    candidate = Path(sys.executable).parent / "locust"
    return str(candidate) if candidate.exists() else "locust"


def child_env(settings: Settings) -> dict[str, str]:
    env = {**os.environ, **settings.to_env()}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("NO_PROXY", "127.0.0.1,localhost")
    return env


FORWARDED = (signal.SIGINT, signal.SIGTERM)


def run_forwarding(argv: Sequence[str], *, env: dict[str, str], cwd: Path, stdout: IO[bytes] | None = None,
                   timeout: float | None = None, grace: float = 15.0) -> int:
    """Run `argv` to its end and return its exit code, passing SIGINT and SIGTERM on to it.

    `make loadtest` stopped with Ctrl-C or `kill` would otherwise leave Locust running (and
    holding its port): a signal received here goes to the child, which is then waited for,
    `grace` seconds at most before it is killed. So is a child still running at `timeout`.
    """
    proc = subprocess.Popen(list(argv), env=env, cwd=cwd, stdout=stdout,
                            stderr=subprocess.STDOUT if stdout is not None else None)
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        if proc.poll() is None:
            proc.send_signal(signum)

    main = threading.current_thread() is threading.main_thread()  # only it may set handlers
    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED} if main else {}
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while proc.poll() is None:
            if received or (deadline is not None and time.monotonic() > deadline):
                break
            time.sleep(0.1)
        if proc.poll() is None and not received:
            proc.terminate()  # the timeout
        try:
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def ui_command(settings: Settings, web_host: str = WEB_HOST, web_port: int = WEB_PORT) -> list[str]:
    return [locust_binary(), "-f", str(LOCUSTFILE), "--web-host", web_host, "--web-port", str(web_port),
            "--users", str(settings.users), "--spawn-rate", str(settings.spawn_rate),
            *settings.user_classes]


def headless_command(settings: Settings, prefix: Path, extra: Sequence[str] = ()) -> list[str]:
    return [locust_binary(), "-f", str(LOCUSTFILE), "--headless",
            "--users", str(settings.users), "--spawn-rate", str(settings.spawn_rate),
            "--run-time", settings.run_time, "--stop-timeout", "5",
            "--csv", str(prefix), "--html", str(prefix) + ".html", "--only-summary",
            "--exit-code-on-error", "1", *extra, *settings.user_classes]


@dataclass
class HeadlessResult:
    returncode: int
    slo: slo.SLOResult
    stats_csv: Path
    html: Path
    log: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.slo.ok


def run_headless(settings: Settings, prefix: Path | None = None, timeout: float | None = None,
                 extra: Sequence[str] = ()) -> HeadlessResult:
    """Run Locust headless in a child process; reports at `<prefix>_stats.csv` and `<prefix>.html`;
    `extra`: more Locust flags."""
    prefix = Path(prefix or Path(settings.reports_dir) / "loadtest").resolve()
    prefix.parent.mkdir(parents=True, exist_ok=True)
    log = Path(str(prefix) + ".log")
    with open(log, "wb") as out:
        code = run_forwarding(headless_command(settings, prefix, extra), env=child_env(settings), cwd=REPO,
                              stdout=out, timeout=timeout)
    stats_csv = Path(str(prefix) + "_stats.csv")
    return HeadlessResult(code, slo.check(stats_csv, settings.p95_ms), stats_csv,
                          Path(str(prefix) + ".html"), log)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.run")
    p.add_argument("mode", choices=["ui", "ci"])
    p.add_argument("--target", choices=["predictor", "graph", "both"])
    p.add_argument("--host-header", help="Host header for the predictor (and the graph, unless --graph-host-header)")
    p.add_argument("--graph-host-header")
    p.add_argument("--predictor-url")
    p.add_argument("--graph-url")
    p.add_argument("--model-name")
    p.add_argument("--users", type=int)
    p.add_argument("--spawn-rate", type=float)
    p.add_argument("--run-time")
    p.add_argument("--p95-ms", type=float)
    p.add_argument("--reports-dir")
    p.add_argument("--web-port", type=int, default=WEB_PORT, help=f"ui: the web UI's port (default {WEB_PORT})")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings.from_env()
    changes = {k: v for k, v in {
        "target": args.target, "predictor_url": args.predictor_url, "graph_url": args.graph_url,
        "model_name": args.model_name, "users": args.users, "spawn_rate": args.spawn_rate,
        "run_time": args.run_time, "p95_ms": args.p95_ms, "reports_dir": args.reports_dir,
    }.items() if v not in (None, "")}
    if args.host_header:
        changes["host_header"] = args.host_header
        changes.setdefault("graph_host_header", args.host_header)
    if args.graph_host_header:
        changes["graph_host_header"] = args.graph_host_header
    settings = settings.with_(**changes)
    targets = ", ".join(
        f"{cls} -> {settings.predictor_url if cls == 'PredictorUser' else settings.graph_url}"
        for cls in settings.user_classes
    )
    if args.mode == "ui":
        print(f"Locust web UI on http://{WEB_HOST}:{args.web_port} ({targets})", flush=True)
        return run_forwarding(ui_command(settings, web_port=args.web_port), env=child_env(settings), cwd=REPO)
    print(f"headless: {settings.users} users for {settings.run_time} ({targets}), "
          f"p95 bound {settings.p95_ms:.0f} ms", flush=True)
    result = run_headless(settings)
    print(result.slo.summary())
    print(f"reports: {result.html} {result.stats_csv} (locust log {result.log})")
    if result.returncode != 0:
        print(f"locust exited with {result.returncode} (failures or errors; see {result.log})")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
