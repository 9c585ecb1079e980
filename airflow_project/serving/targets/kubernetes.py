"""The Kubernetes deploy target: server-side apply of KServe/Istio objects into one
namespace, through the Airflow connection `kubernetes_serving` when there is one."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from airflow_project.serving import targets
from airflow_project.serving.constants import (
    INFERENCE_SERVICE,
    PREDICTOR_SERVICE_SUFFIX,
    VIRTUAL_SERVICE,
)

log = logging.getLogger(__name__)

FIELD_MANAGER = "airflow-mlops"
APPLY_PATCH_CONTENT_TYPE = "application/apply-patch+yaml"
DEFAULT_CONN_ID = "kubernetes_serving"
CONN_ID_ENV = "MLOPS_KUBERNETES_CONN_ID"


def describe_conditions(conditions: list[Mapping[str, Any]] | None) -> str:
    """`Ready=False (Reason: message); PredictorReady=True` - for error messages."""
    if not conditions:
        return "no conditions reported"
    parts = []
    for c in conditions:
        text = f"{c.get('type')}={c.get('status')}"
        detail = ": ".join(str(x) for x in (c.get("reason"), c.get("message")) if x)
        parts.append(f"{text} ({detail})" if detail else text)
    return "; ".join(parts)


def ready_condition(obj: Mapping[str, Any]) -> bool:
    """Ready=True for the object's current generation."""
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and int(observed) < int(generation):
        return False
    return any(
        c.get("type") == "Ready" and str(c.get("status")) == "True"
        for c in status.get("conditions") or []
    )


def kubernetes_api(conn_id: str | None = None) -> Any:
    """A `CustomObjectsApi`: Airflow connection via the provider hook, else in-cluster/kubeconfig."""
    from kubernetes import client, config

    conn_id = conn_id or os.environ.get(CONN_ID_ENV, DEFAULT_CONN_ID)
    try:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
    except ImportError:
        KubernetesHook = None
    if KubernetesHook is not None:
        hook = KubernetesHook(conn_id=conn_id)
        try:
            hook.get_connection(conn_id)  # raises when the connection is not defined
        except Exception as exc:  # noqa: BLE001 - not found, or no Airflow context: fall back
            log.info("no Airflow connection %r (%s): using in-cluster config or kubeconfig", conn_id, exc)
        else:
            return client.CustomObjectsApi(hook.api_client)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


class KubernetesTarget:
    """Server-side apply of KServe/Istio objects into one namespace."""

    name = "kubernetes"

    def __init__(
        self,
        namespace: str,
        api: Any | None = None,
        *,
        conn_id: str | None = None,
        field_manager: str = FIELD_MANAGER,
        poll_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.namespace = namespace
        self._api = api
        self.conn_id = conn_id
        self.field_manager = field_manager
        self.poll_interval = poll_interval
        self._clock = clock
        self._sleep = sleep

    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = kubernetes_api(self.conn_id)
        return self._api

    def _path(self, kind: str) -> dict[str, str]:
        rtype = targets.resource_type(kind)
        return {"group": rtype.group, "version": rtype.version, "namespace": self.namespace,
                "plural": rtype.plural}

    def apply(self, manifest: Mapping[str, Any]) -> None:
        kind, name = targets.manifest_identity(manifest, self.namespace)
        body = json.loads(json.dumps(manifest))
        body.setdefault("metadata", {})["namespace"] = self.namespace
        try:
            self.api.patch_namespaced_custom_object(
                **self._path(kind), name=name, body=body,
                field_manager=self.field_manager, force=True,
                _content_type=APPLY_PATCH_CONTENT_TYPE,
            )
        except Exception as exc:
            status = getattr(exc, "status", None)
            if status is None:
                raise
            raise targets.DeployError(
                f"server-side apply of {kind} {self.namespace}/{name} failed with HTTP {status}: "
                f"{getattr(exc, 'reason', '')} {getattr(exc, 'body', '') or ''}".strip()
            ) from exc
        log.info("applied %s %s/%s (field manager %s)", kind, self.namespace, name, self.field_manager)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return self.api.get_namespaced_custom_object(**self._path(kind), name=name)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise

    @staticmethod
    def _object_url(obj: Mapping[str, Any]) -> str | None:
        """The in-cluster address (`status.address.url`). `status.url` may be an ingress host
        the Airflow worker cannot reach, so it is not used (see `_fallback_url`)."""
        status = obj.get("status") or {}
        return (status.get("address") or {}).get("url")

    def _fallback_url(self, kind: str, name: str) -> str:
        """Service hosts KServe creates in Standard (raw) mode: `<isvc>-predictor`, `<graph>`."""
        if kind == INFERENCE_SERVICE:
            return f"http://{name}{PREDICTOR_SERVICE_SUFFIX}.{self.namespace}.svc.cluster.local"
        return f"http://{name}.{self.namespace}.svc.cluster.local"

    def url(self, kind: str, name: str) -> str | None:
        obj = self.get(kind, name)
        if obj is None:
            return None
        if kind == VIRTUAL_SERVICE:
            hosts = (obj.get("spec") or {}).get("hosts") or []
            return f"http://{hosts[0]}" if hosts else None
        return self._object_url(obj) or self._fallback_url(kind, name)

    def wait_ready(self, kind: str, name: str, timeout: float = targets.DEFAULT_TIMEOUT_S) -> str:
        targets.resource_type(kind)
        deadline = self._clock() + timeout
        obj: dict[str, Any] | None = None
        while True:
            obj = self.get(kind, name)
            if obj is not None:
                if kind == VIRTUAL_SERVICE:  # no Ready condition: Istio programs it on its own
                    return self.url(kind, name) or ""
                if ready_condition(obj):
                    url = self._object_url(obj) or self._fallback_url(kind, name)
                    log.info("%s %s/%s is Ready at %s", kind, self.namespace, name, url)
                    return url
            if self._clock() >= deadline:
                break
            self._sleep(self.poll_interval)
        if obj is None:
            raise targets.DeployTimeout(f"{kind} {self.namespace}/{name} not found after {timeout:.0f}s")
        status = obj.get("status") or {}
        generation = (obj.get("metadata") or {}).get("generation")
        raise targets.DeployTimeout(
            f"{kind} {self.namespace}/{name} not Ready after {timeout:.0f}s "
            f"(generation {generation}, observed {status.get('observedGeneration')}); "
            f"conditions: {describe_conditions(status.get('conditions'))}"
        )

    def delete(self, kind: str, name: str) -> None:
        try:
            self.api.delete_namespaced_custom_object(**self._path(kind), name=name)
        except Exception as exc:
            if getattr(exc, "status", None) != 404:
                raise
