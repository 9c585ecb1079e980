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

    outputs = [httpclient.InferRequestedOutput("predictions", binary_data=binary)] if request_outputs else None
    result = client.infer("wachttijden", _inputs(httpclient, binary), outputs=outputs)
    want = registered["champion"][1].predict(pd.DataFrame(ROWS))
    assert result.as_numpy("predictions").tolist() == pytest.approx(want.tolist())
    assert result.get_response()["model_name"] == "wachttijden"


def _inputs(httpclient, binary: bool = False):
    inputs = []
    for feature in FEATURES:
        tensor = httpclient.InferInput(feature, [len(ROWS)], "BYTES")
        tensor.set_data_from_numpy(np.array([row[feature].encode() for row in ROWS], dtype=object),
                                   binary_data=binary)
        inputs.append(tensor)
    return inputs


def test_the_served_version_is_ready_and_answers_and_no_other(client, registered):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    version = registered["champion"][0]
    assert client.is_model_ready("wachttijden", model_version=version)
    assert client.get_model_metadata("wachttijden", model_version=version)["versions"] == [version]
    result = client.infer("wachttijden", _inputs(httpclient), model_version=version)
    assert result.get_response()["model_version"] == version
    want = registered["champion"][1].predict(pd.DataFrame(ROWS))
    assert result.as_numpy("predictions").tolist() == pytest.approx(want.tolist())
    assert not client.is_model_ready("wachttijden", model_version="999")
    with pytest.raises(InferenceServerException, match="version '999' is not served here"):
        client.infer("wachttijden", _inputs(httpclient), model_version="999")


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_request_compression_works(client, registered, algorithm, binary):
    import tritonclient.http as httpclient

    result = client.infer("wachttijden", _inputs(httpclient, binary), request_compression_algorithm=algorithm)
    want = registered["champion"][1].predict(pd.DataFrame(ROWS))
    assert result.as_numpy("predictions").tolist() == pytest.approx(want.tolist())
