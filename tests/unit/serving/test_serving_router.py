"""Local graph router: one test per KServe router rule, plus mirror mode.

Upstream services are in-process fakes behind the router's step-client interface
(`post`, `aclose`); a refused connection raises `StepTransportError` as the real client
does. The real clients are tested on sockets in test_serving_router_client.
"""

from __future__ import annotations

import asyncio
import json
import random
from urllib.parse import urlsplit

import pytest

from airflow_project.serving import manifests
from airflow_project.serving.router import (
    MirrorConfig,
    Router,
    build_app,
    router_from_file_config,
    url_resolver,
)
from airflow_project.serving.step_client import StepAnswer, StepTransportError


class Upstreams:
    """host -> behaviour; records every call (host, path, body, headers). Each host answers
    with `x-model-version: v-<host>`."""

    def __init__(self, behaviours, delay=None):
        self.behaviours = behaviours
        self.calls = []
        self.delay = delay or {}

    async def post(self, url, body, headers):
        parts = urlsplit(url)
        host = parts.hostname
        self.calls.append((host, parts.path, body, dict(headers)))
        if host in self.delay:
            await asyncio.sleep(self.delay[host])
        behaviour = self.behaviours.get(host, "refused")
        if behaviour == "refused":
            raise StepTransportError(f"Post {url!r}: ConnectError: connection refused")
        if callable(behaviour):
            status, payload = behaviour(body)
        else:
            status, payload = behaviour
        return StepAnswer(payload if isinstance(payload, bytes) else json.dumps(payload).encode(), status,
                          f"v-{host}".encode())

    async def aclose(self):
        pass


def node(router_type, *steps):
    return {"routerType": router_type, "steps": list(steps)}


def graph(**nodes):
    return {"spec": {"nodes": nodes}}


def make(graph_spec, behaviours, mirror=None, seed=0, delay=None):
    transport = Upstreams(behaviours, delay)
    resolve = url_resolver({h: f"http://{h}" for h in ["a", "b", "c", "primary", "shadow"]})
    router = Router(graph=graph_spec, resolve_url=resolve, client=transport, mirror=mirror, rng=random.Random(seed))
    return router, transport


def run(router, body=b'{"instances": [1]}', headers=None):
    """(body, status) of the router's answer."""
    return run_answer(router, body, headers)[:2]


def run_answer(router, body=b'{"instances": [1]}', headers=None) -> StepAnswer:
    return asyncio.run(router.handle(body, headers or {}))


def echo(tag):
    return lambda body: (200, {"from": tag, "got": json.loads(body)})


# ------------------------------------------------------------------ Sequence
def test_sequence_returns_last_step_and_passes_request_by_default():
    r, t = make(graph(root=node("Sequence", {"serviceName": "a"}, {"serviceName": "b"})), {"a": echo("a"), "b": echo("b")})
    body, status = run(r)
    assert status == 200
    assert json.loads(body) == {"from": "b", "got": {"instances": [1]}}
    assert [c[0] for c in t.calls] == ["a", "b"]
    assert t.calls[0][1] == "/v1/models/wachttijden:predict"  # KServe's step URL


def test_sequence_dollar_response_feeds_previous_body():
    r, _ = make(graph(root=node("Sequence", {"serviceName": "a"}, {"serviceName": "b", "data": "$response"})),
                {"a": (200, {"predictions": [3]}), "b": echo("b")})
    body, _ = run(r)
    assert json.loads(body)["got"] == {"predictions": [3]}


def test_sequence_map_predictions_to_instances():
    r, _ = make(graph(root=node("Sequence", {"serviceName": "a"},
                                {"serviceName": "b", "data": "$response", "mapPredictionsToInstances": True})),
                {"a": (200, {"predictions": [3, 4]}), "b": echo("b")})
    body, _ = run(r)
    assert json.loads(body)["got"] == {"instances": [3, 4]}


def test_sequence_hard_failure_stops_and_is_returned():
    r, t = make(graph(root=node("Sequence", {"serviceName": "a", "dependency": "Hard"}, {"serviceName": "b"})),
                {"a": (400, {"error": "bad"}), "b": echo("b")})
    assert run(r) == (json.dumps({"error": "bad"}).encode(), 400)
    assert [c[0] for c in t.calls] == ["a"]


