"""The capture layout and its one reader: KServe's blob-logger records (as v0.20's agent
writes them) and the predictor's own prediction-log lines give the same rows."""

from __future__ import annotations

import base64
import json

import pytest

from airflow_project.monitoring import capture
from airflow_project.wachttijden.categories import SAMPLE_ROW
from airflow_project.wachttijden.schema import FEATURES

T0 = 1_767_000_000.0


def line(request_id: str, version: str = "3", prediction: float = 12.5, ts: float = T0, rows: int = 1) -> dict:
    return {"event": "prediction", "ts": ts, "request_id": request_id, "model_name": "wachttijden",
            "registered_model": "wachttijden", "model_version": version, "protocol": "v1",
            "inputs": [dict(SAMPLE_ROW)] * rows, "outputs": [prediction] * rows, "latency_ms": 1.5}


def kserve_record(kind: str, record_id: str, body: dict, *, request_id: str | None = None,
                  version: str | None = "3", time: str = "2026-01-01T10:00:00.123456789Z") -> dict:
    """A LogRequest as Go's encoding/json writes it (pkg/logger/types.go): url and sourceUri as
    url.URL structs, bytes base64, metadata of the listed headers, annotations."""
    record = {
        "url": {"Scheme": "abfs", "Opaque": "", "User": None, "Host": "serving-logs", "Path": "", "RawPath": "",
                "OmitHost": False, "ForceQuery": False, "RawQuery": "", "Fragment": "", "RawFragment": ""},
        "bytes": base64.b64encode(json.dumps(body).encode()).decode(),
        "contentType": "application/json",
        "reqType": f"org.kubeflow.serving.inference.{kind}",
        "id": record_id,
        "sourceUri": {"Scheme": "", "Path": "wachttijden-primary-predictor-7d9f-abcde"},
        "inferenceService": "wachttijden-primary", "namespace": "serving", "component": "predictor",
        "metadata": {} if request_id is None else {"X-Request-Id": [request_id]},
        "occurrenceTime": time,
    }
    if version is not None:
        record["annotations"] = {capture.MODEL_VERSION_ANNOTATION: version}
    return record


def test_object_keys_follow_kserve_store_layout():
    request, response = capture.records_from_prediction(line("r1"), namespace="serving",
                                                        service="wachttijden-primary", record_id="abc")
    # pkg/logger/store.go: <prefix>/<namespace>/<isvc>/<component>/<storePath>/<id>-<type>.json
    assert capture.blob_name([request, response]) == "serving/wachttijden-primary/predictor/capture/abc-request.json"
    assert capture.blob_name([response]) == "serving/wachttijden-primary/predictor/capture/abc-response.json"
    assert request["id"] == response["id"] == "abc"
    assert request["reqType"] == capture.REQUEST_TYPE and response["reqType"] == capture.RESPONSE_TYPE


def test_batches_are_an_object_for_one_record_and_an_array_for_more():
    request, response = capture.records_from_prediction(line("r1"), namespace="serving", service="s")
    assert json.loads(capture.encode_batch([request]))["id"] == request["id"]
    assert [r["reqType"] for r in json.loads(capture.encode_batch([request, response]))] == [
        capture.REQUEST_TYPE, capture.RESPONSE_TYPE]
    with pytest.raises(ValueError):
        capture.encode_batch([])


def test_local_records_and_prediction_lines_read_as_the_same_rows(tmp_path):
    records = []
    for i in range(3):
        records += capture.records_from_prediction(line(f"r{i}", prediction=10.0 + i, ts=T0 + i, rows=2),
                                                   namespace="serving", service="wachttijden-primary")
    (tmp_path / "batch.json").write_bytes(capture.encode_batch(records))
    lines = tmp_path / "predictor.log"
    lines.write_text("--- starting: python -m airflow_project.serving\nINFO uvicorn running\n"
                     + "".join(json.dumps(line(f"r{i}", prediction=10.0 + i, ts=T0 + i, rows=2)) + "\n"
                               for i in range(3)))
    from_records = capture.read_path(tmp_path / "batch.json")
    from_lines = capture.read_path(lines)
    assert from_records.requests == from_lines.requests == 3
    cols = ["request_id", "version", *FEATURES, "prediction"]
    assert from_records.frame[cols].astype(str).values.tolist() == from_lines.frame[cols].astype(str).values.tolist()
    assert from_records.frame["latency_ms"].round(3).tolist() == [1.5] * 6
    assert (from_records.frame["time"] == from_lines.frame["time"]).all()
    assert set(from_records.frame["service"]) == {"wachttijden-primary"}


