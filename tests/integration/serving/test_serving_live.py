"""Serving against real processes: MLflow server, predictor processes, router processes.

Order matters within this module: the shadow-fault tests kill the shadow predictor, so
they run after the graph tests; the fuzz test runs on the primary, last.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from urllib.parse import quote, urlsplit

import httpx
import pandas as pd
import pytest

from airflow_project.serving import manifests
from airflow_project.wachttijden.categories import ROAZ_REGIOS, SPECIALISMEN

pytestmark = pytest.mark.integration

ROW = {"TYPE_WACHTTIJD": "Behandeling", "SPECIALISME": "Orthopedie (305)",
       "ROAZ_REGIO": "Acute Zorg Oost", "TYPE_ZORGINSTELLING": "Ziekenhuis"}
ROWS = [ROW, dict(ROW, SPECIALISME=SPECIALISMEN[0], ROAZ_REGIO=ROAZ_REGIOS[0]),
        dict(ROW, SPECIALISME="Onbekend specialisme")]
V1 = "/v1/models/wachttijden:predict"
V2 = "/v2/models/wachttijden/infer"


def expected(registered, alias, rows):
    return registered[alias][1].predict(pd.DataFrame(rows)).tolist()


def prediction_log(proc, request_id, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in proc.log_lines():
            if line.startswith("{") and request_id in line:
                record = json.loads(line)
                if record.get("event") == "prediction" and record["request_id"] == request_id:
                    return record
        time.sleep(0.1)
    raise AssertionError(f"no prediction log line for {request_id}")


def graph_config(primary, shadow, mode="graph"):
    config = {
        "graph": manifests.inference_graph("wachttijden-graph", "wachttijden-primary", "wachttijden-shadow"),
        "services": {"wachttijden-primary": primary.url, "wachttijden-shadow": shadow.url},
        "mode": mode,
    }
    if mode == "mirror":
        config["mirror"] = {"primary": "wachttijden-primary", "shadow": "wachttijden-shadow", "percentage": 100}
    return config


def test_predictor_loads_through_mlflow_and_predicts_v1(primary, registered):
    r = httpx.post(primary.url + V1, json={"instances": ROWS}, headers={"x-request-id": "it-v1"})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": expected(registered, "champion", ROWS)}
    record = prediction_log(primary, "it-v1")
    assert record["model_name"] == "wachttijden"
    assert record["model_version"] == registered["champion"][0]
    assert record["inputs"] == ROWS
    assert record["outputs"] == r.json()["predictions"]


def test_predictor_v2_pandas_content_type(primary, registered):
    body = {"parameters": {"content_type": "pd"},
            "inputs": [{"name": f, "datatype": "BYTES", "shape": [len(ROWS)], "data": [r[f] for r in ROWS]}
                       for f in registered["features"]]}
    r = httpx.post(primary.url + V2, json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model_version"] == registered["champion"][0]
    assert out["outputs"][0]["datatype"] == "FP64"
    assert out["outputs"][0]["data"] == expected(registered, "champion", ROWS)


def test_health_and_metrics(primary):
    assert httpx.get(primary.url + "/v2/health/live").json() == {"live": True}
    assert httpx.get(primary.url + "/v2/health/ready").json() == {"ready": True}
    assert httpx.get(primary.url + "/v1/models/wachttijden").json()["ready"] is True
    text = httpx.get(primary.url + "/metrics").text
    assert "request_predict_seconds" in text


def test_bad_input_over_http_is_4xx_and_server_stays_ready(primary):
    r = httpx.post(primary.url + V1, json={"instances": [dict(ROW, EXTRA="x")]})
    assert r.status_code == 400
    assert "EXTRA" in r.json()["error"]
    r = httpx.post(primary.url + V1, content=b"x" * (5 * 1024 * 1024), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert httpx.get(primary.url + "/v2/models/wachttijden/ready").status_code == 200


def _access_lines(proc, method, path, status):
    """uvicorn's access lines for one request line and status in the process's log."""
    request_line = f'"{method} {quote(path)} HTTP/1.1" {status} '  # uvicorn quotes the path
    return [line for line in proc.log_lines() if "uvicorn.access" in line and request_line in line]


def test_prediction_line_replaces_uvicorn_access_line(primary):
    """A fast-path prediction is logged once, as JSON with the client; other requests keep
    uvicorn's access line (checked against the real server, whose log this reads)."""
    ready = "/v2/models/wachttijden/ready"
    before = {key: len(_access_lines(primary, *key)) for key in
              [("POST", V1, 200), ("POST", V1, 400), ("GET", ready, 200)]}
    r = httpx.post(primary.url + V1, json={"instances": ROWS}, headers={"x-request-id": "it-access"})
    assert r.status_code == 200
    assert prediction_log(primary, "it-access")["client"].startswith("127.0.0.1:")
    assert httpx.post(primary.url + V1, json={"instances": [dict(ROW, EXTRA="x")]}).status_code == 400
    assert httpx.get(primary.url + ready).status_code == 200
    deadline = time.monotonic() + 5
    while len(_access_lines(primary, "GET", ready, 200)) == before["GET", ready, 200] and time.monotonic() < deadline:
        time.sleep(0.1)
    after = {key: len(_access_lines(primary, *key)) for key in before}
    assert after["GET", ready, 200] == before["GET", ready, 200] + 1
    assert after["POST", V1, 400] == before["POST", V1, 400] + 1
    assert after["POST", V1, 200] == before["POST", V1, 200]