def test_sequence_soft_failure_continues():
    r, _t = make(graph(root=node("Sequence", {"serviceName": "a", "dependency": "Soft"}, {"serviceName": "b", "dependency": "Hard"})),
                {"a": (503, {"error": "down"}), "b": (200, {"predictions": [1.0]})})
    body, status = run(r)
    assert (json.loads(body), status) == ({"predictions": [1.0]}, 200)


def test_sequence_last_soft_step_status_is_returned():
    r, _ = make(graph(root=node("Sequence", {"serviceName": "a"}, {"serviceName": "b", "dependency": "Soft"})),
                {"a": (200, {}), "b": (418, {"error": "teapot"})})
    assert run(r)[1] == 418


def test_sequence_transport_error_is_500_even_for_soft_steps():
    r, t = make(graph(root=node("Sequence", {"serviceName": "shadow", "dependency": "Soft"}, {"serviceName": "primary", "dependency": "Hard"})),
                {"shadow": "refused", "primary": (200, {"predictions": [1.0]})})
    body, status = run(r)
    assert status == 500
    payload = json.loads(body)
    assert payload["error"] == "Failed to process request"
    assert "shadow" in payload["cause"]
    assert [c[0] for c in t.calls] == ["shadow"]  # the primary is never called


def test_sequence_condition_on_previous_response():
    g = graph(root=node("Sequence", {"serviceName": "a"}, {"serviceName": "b", "condition": "predictions.#(>5)"}))
    r, _ = make(g, {"a": (200, {"predictions": [1, 2]}), "b": echo("b")})
    assert run(r) == (json.dumps({"predictions": [1, 2]}).encode(), 200)  # condition unmet: a's answer
    r, _t = make(g, {"a": (200, {"predictions": [1, 9]}), "b": echo("b")})
    assert json.loads(run(r)[0])["from"] == "b"


def test_sequence_condition_with_invalid_previous_response_is_500():
    g = graph(root=node("Sequence", {"serviceName": "a"}, {"serviceName": "b", "condition": "x"}))
    r, _ = make(g, {"a": (200, b"not json"), "b": echo("b")})
    assert run(r)[1] == 500


# ------------------------------------------------------------------ Ensemble
def test_ensemble_merges_responses_by_step_name_or_index():
    r, _ = make(graph(root=node("Ensemble", {"serviceName": "a", "name": "first"}, {"serviceName": "b"})),
                {"a": (200, {"predictions": [1]}), "b": (200, {"predictions": [2]})}, delay={"a": 0.05})
    body, status = run(r)
    assert status == 200
    assert json.loads(body) == {"first": {"predictions": [1]}, "1": {"predictions": [2]}}


def test_ensemble_runs_steps_in_parallel():
    import time

    r, _ = make(graph(root=node("Ensemble", {"serviceName": "a"}, {"serviceName": "b"})),
                {"a": (200, {}), "b": (200, {})}, delay={"a": 0.3, "b": 0.3})
    start = time.perf_counter()
    run(r)
    assert time.perf_counter() - start < 0.55


def test_ensemble_hard_failure_decides_response():
    r, _ = make(graph(root=node("Ensemble", {"serviceName": "a"}, {"serviceName": "b", "dependency": "Hard"})),
                {"a": (200, {"ok": 1}), "b": (503, {"error": "down"})})
    assert run(r) == (json.dumps({"error": "down"}).encode(), 503)


def test_ensemble_soft_failure_is_merged():
    r, _ = make(graph(root=node("Ensemble", {"serviceName": "a", "name": "a"}, {"serviceName": "b", "name": "b"})),
                {"a": (200, {"ok": 1}), "b": (503, {"error": "down"})})
    assert run(r) == (json.dumps({"a": {"ok": 1}, "b": {"error": "down"}}).encode(), 200)


def test_ensemble_transport_error_is_500():
    r, _ = make(graph(root=node("Ensemble", {"serviceName": "a"}, {"serviceName": "b"})), {"a": (200, {}), "b": "refused"})
    assert run(r)[1] == 500


