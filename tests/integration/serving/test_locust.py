"""A short headless Locust run against a real predictor and a real graph router.

Locust runs as a subprocess (`loadtest.run.run_headless`): importing locust would
monkey-patch this test process with gevent. The run must finish with zero failed
requests (every response is checked by the locustfile: 200 and one prediction per row),
Locust's own exit code 0, and both user classes must have sent traffic.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from airflow_project.serving import manifests
from loadtest.run import run_headless
from loadtest.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


STATS_HEADER = (
    '"Type","Name","Request Count","Failure Count","Median Response Time","Average Response Time",'
    '"Min Response Time","Max Response Time","Average Content Size","Requests/s","Failures/s",'
    '"50%","66%","75%","80%","90%","95%","98%","99%","99.9%","99.99%","100%"\n'
)


def _stats(tmp_path, rows):
    path = tmp_path / "x_stats.csv"
    lines = [f'"POST","{name}",{n},{fails},3,3,1,9,20,50.0,0.0,3,3,4,4,5,{p95},7,8,9,9,9\n'
             for name, n, fails, p95 in rows]
    path.write_text(STATS_HEADER + "".join(lines))
    return path


def test_slo_check_reads_locust_csv(tmp_path):
    from loadtest import slo

    ok = slo.check(_stats(tmp_path, [("graph V1", 100, 0, 6), ("Aggregated", 100, 0, 6)]), p95_ms=10)
    assert ok.ok, ok.problems
    failed = slo.check(_stats(tmp_path, [("graph V1", 100, 2, 6), ("Aggregated", 100, 2, 6)]), p95_ms=10)
    assert not failed.ok and any("2 of 100 requests failed" in p for p in failed.problems)
    slow = slo.check(_stats(tmp_path, [("graph V1", 100, 0, 60), ("Aggregated", 100, 0, 60)]), p95_ms=10)
    assert any("p95 60 ms > 10 ms" in p for p in slow.problems)
    empty = slo.check(_stats(tmp_path, [("Aggregated", 0, 0, 0)]), p95_ms=10)
    assert "no requests were made" in empty.problems
    assert not slo.check(tmp_path / "missing_stats.csv", p95_ms=10).ok


def test_settings_from_env_defaults_and_overrides():
    defaults = Settings.from_env({})
    assert (defaults.predictor_url, defaults.graph_url, defaults.model_name) == (
        "http://127.0.0.1:8100", "http://127.0.0.1:8101", "wachttijden")
    custom = Settings.from_env({"LOADTEST_PREDICTOR_URL": "http://gw:8080/", "LOADTEST_TARGET": "graph",
                                "LOADTEST_HOST_HEADER": "isvc.example.com"})
    assert custom.predictor_url == "http://gw:8080"
    assert custom.graph_host_header == "isvc.example.com"
    assert custom.user_classes == ["GraphUser"]
    assert Settings.from_env(custom.to_env()) == custom
    moved = Settings.from_env({"MLOPS_SERVING_PORT": "9100"})
    assert (moved.predictor_url, moved.graph_url) == ("http://127.0.0.1:9100", "http://127.0.0.1:9101")
    with pytest.raises(ValueError, match="LOADTEST_TARGET"):
        Settings.from_env({"LOADTEST_TARGET": "everything"})


def test_headless_locust_run_has_zero_failures(primary, shadow, router_factory, tmp_path):
    # test_serving_live kills the shadow in its fault tests; this module runs first, but stay
    # independent of the order: a dead shadow is replaced by the primary.
    shadow_url = shadow.url if shadow.proc.poll() is None else primary.url
    router = router_factory({
        "graph": manifests.inference_graph("wachttijden-graph", "wachttijden-primary", "wachttijden-shadow"),
        "services": {"wachttijden-primary": primary.url, "wachttijden-shadow": shadow_url},
        "mode": "graph",
    })
    settings = Settings(
        predictor_url=primary.url,
        graph_url=router.url,
        target="both",
        users=3,
        spawn_rate=3,
        run_time="12s",
        # This machine is shared and small: the bound is loose; failures are the point.
        p95_ms=2000,
        reports_dir=str(tmp_path),
    )
    result = run_headless(settings, prefix=tmp_path / "locust", timeout=120)
    log_tail = result.log.read_text(errors="replace")[-3000:]
    assert result.returncode == 0, f"locust exited with {result.returncode}:\n{log_tail}"
    assert result.slo.ok, result.slo.summary() + "\n" + log_tail
    by_name = {s.name: s for s in result.slo.endpoints}
    for name in ("predictor V1 predict", "predictor V2 infer", "graph V1"):
        assert by_name[name].requests > 0, result.slo.summary()
        assert by_name[name].failures == 0, result.slo.summary()
    assert result.html.exists() and result.html.stat().st_size > 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_loadtest_passes_signals_on_to_locust_and_leaves_nothing_listening(sig: signal.Signals) -> None:
    """`make loadtest` (`python -m loadtest.run ui`) stopped with kill or Ctrl-C: Locust gets the
    signal and is waited for, so its web port (8089 by default, a free one here) is free again."""
    from airflow_project.host.net import free_port, port_is_free
    from loadtest.run import _parser
    from loadtest.settings import WEB_PORT

    assert _parser().parse_args(["ui"]).web_port == WEB_PORT == 8089
    port = free_port()
    runner = subprocess.Popen(
        [sys.executable, "-m", "loadtest.run", "ui", "--web-port", str(port), "--target", "predictor",
         "--predictor-url", "http://127.0.0.1:9"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while port_is_free(port):
            assert runner.poll() is None and time.monotonic() < deadline, "locust did not start"
            time.sleep(0.2)
        locust = psutil.Process(runner.pid).children()
        assert locust and "locust" in " ".join(locust[0].cmdline())
        os.kill(runner.pid, sig)  # the runner only, as `kill <pid>` does
        assert runner.wait(timeout=30) is not None
        _, alive = psutil.wait_procs(locust, timeout=5)
        assert not alive and port_is_free(port)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
