"""The usual Open Inference Protocol client against a real predictor process: tritonclient's
HTTP client in JSON mode (it sends no Content-Type) and in binary mode (binary tensors and
the `inference-header-content-length` header): server and model metadata, readiness, infer."""

from __future__ import annotations

from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pytest

from airflow_project.wachttijden.schema import FEATURES

pytestmark = pytest.mark.integration

ROWS = [{"TYPE_WACHTTIJD": "Behandeling", "SPECIALISME": "Orthopedie (305)",
         "ROAZ_REGIO": "Acute Zorg Oost", "TYPE_ZORGINSTELLING": "Ziekenhuis"},
        {"TYPE_WACHTTIJD": "Diagnostiek", "SPECIALISME": "Cardiologie (320)",
         "ROAZ_REGIO": "Netwerk Acute Zorg West", "TYPE_ZORGINSTELLING": "Kliniek"}]


@pytest.fixture(scope="module")
def client(primary):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=urlsplit(primary.url).netloc)
    yield client
    client.close()


def test_server_and_model_metadata_and_readiness(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("wachttijden")
    assert not client.is_model_ready("other")
    assert client.get_server_metadata()["name"]
    metadata = client.get_model_metadata("wachttijden")
    assert metadata["name"] == "wachttijden" and {"inputs", "outputs"} <= set(metadata), metadata


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("request_outputs", [False, True], ids=["all-outputs", "outputs-named"])
def test_infer(client, registered, binary: bool, request_outputs: bool):
    import tritonclient.http as httpclient

    inputs = []
    for feature in FEATURES:
        tensor = httpclient.InferInput(feature, [len(ROWS)], "BYTES")
        tensor.set_data_from_numpy(np.array([row[feature].encode() for row in ROWS], dtype=object),
                                   binary_data=binary)
        inputs.append(tensor)
    outputs = [httpclient.InferRequestedOutput("predictions", binary_data=binary)] if request_outputs else None
    result = client.infer("wachttijden", inputs, outputs=outputs)
    want = registered["champion"][1].predict(pd.DataFrame(ROWS))
    assert result.as_numpy("predictions").tolist() == pytest.approx(want.tolist())
    assert result.get_response()["model_name"] == "wachttijden"