# ------------------------------------------------------------------ Splitter / Switch
def test_splitter_picks_by_weight():
    r, t = make(graph(root=node("Splitter", {"serviceName": "a", "weight": 80}, {"serviceName": "b", "weight": 20})),
                {"a": (200, {}), "b": (200, {})}, seed=1)

    async def many():
        for _ in range(1000):
            await r.handle(b"{}", {})

    asyncio.run(many())
    share_a = sum(1 for c in t.calls if c[0] == "a") / len(t.calls)
    assert len(t.calls) == 1000
    assert 0.75 < share_a < 0.85


def test_splitter_weights_must_sum_to_100():
    with pytest.raises(ValueError, match="sum to 90"):
        make(graph(root=node("Splitter", {"serviceName": "a", "weight": 90})), {})


def test_switch_first_matching_condition_wins():
    g = graph(root=node("Switch",
                        {"serviceName": "a", "condition": "instances.#(kind==\"x\")"},
                        {"serviceName": "b", "condition": "instances"}))
    r, _t = make(g, {"a": echo("a"), "b": echo("b")})
    assert json.loads(run(r, b'{"instances": [{"kind": "x"}]}')[0])["from"] == "a"
    assert json.loads(run(r, b'{"instances": [{"kind": "y"}]}')[0])["from"] == "b"


def test_switch_no_match_is_404():
    r, _ = make(graph(root=node("Switch", {"serviceName": "a", "condition": "nothing"})), {"a": (200, {})})
    body, status = run(r)
    assert status == 404
    assert json.loads(body)["error"] == "Failed to process request"


def test_nested_nodes():
    g = graph(root=node("Sequence", {"nodeName": "fan"}, {"serviceName": "c", "data": "$response"}),
              fan=node("Ensemble", {"serviceName": "a", "name": "a"}, {"serviceName": "b", "name": "b"}))
    r, _ = make(g, {"a": (200, {"p": 1}), "b": (200, {"p": 2}), "c": echo("c")})
    assert json.loads(run(r)[0])["got"] == {"a": {"p": 1}, "b": {"p": 2}}


# ------------------------------------------------------------------ HTTP app
def test_any_path_runs_the_graph_and_readyz_answers():
    from starlette.testclient import TestClient

    r, _t = make(graph(root=node("Sequence", {"serviceName": "a"})), {"a": (200, {"predictions": [2.0]})})
    with TestClient(build_app(r)) as client:
        assert client.get("/readyz").status_code == 200
        for path in ["/", "/v1/models/whatever:predict", "/v2/models/x/infer", "/anything"]:
            resp = client.post(path, json={"instances": []})
            assert resp.status_code == 200
            assert resp.json() == {"predictions": [2.0]}
            assert resp.headers["content-type"] == "application/json"


def test_oversized_body_is_413_and_never_forwarded():
    from starlette.testclient import TestClient

    r, t = make(graph(root=node("Sequence", {"serviceName": "a"})), {"a": (200, {"predictions": [2.0]})})
    with TestClient(build_app(r, max_body_bytes=64)) as client:
        declared = client.post("/", content=b"x" * 65, headers={"content-type": "application/json"})

        def chunks():
            yield b'{"instances": ['
            yield b"1," * 40
            yield b"1]}"

        streamed = client.post("/", content=chunks(), headers={"content-type": "application/json"})
        fits = client.post("/", json={"instances": [1]})
    assert declared.status_code == 413, declared.text
    assert declared.json()["error"] == "body: request body of 65 bytes exceeds the limit of 64 bytes"
    assert streamed.status_code == 413 and "exceeds the limit of 64 bytes" in streamed.json()["error"]
    assert fits.status_code == 200
    assert [c[1] for c in t.calls] == ["/v1/models/wachttijden:predict"]  # only the request that fits


def test_headers_propagated_and_request_id_added():
    r, t = make(graph(root=node("Sequence", {"serviceName": "a"}, {"serviceName": "b"})), {"a": (200, {}), "b": (200, {})})
    run(r, headers={"x-request-id": "rid-1", "authorization": "Bearer t", "cookie": "secret"})
    for _, _, _, headers in t.calls:
        assert headers["x-request-id"] == "rid-1"
        assert headers["authorization"] == "Bearer t"
        assert "cookie" not in headers
        assert headers["content-type"] == "application/json"
    t.calls.clear()
    run(r)
    ids = {c[3]["x-request-id"] for c in t.calls}
    assert len(ids) == 1  # generated once, shared by all steps


