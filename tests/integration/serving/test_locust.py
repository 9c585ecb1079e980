"""A short headless Locust run against a real predictor and a real graph router.

Locust runs as a subprocess (`loadtest.run.run_headless`): importing locust would
monkey-patch this test process with gevent. The run must finish with zero failed
requests (every response is checked by the locustfile: 200 and one prediction per row),
Locust's own exit code 0, and both user classes must have sent traffic.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from airflow_project.serving import manifests
from loadtest.run import run_headless
from loadtest.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_headless_locust_run_has_zero_failures(primary, shadow, router_factory, tmp_path):
    router = router_factory({
        "graph": manifests.inference_graph("wachttijden-graph", "wachttijden-primary", "wachttijden-shadow"),
        "services": {"wachttijden-primary": primary.url, "wachttijden-shadow": shadow.url},
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
