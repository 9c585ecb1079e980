"""Predictor unit tests: exact hot path, both protocols, every bad-input class."""

from __future__ import annotations

import itertools
import json
import logging

import numpy as np
import pandas as pd
import pytest

from airflow_project.serving.constants import PREDICTION_LOGGER
from airflow_project.serving.predictor import TablePredictor, WachttijdenModel
from airflow_project.wachttijden.categories import (
    ROAZ_REGIOS,
    SPECIALISMEN,
    TYPES_WACHTTIJD,
    TYPES_ZORGINSTELLING,
)
from airflow_project.wachttijden.schema import FEATURES
from airflow_project.wachttijden.training import TrainingConfig, train

V1 = "/v1/models/wachttijden:predict"
V2 = "/v2/models/wachttijden/infer"
ROW = {
    "TYPE_WACHTTIJD": "Diagnostiek",
    "SPECIALISME": "Cardiologie (320)",
    "ROAZ_REGIO": "SpoedZorgNet",
    "TYPE_ZORGINSTELLING": "Kliniek",
}
CATEGORIES = {
    "TYPE_WACHTTIJD": [*TYPES_WACHTTIJD, "Onbekend type"],
    "SPECIALISME": [*SPECIALISMEN, "Nieuw specialisme (999)"],
    "ROAZ_REGIO": [*ROAZ_REGIOS, "Regio Mars"],
    "TYPE_ZORGINSTELLING": [*TYPES_ZORGINSTELLING, ""],
}


def all_combinations() -> pd.DataFrame:
    """Every real category combination plus an unknown value per feature."""
    return pd.DataFrame(list(itertools.product(*[CATEGORIES[f] for f in FEATURES])), columns=list(FEATURES))


def v2_body(rows: list[dict], pd_content_type: bool = True, shape_2d: bool = False) -> dict:
    n = len(rows)
    body = {
        "id": "req-1",
        "inputs": [
            {
                "name": f,
                "datatype": "BYTES",
                "shape": [n, 1] if shape_2d else [n],
                "data": [[r[f]] for r in rows] if shape_2d else [r[f] for r in rows],
            }
            for f in FEATURES
        ],
    }
    if pd_content_type:
        body["parameters"] = {"content_type": "pd"}
    return body


# ----------------------------------------------------------------------- hot path
@pytest.mark.parametrize("estimator", ["decision_tree", "linear", "random_forest"])
def test_table_is_identical_to_pipeline_on_every_combination(frame, estimator):
    pipeline = train(frame, TrainingConfig(estimator=estimator)).pipeline
    predictor = TablePredictor(pipeline)  # sets n_jobs=1: forests are only reproducible so
    assert predictor.mode == "table"
    combos = all_combinations()
    expected = pipeline.predict(combos)
    rows = list(combos.itertuples(index=False, name=None))
    assert predictor.predict(rows) == expected.tolist()  # bit-identical, not approx
    # and row by row, like single-row requests
    for i in range(0, len(rows), 97):
        assert predictor.predict([rows[i]]) == [float(pipeline.predict(combos.iloc[[i]])[0])]


def test_memo_fallback_for_other_pipelines(frame):
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder
    from sklearn.tree import DecisionTreeRegressor

    odd = Pipeline([
        ("features", ColumnTransformer([("ord", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), list(FEATURES))])),
        ("regressor", DecisionTreeRegressor(max_depth=6, random_state=0)),
    ]).fit(frame[list(FEATURES)], frame["WACHTTIJD"])
    predictor = TablePredictor(odd)
    assert predictor.mode == "memo"
    combos = all_combinations().head(400)
    rows = list(combos.itertuples(index=False, name=None))
    assert predictor.predict(rows) == odd.predict(combos).tolist()
    assert predictor.predict(rows[:3]) == odd.predict(combos.head(3)).tolist()  # from the memo


def test_hot_path_is_fast(model):
    import time

    rows = [tuple(ROW[f] for f in FEATURES)]
    start = time.perf_counter()
    for _ in range(2000):
        model.predictor.predict(rows)
    per_call = (time.perf_counter() - start) / 2000
    assert per_call < 100e-6, f"{per_call * 1e6:.1f} µs per single-row prediction"


# ----------------------------------------------------------------------- protocols
def test_v1_predicts_like_the_pipeline(client, pipeline):
    rows = [ROW, dict(ROW, SPECIALISME="Orthopedie (305)"), dict(ROW, ROAZ_REGIO="Onbekende regio")]
    r = client.post(V1, json={"instances": rows})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": pipeline.predict(pd.DataFrame(rows)).tolist()}


def test_v1_unknown_categories_are_predicted_not_rejected(client, pipeline):
    row = {f: "never seen" for f in FEATURES}
    r = client.post(V1, json={"instances": [row]})
    assert r.status_code == 200
    assert r.json()["predictions"] == pipeline.predict(pd.DataFrame([row])).tolist()