def test_kserve_records_v1_and_v2_pair_by_id_across_batches(tmp_path):
    v2_request = {"inputs": [{"name": f, "datatype": "BYTES", "shape": [1], "data": [SAMPLE_ROW[f]]} for f in FEATURES]}
    v2_answer = {"model_name": "wachttijden", "model_version": "7", "id": "x",
                 "outputs": [{"name": "predictions", "datatype": "FP64", "shape": [1], "data": [9.25]}]}
    first = [kserve_record("request", "a", {"instances": [dict(SAMPLE_ROW)]}, request_id="rid-a"),
             kserve_record("request", "b", v2_request, version=None,
                           time="2026-01-01T10:00:01+01:00")]
    second = [kserve_record("response", "a", {"predictions": [11.0]}, request_id="rid-a",
                            time="2026-01-01T10:00:00.125456789Z"),
              kserve_record("response", "b", v2_answer, version=None, time="2026-01-01T10:00:01.010+01:00"),
              kserve_record("request", "c", {"instances": [dict(SAMPLE_ROW)]})]  # never answered (4xx/5xx)
    (tmp_path / "serving/wachttijden-primary/predictor/capture").mkdir(parents=True)
    (tmp_path / "serving/wachttijden-primary/predictor/capture/a-request.json").write_text(json.dumps(first))
    (tmp_path / "serving/wachttijden-primary/predictor/capture/a-response.json").write_text(json.dumps(second))
    traffic = capture.read_path(tmp_path)
    assert (traffic.requests, traffic.failed, traffic.unreadable, traffic.sources) == (2, 1, 0, 2)
    rows = traffic.frame.set_index("request_id")
    assert rows.loc["rid-a", "prediction"] == 11.0 and rows.loc["rid-a", "version"] == "3"
    assert rows.loc["b", "version"] == "7"  # no X-Request-Id, no annotation: the agent's id, V2's version
    assert rows.loc["rid-a", "latency_ms"] == pytest.approx(2.0, abs=1e-3)  # float seconds since the epoch
    assert rows.loc["b", "latency_ms"] == pytest.approx(10.0)
    assert str(rows.loc["b", "time"]) == "2026-01-01 09:00:01.010000+00:00"


def test_undecodable_records_are_counted_not_fatal(tmp_path):
    bad = kserve_record("request", "a", {"instances": [{"TYPE_WACHTTIJD": 3}]})
    ok = kserve_record("response", "a", {"predictions": [1.0]})
    (tmp_path / "b.json").write_text(json.dumps([bad, ok, {**ok, "reqType": "something-else"}]))
    traffic = capture.read_path(tmp_path)
    assert (traffic.requests, traffic.unreadable, len(traffic.frame)) == (0, 2, 0)


def test_clear_errors_for_unreadable_input(tmp_path):
    with pytest.raises(capture.CaptureError, match="no such file or folder"):
        capture.read_path(tmp_path / "missing")
    (tmp_path / "other.json").write_text(json.dumps({"instances": []}))
    with pytest.raises(capture.CaptureError, match=r"other\.json: JSON that is neither a capture batch"):
        capture.read_path(tmp_path / "other.json")


def test_window_keeps_answers_inside_it():
    import datetime as dt

    reader = capture.CaptureReader()
    reader.feed("".join(json.dumps(line(f"r{i}", ts=T0 + 60 * i)) + "\n" for i in range(5)).encode(), "x")
    traffic = reader.traffic()
    start = dt.datetime.fromtimestamp(T0 + 60, dt.UTC)
    cut = traffic.window(start, start + dt.timedelta(minutes=2))
    assert cut.frame["request_id"].tolist() == ["r1", "r2"] and cut.requests == 2


def test_the_inference_service_logger_writes_what_the_reader_expects():
    from airflow_project.datalake import SERVING_LOGS_CONTAINER
    from airflow_project.serving import manifests

    config = manifests.ServingConfig(capture=manifests.Capture("serving-logs-credentials"))
    isvc = manifests.inference_service("wachttijden-primary", "models:/wachttijden/3", config)
    logger = isvc["spec"]["predictor"]["logger"]
    assert logger["url"] == f"abfs://{SERVING_LOGS_CONTAINER}" and capture.CAPTURE_CONTAINER == SERVING_LOGS_CONTAINER
    assert logger["storage"]["path"] == capture.CAPTURE_PATH and logger["mode"] == "all"
    assert logger["metadataHeaders"] == ["X-Request-Id"]  # Go's canonical header name
    assert logger["metadataAnnotations"] == [capture.MODEL_VERSION_ANNOTATION]
    annotations = isvc["metadata"]["annotations"]
    assert annotations[capture.MODEL_VERSION_ANNOTATION] == "3"
    assert annotations[manifests.STORAGE_SECRET_ANNOTATION] == "serving-logs-credentials"
    plain = manifests.inference_service("wachttijden", "models:/wachttijden@champion")
    assert "logger" not in plain["spec"]["predictor"]
    assert "annotations" not in plain["metadata"]  # no version number to name, no Secret


def test_kubernetes_capture_is_on_when_the_chart_names_the_secret(monkeypatch):
    from airflow_project.serving import targets

    monkeypatch.delenv(targets.CAPTURE_SECRET_ENV, raising=False)
    assert targets.serving_config_from_env().capture is None
    monkeypatch.setenv(targets.CAPTURE_SECRET_ENV, "serving-logs-credentials")
    assert targets.serving_config_from_env().capture.secret_name == "serving-logs-credentials"
