"""Waits between stages for what `helm upgrade --wait` does not wait for.

`--wait` waits for Deployments to be available, not for cert-manager's cainjector to write
the CA bundle into the webhook configurations it serves: until it has, the API server
cannot verify the webhook's certificate and the next stage's first Certificate (KServe's
serving-cert) fails with an x509 error. cert-manager's own check for this, the
`startupapicheck` Job, is a post-install hook (cert-manager v1.21.0 values.yaml,
`startupapicheck.jobAnnotations`): the release is installed by stage 1, so stage 2's
upgrade never runs it. The plan waits here instead, as that Job does: every webhook
configuration cert-manager injects has its `caBundle`, then a server-side dry run of a
Certificate passes cert-manager's webhook.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from .kube import kubectl

# Annotations by which cainjector finds the webhook configurations it fills (cert-manager
# v1.21 pkg/apis/certmanager/v1/types.go: WantInjectAnnotation (a Certificate),
# WantInjectFromSecretAnnotation (a Secret), WantInjectAPIServerCAAnnotation).
CA_INJECT_ANNOTATIONS = (
    "cert-manager.io/inject-ca-from",
    "cert-manager.io/inject-ca-from-secret",
    "cert-manager.io/inject-apiserver-ca",
)
WEBHOOK_KINDS = ("validatingwebhookconfigurations", "mutatingwebhookconfigurations")
PROBE_NAME = "mlops-release-readiness-probe"


def waiting_for_ca(configurations: list[dict]) -> list[str]:
    """`Kind/name webhook` of every webhook whose configuration cainjector fills but whose
    caBundle is still empty."""
    missing = []
    for obj in configurations:
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if not any(a in annotations for a in CA_INJECT_ANNOTATIONS):
            continue
        for hook in obj.get("webhooks") or []:
            if not (hook.get("clientConfig") or {}).get("caBundle"):
                missing.append(f"{obj.get('kind')}/{obj['metadata']['name']} {hook.get('name')}")
    return missing


def probe_certificate(namespace: str) -> str:
    """A Certificate only ever submitted as a server-side dry run (nothing is created)."""
    return json.dumps({
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {"name": PROBE_NAME, "namespace": namespace},
        "spec": {
            "secretName": PROBE_NAME,
            "dnsNames": [f"{PROBE_NAME}.{namespace}.svc"],
            "issuerRef": {"name": PROBE_NAME, "kind": "Issuer"},
        },
    })


def _configurations() -> list[dict]:
    proc = kubectl("get", ",".join(WEBHOOK_KINDS), "-o", "json", check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl get {','.join(WEBHOOK_KINDS)} failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout).get("items") or []


def _poll(check: Callable[[], str | None], timeout: float, clock: Callable[[], float],
          sleep: Callable[[float], None], interval: float) -> str | None:
    """Call `check` until it returns None (done) or `timeout` passes; the last problem."""
    deadline = clock() + timeout
    while True:
        problem = check()
        if problem is None or clock() >= deadline:
            return problem
        sleep(interval)


def webhooks_have_ca(timeout: float = 300, *, clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep, interval: float = 3.0) -> None:
    """Wait until cainjector has filled every webhook configuration it is asked to."""

    def check() -> str | None:
        missing = waiting_for_ca(_configurations())
        return f"caBundle still empty: {', '.join(missing)}" if missing else None

    problem = _poll(check, timeout, clock, sleep, interval)
    if problem:
        raise RuntimeError(f"{problem} after {timeout:.0f}s: cert-manager's cainjector has not "
                           "injected the CA (see its logs: kubectl logs -l app.kubernetes.io/component=cainjector)")


def cert_manager_ready(namespace: str, timeout: float = 300, *,
                       clock: Callable[[], float] = time.monotonic,
                       sleep: Callable[[float], None] = time.sleep, interval: float = 3.0) -> None:
    """cert-manager accepts Certificates: its webhooks have their CA, and a dry-run
    Certificate passes its validating webhook."""
    webhooks_have_ca(timeout, clock=clock, sleep=sleep, interval=interval)
    manifest = probe_certificate(namespace)

    def check() -> str | None:
        proc = kubectl("create", "--dry-run=server", "-f", "-", "-o", "name", stdin=manifest, check=False)
        return None if proc.returncode == 0 else proc.stderr.strip()[-500:]

    problem = _poll(check, timeout, clock, sleep, interval)
    if problem:
        raise RuntimeError(f"cert-manager's webhook does not accept a Certificate after {timeout:.0f}s: {problem}")
