"""The staged install: one chart, one release, upgraded stage by stage.

CRDs and admission webhooks must exist before the objects that use them, and the
KServe controller looks for Istio only at start-up, so the release grows in order:

  1 crds         istio-base, kserve-crd, eck-operator-crds
  2 controllers  istiod, cert-manager (+ its CRDs), eck-operator; then kserve-resources,
                 each followed by a wait for the webhooks' CA bundles (readiness.py)
  3 platform     istio-gateway, (kind: Postgres, Azurite), MLflow, ECK stack, serving namespace
  4 airflow      Airflow with its connections

Every helm step is ``helm upgrade --install --wait --timeout`` of the same release with
the later stages' tags switched off (stages are cumulative: an upgrade that dropped an
earlier stage would uninstall it).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .chart import STAGE_TAGS, stage_set_flags

PY = "python -m airflow_project.release"


@dataclass
class Step:
    stage: int
    name: str
    argv: list[str]
    why: str
    # Python steps run in-process when deploying (their argv is the equivalent CLI call).
    action: tuple | None = field(default=None, repr=False)

    def shell(self) -> str:
        return shlex.join(self.argv)


@dataclass
class DeployConfig:
    env: str = "kind"  # kind | production
    release: str = "mlops"
    namespace: str = "mlops"
    tag: str = "0.1.0"
    registry: str = ""
    chart: str = "helm"
    helm: str = "helm"
    kind_cluster: str = "kind"
    # kind: load the images into the node first (off when they were loaded before, e.g. by
    # the e2e workflow, which then frees their host copies).
    load_images: bool = True
    # The site's own values files, applied after the chart's (`make deploy VALUES=...`).
    values: tuple[str, ...] = ()
    # A folder of packaged dependency charts to install from instead of the chart
    # repositories (air-gapped; $CHART_DEPS_DIR).
    chart_deps: str = ""
    timeouts: dict[str, str] = field(
        default_factory=lambda: {
            "crds": "5m",
            "controllers": "10m",
            "kserve": "10m",
            "platform": "20m",
            "airflow": "20m",
        }
    )

    def values_files(self) -> list[str]:
        files = [f"{self.chart}/values.yaml"]
        if self.env == "kind":
            files.append(f"{self.chart}/values-kind.yaml")
        return files + list(self.values)

    def set_flags(self) -> list[str]:
        """What every stage sets on top of the values files: the images `make image`
        built, the namespaces the subcharts must use (templates/namespace-guard.yaml) and
        the hosts MLflow accepts (templates/mlflow-hosts-guard.yaml)."""
        image_airflow = f"{self.registry}airflow-project/airflow"
        flags = {
            "mlops.images.registry": self.registry,
            "mlops.images.tag": self.tag,
            "airflow.images.airflow.repository": image_airflow,
            "airflow.images.airflow.tag": self.tag,
            "airflow.images.pod_template.repository": image_airflow,
            "airflow.images.pod_template.tag": self.tag,
            "global.istioNamespace": self.namespace,
            "global.leaderElection.namespace": self.namespace,
        }
        hosts = ",".join(mlflow_allowed_hosts(self.release, self.namespace))
        return [arg for key, value in flags.items() for arg in ("--set-string", f"{key}={value}")] + [
            "--set-string", f"mlflow.serverAllowedHosts={{{hosts}}}",
        ]


def mlflow_allowed_hosts(release: str, namespace: str) -> list[str]:
    """The Host headers MLflow's security middleware must accept (MLFLOW_SERVER_ALLOWED_HOSTS,
    mlflow/server/security_utils.py; setting it replaces the default of localhost and private
    IPs): the release's MLflow Service as in-cluster clients name it (MLFLOW_TRACKING_URI,
    templates/_helpers.tpl `mlops.mlflowUri`) and in its cluster.local form, with or without
    a port, and localhost for `kubectl port-forward`."""
    service = f"{release}-mlflow.{namespace}.svc"
    names = [service, f"{service}.cluster.local", "localhost", "127.0.0.1"]
    return [host for name in names for host in (name, f"{name}:*")]


STAGES: tuple[tuple[int, str, tuple[str, ...], str], ...] = (
    (1, "crds", ("crds",), "CRDs: Istio base, kserve-crd, ECK CRDs"),
    (
        2,
        "controllers",
        ("crds", "controllers"),
        "controllers: istiod, cert-manager (with its CRDs), ECK operator",
    ),
    (2, "kserve", ("crds", "controllers", "kserve"), "kserve-resources, after istiod is serving"),
    (
        3,
        "platform",
        ("crds", "controllers", "kserve", "platform"),
        "platform: ingress gateway, serving namespace/RBAC/policies, Postgres/Azurite (kind), MLflow, Elastic stack",
    ),
    (4, "airflow", STAGE_TAGS, "Airflow (KubernetesExecutor) with its connections"),
)


def helm_upgrade(cfg: DeployConfig, tags: tuple[str, ...], timeout: str) -> list[str]:
    argv = [
        cfg.helm,
        "upgrade",
        "--install",
        cfg.release,
        cfg.chart,
        "--namespace",
        cfg.namespace,
        "--create-namespace",
    ]
    for f in cfg.values_files():
        argv += ["-f", f]
    argv += [
        *cfg.set_flags(),
        *stage_set_flags(tags),
        "--wait",
        "--timeout",
        timeout,
    ]
    return argv


def build(cfg: DeployConfig) -> list[Step]:
    from . import chart, devsecrets, readiness

    if cfg.chart_deps:
        dependencies = Step(
            0,
            "dependencies",
            [*PY.split(), "chart-deps", "--from", cfg.chart_deps],
            f"copy the pinned subcharts from {cfg.chart_deps} into {cfg.chart}/charts/ (no download)",
            action=(chart.install_packages, Path(cfg.chart_deps), Path(cfg.chart)),
        )
    else:
        dependencies = Step(
            0,
            "dependencies",
            [cfg.helm, "dependency", "build", cfg.chart],
            "download the pinned subcharts into helm/charts/",
        )
    steps: list[Step] = [dependencies]
    if cfg.env == "kind" and cfg.load_images:
        steps.append(
            Step(
                0,
                "load-images",
                [
                    "kind",
                    "load",
                    "docker-image",
                    "--name",
                    cfg.kind_cluster,
                    f"{cfg.registry}airflow-project/airflow:{cfg.tag}",
                    f"{cfg.registry}airflow-project/predictor:{cfg.tag}",
                ],
                "make the locally built images available to the kind nodes",
            )
        )
    if cfg.env == "kind":
        steps.append(
            Step(
                0,
                "dev-secrets",
                [*PY.split(), "secrets", "--create-dev", "--namespace", cfg.namespace],
                "create random development Secrets that do not exist yet (never committed)",
                action=(devsecrets.create_dev, cfg.namespace),
            )
        )
    else:
        steps.append(
            Step(
                0,
                "check-secrets",
                [*PY.split(), "secrets", "--check", "--env", cfg.env, "--namespace", cfg.namespace],
                "refuse to deploy while a required Secret is missing",
                action=(devsecrets.check_or_die, cfg.env, cfg.namespace),
            )
        )
    for stage, name, tags, why in STAGES:
        if stage == 4 and cfg.env == "kind":
            steps.append(
                Step(
                    3,
                    "elasticsearch-secret",
                    [
                        *PY.split(),
                        "secrets",
                        "--elasticsearch-from-eck",
                        "--namespace",
                        cfg.namespace,
                    ],
                    "kind: give Airflow the elastic user ECK generated",
                    action=(devsecrets.elasticsearch_from_eck, cfg.namespace),
                )
            )
        steps.append(Step(stage, name, helm_upgrade(cfg, tags, cfg.timeouts[name]), why))
        if name == "controllers":
            steps.append(Step(
                2, "cert-manager-ready", [*PY.split(), "ready", "cert-manager", "--namespace", cfg.namespace],
                "wait until cert-manager's webhooks have their CA and accept a dry-run Certificate "
                "(--wait does not; its startupapicheck hook runs on install only)",
                action=(readiness.cert_manager_ready, cfg.namespace),
            ))
        elif name == "kserve":
            steps.append(Step(
                2, "kserve-webhooks-ready", [*PY.split(), "ready", "webhook-ca"],
                "wait until cainjector has given KServe's webhooks their CA",
                action=(readiness.webhooks_have_ca,),
            ))
    steps.append(
        Step(
            4,
            "airflow-admin",
            [
                *PY.split(),
                "secrets",
                "--create-airflow-admin",
                "--namespace",
                cfg.namespace,
                "--release",
                cfg.release,
            ],
            "create the Airflow admin account from the Secret airflow-admin (once)",
            action=(devsecrets.create_airflow_admin, cfg.namespace, cfg.release),
        )
    )
    return steps


def render(steps: list[Step]) -> str:
    lines = []
    current = None
    for step in steps:
        if step.stage != current:
            current = step.stage
            title = "prepare" if step.stage == 0 else f"stage {step.stage}/4"
            lines.append(f"# ---- {title}")
        lines.append(f"# {step.name}: {step.why}")
        lines.append(step.shell())
    return "\n".join(lines) + "\n"


def execute(steps: list[Step], cwd: Path) -> None:
    for step in steps:
        print(
            f"==> [{'prepare' if step.stage == 0 else f'stage {step.stage}/4'}] {step.name}: {step.why}",
            flush=True,
        )
        if step.action is not None:
            fn, *args = step.action
            fn(*args)
            continue
        print("    " + step.shell(), flush=True)
        proc = subprocess.run(step.argv, cwd=cwd, check=False)
        if proc.returncode != 0:
            print(f"step {step.name} failed (exit {proc.returncode})", file=sys.stderr)
            raise SystemExit(proc.returncode)