@pytest.mark.parametrize("pd_content_type", [True, False])
@pytest.mark.parametrize("shape_2d", [False, True])
def test_v2_open_inference_protocol(client, pipeline, pd_content_type, shape_2d):
    rows = [ROW, dict(ROW, TYPE_WACHTTIJD="Behandeling")]
    r = client.post(V2, json=v2_body(rows, pd_content_type, shape_2d))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "wachttijden"
    assert body["model_version"] == "7"
    assert body["id"] == "req-1"
    [output] = body["outputs"]
    assert output["name"] == "predictions"
    assert output["datatype"] == "FP64"
    assert output["shape"] == [2]
    assert output["data"] == pipeline.predict(pd.DataFrame(rows)).tolist()


def test_v1_and_v2_agree(client):
    rows = [dict(zip(FEATURES, c)) for c in itertools.islice(itertools.product(*[CATEGORIES[f] for f in FEATURES]), 0, 3000, 37)]
    v1 = client.post(V1, json={"instances": rows}).json()["predictions"]
    v2 = client.post(V2, json=v2_body(rows)).json()["outputs"][0]["data"]
    assert v1 == v2


def test_health_metadata_and_metrics(client):
    assert client.get("/v2/models/wachttijden/ready").json() == {"name": "wachttijden", "ready": True}
    assert client.get("/v1/models/wachttijden").json() == {"name": "wachttijden", "ready": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/health/live").json() == {"live": True}
    meta = client.get("/v2/models/wachttijden").json()
    assert [i["name"] for i in meta["inputs"]] == list(FEATURES)
    assert meta["outputs"] == [{"name": "predictions", "datatype": "FP64", "shape": [-1]}]
    client.post(V1, json={"instances": [ROW]})
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert 'request_predict_seconds_count{model_name="wachttijden"}' in metrics.text


def test_one_json_log_line_per_prediction(client):
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Capture()
    logging.getLogger(PREDICTION_LOGGER).addHandler(handler)
    try:
        r = client.post(V1, json={"instances": [ROW, ROW]}, headers={"x-request-id": "abc-123"})
        client.post(V2, json=v2_body([ROW]))
    finally:
        logging.getLogger(PREDICTION_LOGGER).removeHandler(handler)
    assert len(records) == 2
    line = json.loads(records[0])
    assert line["request_id"] == "abc-123"
    assert line["model_name"] == "wachttijden"
    assert line["model_version"] == "7"
    assert line["inputs"] == [ROW, ROW]
    assert line["outputs"] == r.json()["predictions"]
    assert json.loads(records[1])["protocol"] == "v2"


# ----------------------------------------------------------------------- bad input
def _v2(**change):
    body = v2_body([ROW])
    for key, value in change.items():
        if key == "inputs":
            body["inputs"] = value(body["inputs"])
        elif value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def _input(name, **change):
    def edit(inputs):
        out = []
        for i in inputs:
            if i["name"] == name:
                i = {**i, **change}
            out.append(i)
        return out
    return edit


BAD_V1 = [
    ("missing field", {"instances": [{k: v for k, v in ROW.items() if k != "SPECIALISME"}]}, "instances[0]: missing field(s) ['SPECIALISME']"),
    ("extra field", {"instances": [dict(ROW, LEEFTIJD="40")]}, "instances[0]: unexpected field(s) ['LEEFTIJD']"),
    ("non-string value", {"instances": [ROW, dict(ROW, ROAZ_REGIO=3)]}, "instances[1].ROAZ_REGIO: expected a string, got number"),
    ("null value", {"instances": [dict(ROW, TYPE_WACHTTIJD=None)]}, "instances[0].TYPE_WACHTTIJD: expected a string, got null"),
    ("empty list", {"instances": []}, "instances: must contain at least one instance"),
    ("instances not a list", {"instances": {"a": 1}}, "instances: expected an array, got object"),
    ("instance not an object", {"instances": [["a", "b", "c", "d"]]}, "instances[0]: expected an object"),
    ("no instances", {"inputs": [ROW]}, "unexpected field(s) ['inputs']"),
    ("body not an object", [ROW], "body: expected a JSON object"),
    ("body a string", "hello", "body: expected a JSON object"),
    ("extra top-level field", {"instances": [ROW], "foo": 1}, "body: unexpected field(s) ['foo']"),
]


@pytest.mark.parametrize("case,body,message", BAD_V1, ids=[c[0] for c in BAD_V1])
def test_v1_bad_input_is_400_naming_the_problem(client, case, body, message):
    r = client.post(V1, json=body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


BAD_V2 = [
    ("missing input", _v2(inputs=lambda i: i[:3]), 400, "inputs: missing input(s) ['TYPE_ZORGINSTELLING']"),
    ("extra input", _v2(inputs=lambda i: [*i, {**i[0], "name": "LEEFTIJD"}]), 400, "inputs: unexpected input(s) ['LEEFTIJD']"),
    ("duplicate input", _v2(inputs=lambda i: [*i, i[0]]), 400, "duplicate input name(s) ['TYPE_WACHTTIJD']"),
    ("wrong datatype", _v2(inputs=_input("SPECIALISME", datatype="FP32", data=[1.0])), 400, "inputs[SPECIALISME].datatype: expected BYTES, got 'FP32'"),
    ("non-string value", _v2(inputs=_input("ROAZ_REGIO", data=[5])), 400, "inputs[ROAZ_REGIO].data[0]: expected a string, got number"),
    ("shape/data mismatch", _v2(inputs=_input("ROAZ_REGIO", shape=[2])), 400, "inputs[ROAZ_REGIO]: shape [2] does not match data length 1"),
    ("bad shape", _v2(inputs=_input("ROAZ_REGIO", shape=[1, 2])), 400, "inputs[ROAZ_REGIO].shape: expected [n] or [n, 1], got [1, 2]"),
    ("row count mismatch", _v2(inputs=_input("ROAZ_REGIO", shape=[2], data=["a", "b"])), 400, "inputs[ROAZ_REGIO]: 2 rows, but inputs[TYPE_WACHTTIJD] has 1"),
    ("empty inputs", _v2(inputs=lambda i: []), 400, "inputs: must contain one BYTES input per feature"),
    ("zero rows", _v2(inputs=lambda i: [{**x, "shape": [0], "data": []} for x in i]), 400, "inputs: must contain at least one instance"),
    ("bad content type", _v2(parameters={"content_type": "np"}), 400, "parameters.content_type: expected 'pd' or absent, got 'np'"),
    ("unknown output", _v2(outputs=[{"name": "proba"}]), 400, "outputs: unknown output(s) ['proba']"),
    ("schema: missing datatype", _v2(inputs=lambda i: [{k: v for k, v in x.items() if k != "datatype"} for x in i]), 400, "inputs.0.datatype: Field required"),
    ("schema: inputs not a list", {"inputs": 3}, 400, "inputs: Input should be a valid list"),
    ("schema: body not an object", [1, 2], 400, "Input should be a valid dictionary"),
]


@pytest.mark.parametrize("case,body,status,message", BAD_V2, ids=[c[0] for c in BAD_V2])
def test_v2_bad_input_is_4xx_naming_the_problem(client, case, body, status, message):
    r = client.post(V2, json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"], r.json()


@pytest.mark.parametrize("path", [V1, V2])
@pytest.mark.parametrize("body", [b"{bad", b"", b"\xff\xfe", b'{"instances": [', b"[" * 5000 + b"]" * 5000, b'{"a": NaN}'])
def test_malformed_json_is_4xx(client, path, body):
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    assert "error" in r.json()
    assert "Traceback" not in r.text


@pytest.mark.parametrize("path", [V1, V2])
def test_oversized_body_is_413(client, max_body, path):
    big = {"instances": [ROW] * (max_body // 100)}
    r = client.post(path, json=big)
    assert r.status_code == 413, r.text
    assert "exceeds the limit" in r.json()["error"]

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(max_body // 1000 + 2):
            yield b" " * 1000

    r = client.post(path, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text


def test_binary_v2_garbage_is_400(client):
    r = client.post(V2, content=b"{}xxxx", headers={"content-type": "application/octet-stream", "inference-header-content-length": "2"})
    assert r.status_code == 400, r.text
    assert "malformed binary inference request" in r.json()["error"]
    r = client.post(V2, content=b"xxxx", headers={"content-type": "application/octet-stream", "inference-header-content-length": "4"})
    assert r.status_code == 400, r.text


def test_non_json_content_type_is_parsed_or_rejected(client):
    r = client.post(V1, content=json.dumps({"instances": [ROW]}).encode(), headers={"content-type": "text/plain"})
    assert r.status_code == 200, r.text
    r = client.post(V1, content=b"not json", headers={"content-type": "text/plain"})
    assert r.status_code == 400
    assert r.json()["error"].startswith("body: malformed JSON")


def test_unknown_model_is_404(client):
    assert client.post("/v1/models/other:predict", json={"instances": [ROW]}).status_code == 404


def test_server_still_ready_after_bad_input(client):
    for body in [b"{", b"[]", b"null"]:
        client.post(V1, content=body, headers={"content-type": "application/json"})
        client.post(V2, content=body, headers={"content-type": "application/json"})
    assert client.get("/v2/models/wachttijden/ready").status_code == 200
    assert client.post(V1, json={"instances": [ROW]}).status_code == 200


def test_model_requires_uri_or_pipeline():
    with pytest.raises(ValueError):
        WachttijdenModel("x").load()


def test_resolve_model_uri_rejects_other_schemes():
    from airflow_project.serving.predictor import resolve_model_uri

    with pytest.raises(ValueError, match="models:/"):
        resolve_model_uri("runs:/abc/model", client=None)
    with pytest.raises(ValueError):
        resolve_model_uri("models:/wachttijden", client=None)


def test_table_size_matches_feature_space(model):
    sizes = [len(CATEGORIES[f]) for f in FEATURES]  # categories + 1 unknown each
    assert len(model.predictor._table_list) == int(np.prod(sizes))

