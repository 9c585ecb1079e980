"""The one place for load-test targets and bounds (stdlib only, safe to import anywhere).

Every value comes from an environment variable with a default that matches the local
platform (`mlops up`): the predictor on the serving base port 8100, the graph router on
8101. The Makefile, the locustfile, the SLO check and the local platform all read
`Settings.from_env()`; nothing else hard-codes these.

| variable                      | default                  | meaning                                        |
|-------------------------------|--------------------------|------------------------------------------------|
| LOADTEST_PREDICTOR_URL        | http://127.0.0.1:8100 (*)| base URL of the KServe predictor (or ingress)  |
| LOADTEST_GRAPH_URL            | http://127.0.0.1:8101 (*)| base URL of the InferenceGraph router          |
| LOADTEST_MODEL_NAME           | wachttijden              | served model name in `/v1/models/<name>`       |
| LOADTEST_HOST_HEADER          | (none)                   | Host header for the predictor (Istio ingress)  |
| LOADTEST_GRAPH_HOST_HEADER    | LOADTEST_HOST_HEADER     | Host header for the graph (Istio ingress)      |
| LOADTEST_TARGET               | both                     | predictor, graph or both                       |
| LOADTEST_V2_SHARE             | 0.5                      | share of predictor requests sent as V2         |
| LOADTEST_ROWS                 | 1                        | rows (instances) per request                   |
| LOADTEST_USERS                | 4                        | headless run: concurrent users                 |
| LOADTEST_SPAWN_RATE           | 4                        | headless run: users started per second         |
| LOADTEST_RUN_TIME             | 30s                      | headless run: duration                         |
| LOADTEST_P95_MS               | 250                      | headless run: fail when p95 (ms) is above this |
| LOADTEST_REPORTS_DIR          | reports                  | where HTML and CSV reports are written         |

(*) With `MLOPS_SERVING_PORT=P` set (the local platform's serving base port), the defaults
follow it: predictor on P, graph on P + 1 (`mlops up` allocates primary, graph, shadow in
that order from the base port).

With an Istio ingress, point both URLs at the ingress gateway and set the Host headers
to the InferenceService / InferenceGraph hostnames (`kubectl get isvc,ig`), e.g.
`LOADTEST_HOST_HEADER=wachttijden-predictor.wachttijden-serving.example.com`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

DEFAULT_PREDICTOR_URL = "http://127.0.0.1:8100"
DEFAULT_GRAPH_URL = "http://127.0.0.1:8101"
DEFAULT_MODEL_NAME = "wachttijden"
TARGETS = ("predictor", "graph", "both")
WEB_HOST = "127.0.0.1"
WEB_PORT = 8089

ENV_VARS = (
    "LOADTEST_PREDICTOR_URL", "LOADTEST_GRAPH_URL", "LOADTEST_MODEL_NAME", "LOADTEST_HOST_HEADER",
    "LOADTEST_GRAPH_HOST_HEADER", "LOADTEST_TARGET", "LOADTEST_V2_SHARE", "LOADTEST_ROWS",
    "LOADTEST_USERS", "LOADTEST_SPAWN_RATE", "LOADTEST_RUN_TIME", "LOADTEST_P95_MS",
    "LOADTEST_REPORTS_DIR",
)


@dataclass(frozen=True)
class Settings:
    predictor_url: str = DEFAULT_PREDICTOR_URL
    graph_url: str = DEFAULT_GRAPH_URL
    model_name: str = DEFAULT_MODEL_NAME
    host_header: str = ""
    graph_host_header: str = ""
    target: str = "both"
    v2_share: float = 0.5
    rows: int = 1
    users: int = 4
    spawn_rate: float = 4.0
    run_time: str = "30s"
    p95_ms: float = 250.0
    reports_dir: str = "reports"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str, default: str) -> str:
            value = env.get(name, "").strip()
            return value if value else default

        host_header = get("LOADTEST_HOST_HEADER", "")
        predictor_default, graph_default = DEFAULT_PREDICTOR_URL, DEFAULT_GRAPH_URL
        base = get("MLOPS_SERVING_PORT", "")
        if base.isdigit():
            predictor_default = f"http://127.0.0.1:{int(base)}"
            graph_default = f"http://127.0.0.1:{int(base) + 1}"
        settings = cls(
            predictor_url=get("LOADTEST_PREDICTOR_URL", predictor_default).rstrip("/"),
            graph_url=get("LOADTEST_GRAPH_URL", graph_default).rstrip("/"),
            model_name=get("LOADTEST_MODEL_NAME", DEFAULT_MODEL_NAME),
            host_header=host_header,
            graph_host_header=get("LOADTEST_GRAPH_HOST_HEADER", host_header),
            target=get("LOADTEST_TARGET", "both").lower(),
            v2_share=float(get("LOADTEST_V2_SHARE", "0.5")),
            rows=int(get("LOADTEST_ROWS", "1")),
            users=int(get("LOADTEST_USERS", "4")),
            spawn_rate=float(get("LOADTEST_SPAWN_RATE", "4")),
            run_time=get("LOADTEST_RUN_TIME", "30s"),
            p95_ms=float(get("LOADTEST_P95_MS", "250")),
            reports_dir=get("LOADTEST_REPORTS_DIR", "reports"),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"LOADTEST_TARGET must be one of {TARGETS}, got {self.target!r}")
        if not 0.0 <= self.v2_share <= 1.0:
            raise ValueError(f"LOADTEST_V2_SHARE must be within [0, 1], got {self.v2_share}")
        if self.rows < 1:
            raise ValueError(f"LOADTEST_ROWS must be >= 1, got {self.rows}")
        for name in ("predictor_url", "graph_url"):
            if not getattr(self, name).startswith(("http://", "https://")):
                raise ValueError(f"{name} must be an http(s) URL, got {getattr(self, name)!r}")

    def with_(self, **changes: object) -> Settings:
        new = replace(self, **changes)  # type: ignore[arg-type]
        new.validate()
        return new

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child (the locust process)."""
        return {
            "LOADTEST_PREDICTOR_URL": self.predictor_url,
            "LOADTEST_GRAPH_URL": self.graph_url,
            "LOADTEST_MODEL_NAME": self.model_name,
            "LOADTEST_HOST_HEADER": self.host_header,
            "LOADTEST_GRAPH_HOST_HEADER": self.graph_host_header,
            "LOADTEST_TARGET": self.target,
            "LOADTEST_V2_SHARE": str(self.v2_share),
            "LOADTEST_ROWS": str(self.rows),
            "LOADTEST_USERS": str(self.users),
            "LOADTEST_SPAWN_RATE": str(self.spawn_rate),
            "LOADTEST_RUN_TIME": self.run_time,
            "LOADTEST_P95_MS": str(self.p95_ms),
            "LOADTEST_REPORTS_DIR": self.reports_dir,
        }

    @property
    def user_classes(self) -> list[str]:
        """Locust user classes for the target switch."""
        return {
            "predictor": ["PredictorUser"],
            "graph": ["GraphUser"],
            "both": ["PredictorUser", "GraphUser"],
        }[self.target]

    def v1_path(self) -> str:
        return f"/v1/models/{self.model_name}:predict"

    def v2_path(self) -> str:
        return f"/v2/models/{self.model_name}/infer"