# ------------------------------------------------------------------ mirror mode
def test_mirror_answers_from_primary_without_waiting_for_shadow():
    import time

    async def scenario():
        r, t = make(None, {"primary": (200, {"predictions": [1.0]}), "shadow": (200, {"predictions": [2.0]})},
                    mirror=MirrorConfig("primary", "shadow"), delay={"shadow": 0.5})
        start = time.perf_counter()
        body, status, _ = await r.handle(b'{"instances": []}', {})
        elapsed = time.perf_counter() - start
        await asyncio.sleep(0.6)
        return body, status, elapsed, [c[0] for c in t.calls]

    body, status, elapsed, hosts = asyncio.run(scenario())
    assert (json.loads(body), status) == ({"predictions": [1.0]}, 200)
    assert elapsed < 0.4
    assert sorted(hosts) == ["primary", "shadow"]


def test_mirror_dead_shadow_does_not_affect_primary():
    async def scenario():
        r, t = make(None, {"primary": (200, {"predictions": [1.0]}), "shadow": "refused"}, mirror=MirrorConfig("primary", "shadow"))
        results = []
        for _ in range(5):
            results.append(await r.handle(b"{}", {}))
            await asyncio.sleep(0.01)
        return results, [c[0] for c in t.calls]

    results, hosts = asyncio.run(scenario())
    assert all(status == 200 for _, status, _ in results)
    # after the first refusal the breaker holds copies back: one attempt, not one per request
    assert hosts.count("shadow") == 1 and hosts.count("primary") == 5


def test_mirror_slow_shadow_gets_at_most_the_guards_copies_in_flight():
    from airflow_project.serving.shadow_guard import ShadowGuard

    async def scenario():
        mirror = MirrorConfig("primary", "shadow", guard=ShadowGuard(max_in_flight=3))
        r, t = make(None, {"primary": (200, {}), "shadow": (200, {})}, mirror=mirror, delay={"shadow": 0.2})
        for _ in range(10):
            await r.handle(b"{}", {})
            await asyncio.sleep(0)
        in_flight, counts = mirror.guard.in_flight, dict(mirror.guard.counts)
        await asyncio.sleep(0.3)
        return in_flight, mirror.guard.in_flight, [c[0] for c in t.calls].count("shadow"), counts

    in_flight, after, copies, counts = asyncio.run(scenario())
    assert (in_flight, after, copies) == (3, 0, 3)
    assert counts["busy"] == 7 and counts["sent"] == 3


def test_mirror_returns_primary_errors_as_is():
    async def scenario():
        r, _ = make(None, {"primary": (400, {"error": "instances: bad"}), "shadow": (200, {})}, mirror=MirrorConfig("primary", "shadow"))
        return await r.handle(b"{}", {})

    assert asyncio.run(scenario()) == (json.dumps({"error": "instances: bad"}).encode(), 400, b"v-primary")


def test_mirror_percentage():
    async def scenario():
        r, t = make(None, {"primary": (200, {}), "shadow": (200, {})}, mirror=MirrorConfig("primary", "shadow", 30.0), seed=3)
        for _ in range(500):
            await r.handle(b"{}", {})
            await asyncio.sleep(0)  # the copy's task runs (the fake primary never yields)
        await asyncio.sleep(0.05)
        return sum(1 for c in t.calls if c[0] == "shadow")

    assert 110 < asyncio.run(scenario()) < 190


# ------------------------------------------------------------------ graph file
def test_graph_file_with_built_manifest():
    ig = manifests.inference_graph("g", "primary", "shadow")
    config = {"graph": ig, "services": {"primary": "http://primary", "shadow": "http://shadow"}}
    transport = Upstreams({"primary": (200, {"predictions": [1.0]}), "shadow": (200, {"predictions": [2.0]})})
    r = router_from_file_config(config, client=transport)
    assert json.loads(run(r)[0]) == {"predictions": [1.0]}
    assert [c[0] for c in transport.calls] == ["shadow", "primary"]
    r = router_from_file_config({**config, "mode": "mirror", "mirror": {"primary": "primary", "shadow": "shadow"}},
                                client=transport)
    assert r.mirror is not None
    with pytest.raises(ValueError):
        router_from_file_config({"services": {}})
