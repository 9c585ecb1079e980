"""Serving constants shared by the predictor, the manifest builders and the local router.

Light on purpose: no kserve/mlflow imports (DAG files import the manifest builders at
parse time).
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow_project.wachttijden.schema import FEATURES, MODEL_NAME

SERVED_MODEL_NAME = MODEL_NAME
"""Default name under which the predictor serves the model (`/v1/models/<name>:predict`)."""

FEATURE_COLUMNS: tuple[str, ...] = FEATURES
OUTPUT_NAME = "predictions"
"""Name of the single FP64 output tensor of the V2 (Open Inference Protocol) response."""

# Kubernetes / KServe
CONTAINER_NAME = "kserve-container"
"""KServe requires this name for the predictor's custom container."""
CONTAINER_PORT = 8080
PREDICTOR_COMMAND: tuple[str, ...] = ("mlops", "serve")
"""The predictor image's entry point, and the InferenceService's command."""
DEFAULT_PREDICTOR_IMAGE = "airflow-project/predictor"
DEFAULT_PREDICTOR_TAG = "latest"
DEFAULT_NAMESPACE = "serving"  # the chart's serving namespace (MLOPS_SERVING_NAMESPACE)
DEFAULT_TRACKING_URI = "http://mlflow.mlflow.svc.cluster.local:80"
NAME_PATTERN = "^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
"""A DNS-1035 label: what KServe and Istio accept as object names."""

INFERENCE_SERVICE = "InferenceService"
INFERENCE_GRAPH = "InferenceGraph"
VIRTUAL_SERVICE = "VirtualService"


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


RESOURCES: dict[str, ResourceType] = {
    INFERENCE_SERVICE: ResourceType("serving.kserve.io", "v1beta1", "inferenceservices"),
    INFERENCE_GRAPH: ResourceType("serving.kserve.io", "v1alpha1", "inferencegraphs"),
    VIRTUAL_SERVICE: ResourceType("networking.istio.io", "v1", "virtualservices"),
}

# The names the deploy DAGs (and `mlops up`) deploy by default.
MODEL_SERVICE = "wachttijden"
PRIMARY_SERVICE = "wachttijden-primary"
SHADOW_SERVICE = "wachttijden-shadow"
GRAPH_NAME = "wachttijden-graph"
GRAPH_ROOT_NODE = "root"
"""KServe's router always starts at the node named `root`."""
PREDICTOR_SERVICE_SUFFIX = "-predictor"
"""In Standard (raw) deployment mode the predictor's Service is `<isvc>-predictor`."""


def mirror_name(primary: str) -> str:
    """The Istio mirror VirtualService of a primary InferenceService (locally: its mirror router)."""
    return f"{primary}-mirror"


def graph_route_name(graph: str) -> str:
    """The Istio VirtualService that serves an InferenceGraph's external host on the gateway."""
    return f"{graph}-ingress"


GRAPH_SERVICE_PORT = 80
"""The port of the Service KServe gives an InferenceGraph's router in Standard mode (its
service reconciler's CommonDefaultHttpPort; the router listens on 8080 behind it)."""


# Capture: what the InferenceService's logger (KServe's agent) writes, and the local capture
# process too (monitoring.capture reads it; the sources it follows are cited there).
CAPTURE_CONTAINER = "serving-logs"
"""The data-lake container of captured requests and responses (datalake.SERVING_LOGS_CONTAINER)."""
CAPTURE_URL = f"abfs://{CAPTURE_CONTAINER}"
"""The logger's `url`: KServe's agent takes `abfs://` for Azure Blob and the URL's host (or
user part) for the container (pkg/logger/store.go, `parseBlobStoreURL`)."""
CAPTURE_PATH = "capture"
"""The logger's `storage.path`, the last folder before an object's name. Without one the
agent configures no blob store at all (cmd/agent/main.go, `startLogger`)."""
CAPTURE_COMPONENT = "predictor"
CAPTURE_REQUEST_ID_HEADER = "X-Request-Id"
"""REQUEST_ID_HEADER in Go's canonical form: the agent matches `metadataHeaders` against canonical header
names byte for byte (pkg/logger/handler.go, `slices.Contains`)."""
MODEL_VERSION_ANNOTATION = "mlops.wachttijden/model-version"
"""InferenceService annotation with the served registry version, passed into every captured
record through `logger.metadataAnnotations`."""

# Process-level defaults (local and container)
DEFAULT_HTTP_PORT = 8080
MAX_BODY_BYTES = 4 * 1024 * 1024
"""Requests larger than this are answered 413 before they are parsed."""
MAX_INSTANCES = 10_000
"""Rows per request; more is a 400 (split the batch)."""
DEFAULT_HOST = "127.0.0.1"
"""Where the predictor and the router listen unless told (`--host`); the predictor image and
the InferenceService pass `0.0.0.0` (PUBLIC_HOST)."""
PUBLIC_HOST = "0.0.0.0"

# Bounded reads (`serving.bounded_http`), predictor and router alike.
MAX_REQUEST_LINE_BYTES = 8 * 1024
"""The request target (path and query); longer is a 414 (nginx's default buffer is 8 KiB)."""
MAX_HEAD_BYTES = 64 * 1024
"""Request line plus headers; more is a 431."""
HEAD_TIMEOUT_S = 10.0
"""A request head (a fresh connection's first one: from connecting) must arrive within this."""
BODY_TIMEOUT_S = 30.0
"""A request body must arrive within this after its head (4 MiB at ~1 Mbit/s)."""
MAX_CONNECTIONS = 512
"""Connections one server holds at once; more are answered 503 (below a 1024 file limit)."""

# Response headers of every prediction answer (predictor and routers).
REQUEST_ID_HEADER = "x-request-id"
MODEL_VERSION_HEADER = "x-model-version"
"""The registered model version that answered (V1 and V2; the routers pass on the answering step's)."""
PREDICTION_LOGGER = "airflow_project.serving.predictions"
"""Logger of the one-JSON-line-per-prediction log (stdout), used for shadow comparison."""

# Router
ROUTER_READINESS_PATH = "/readyz"
ROUTER_DEFAULT_PROPAGATE_HEADERS: tuple[str, ...] = (
    r"(?i)^x-request-id$",
    r"(?i)^authorization$",
    r"(?i)^traceparent$",
    r"(?i)^x-b3-.*$",
)
ROUTER_DEFAULT_SERVICE_TIMEOUT_S = 60.0


def predict_path(model_name: str, protocol: str = "v1") -> str:
    """The path KServe's graph controller appends to an InferenceService URL."""
    if protocol == "v1":
        return f"/v1/models/{model_name}:predict"
    if protocol == "v2":
        return f"/v2/models/{model_name}/infer"
    raise ValueError(f"protocol must be 'v1' or 'v2', got {protocol!r}")