def _http_request(path, body, extra=""):
    return (f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def _responses_until_closed(url, data, timeout=10.0):
    """Send raw bytes on one connection, read until the server closes it; [(status, body)]."""
    address = urlsplit(url)
    received = b""
    with socket.create_connection((address.hostname, address.port), timeout=timeout) as sock:
        sock.sendall(data)
        while chunk := sock.recv(65536):
            received += chunk
    responses = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = int(next(v for k, _, v in (h.partition(": ") for h in lines[1:]) if k.lower() == "content-length"))
        responses.append((int(lines[0].split()[1]), rest[:length]))
        received = rest[length:]
    return responses


def test_pipelined_requests_then_connection_close_on_one_socket(primary, registered):
    """The server writes each response in one write (serving.write_coalescing): pipelined
    answers come back whole and in order, and `Connection: close` closes only after its answer."""
    first, second = ({"instances": [row]} for row in ROWS[:2])
    data = (_http_request(V1, json.dumps(first).encode())
            + _http_request(V1, b'{"instances": []}')
            + _http_request(V1, json.dumps(second).encode(), "Connection: close\r\n"))
    responses = _responses_until_closed(primary.url, data)
    assert [status for status, _ in responses] == [200, 400, 200]
    assert json.loads(responses[0][1]) == {"predictions": expected(registered, "champion", ROWS[:1])}
    assert "instances" in json.loads(responses[1][1])["error"]
    assert json.loads(responses[2][1]) == {"predictions": expected(registered, "champion", ROWS[1:2])}


def test_sequence_graph_returns_primary_answer_and_both_log(primary, shadow, registered, router_factory):
    router = router_factory(graph_config(primary, shadow))
    rid = f"seq-{uuid.uuid4()}"
    r = httpx.post(router.url + "/any/path", json={"instances": ROWS}, headers={"x-request-id": rid})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == expected(registered, "champion", ROWS)
    assert expected(registered, "champion", ROWS) != expected(registered, "challenger", ROWS)
    p, s = prediction_log(primary, rid), prediction_log(shadow, rid)
    assert (p["model_version"], s["model_version"]) == (registered["champion"][0], registered["challenger"][0])
    assert s["outputs"] == expected(registered, "challenger", ROWS)
    # a client error is the primary's (Hard) answer, passed through
    bad = httpx.post(router.url, json={"instances": []})
    assert bad.status_code == 400
    assert "instances" in bad.json()["error"]


def test_mirror_mode_returns_primary_answer_and_copies_to_shadow(primary, shadow, registered, router_factory):
    router = router_factory(graph_config(primary, shadow, mode="mirror"))
    rid = f"mirror-{uuid.uuid4()}"
    r = httpx.post(router.url + V1, json={"instances": ROWS}, headers={"x-request-id": rid})
    assert r.status_code == 200
    assert r.json()["predictions"] == expected(registered, "champion", ROWS)
    assert prediction_log(shadow, rid)["outputs"] == expected(registered, "challenger", ROWS)


def test_shadow_killed(primary, shadow, registered, router_factory):
    """Mirror mode: answers unaffected. Sequence mode (KServe): the dead Soft shadow is a
    transport error -> 500 {"error": "Failed to process request", "cause": ...}."""
    mirror = router_factory(graph_config(primary, shadow, mode="mirror"))
    sequence = router_factory(graph_config(primary, shadow))
    shadow.proc.kill()
    shadow.proc.wait(10)
    for _ in range(5):
        r = httpx.post(mirror.url + V1, json={"instances": ROWS})
        assert r.status_code == 200
        assert r.json()["predictions"] == expected(registered, "champion", ROWS)
    r = httpx.post(sequence.url + V1, json={"instances": ROWS})
    assert r.status_code == 500
    body = r.json()
    assert body["error"] == "Failed to process request"
    assert shadow.url in body["cause"]  # the dead step is named
    assert httpx.get(primary.url + "/v2/models/wachttijden/ready").status_code == 200


# ----------------------------------------------------------------------- fuzz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FEATURES = ("TYPE_WACHTTIJD", "SPECIALISME", "ROAZ_REGIO", "TYPE_ZORGINSTELLING")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
field_values = st.one_of(st.sampled_from(list(ROW.values())), st.text(max_size=30), json_values)
instances = st.dictionaries(
    st.sampled_from([*FEATURES, "EXTRA", ""]) | st.text(max_size=5), field_values, max_size=6
)
v1_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"instances": st.lists(instances, max_size=4)}),
    st.fixed_dictionaries({"instances": st.lists(st.fixed_dictionaries({f: field_values for f in FEATURES}), min_size=1, max_size=3)}),
)
v2_inputs = st.fixed_dictionaries({
    "name": st.sampled_from([*FEATURES, "X"]),
    "datatype": st.sampled_from(["BYTES", "FP64", "INT32", "BOOL", "FP16", "nonsense"]),
    "shape": st.lists(st.integers(-2, 4), max_size=3),
    "data": st.lists(field_values, max_size=4) | json_values,
}, optional={"parameters": st.dictionaries(st.text(max_size=8), st.text(max_size=8) | st.integers(), max_size=2)})
v2_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"inputs": st.lists(v2_inputs, max_size=5)},
                          optional={"parameters": st.fixed_dictionaries({"content_type": st.sampled_from(["pd", "np", "str"])}),
                                    "id": st.text(max_size=5), "outputs": st.lists(st.fixed_dictionaries({"name": st.text(max_size=8)}), max_size=2)}),
)
raw_bytes = st.binary(max_size=200)


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_only_2xx_or_4xx_and_still_ready(primary, data):
    path = data.draw(st.sampled_from([V1, V2]))
    kind = data.draw(st.sampled_from(["json", "raw"]))
    if kind == "json":
        body = data.draw(v1_bodies if path == V1 else v2_bodies)
        content = json.dumps(body).encode()
    else:
        content = data.draw(raw_bytes)
    ctype = data.draw(st.sampled_from(["application/json", "text/plain", "application/octet-stream"]))
    r = httpx.post(primary.url + path, content=content, headers={"content-type": ctype}, timeout=10)
    assert 200 <= r.status_code < 500, (r.status_code, r.text, content[:300])
    if r.status_code >= 400:
        assert "error" in r.json() or "detail" in r.json()
        assert "Traceback" not in r.text


def test_still_ready_after_fuzz(primary, registered):
    assert httpx.get(primary.url + "/v2/models/wachttijden/ready").status_code == 200
    r = httpx.post(primary.url + V1, json={"instances": ROWS})
    assert r.json()["predictions"] == expected(registered, "champion", ROWS)
