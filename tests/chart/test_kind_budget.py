"""The kind render fits the runner the e2e workflow uses (GitHub's ubuntu-24.04: 4 CPUs,
16 GiB), with headroom, while the DAGs run: every workload's requests plus the task pods and
predictors the deploy DAGs have running at once, each with the Istio sidecar injected into it.

A pod's effective request is what the scheduler reserves: its containers plus its sidecars
(init containers with restartPolicy Always), or its largest ordinary init container if
that is more. Requests, not usage: a pod that does not fit stays Pending, and a Pending
predictor burns the deploy DAG's readiness wait.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import combinations

import pytest
from chart_helpers import (
    by_kind,
    ident,
    named,
    pod_specs,
    pod_template,
    worker_serving_config,
    workloads,
)

pytestmark = [pytest.mark.chart, pytest.mark.usefixtures("real_subcharts")]

RUNNER_CPU = 4.0
RUNNER_MEMORY_GIB = 16.0
# The kind node's own pods (API server, etcd, controller manager, scheduler, CoreDNS,
# kindnet, kube-proxy, local-path provisioner), the kubelet and containerd, and the
# runner's OS and Docker.
SYSTEM_CPU = 1.0
SYSTEM_MEMORY_GIB = 2.5
HEADROOM = 0.8  # requests may take 80% of what is left
# What the e2e suite has running during deploy_traffic_mirroring: deploy_model's
# predictor stays, the mirror adds primary and shadow, and the graph's router.
PREDICTORS_AT_ONCE = 3
ROUTERS_AT_ONCE = 1


@dataclass(frozen=True)
class Request:
    cpu: float = 0.0  # cores
    memory: float = 0.0  # GiB

    def __add__(self, other: Request) -> Request:
        return Request(self.cpu + other.cpu, self.memory + other.memory)

    def __mul__(self, n: int) -> Request:
        return Request(self.cpu * n, self.memory * n)

    def max(self, other: Request) -> Request:
        return Request(max(self.cpu, other.cpu), max(self.memory, other.memory))


def cpu(value) -> float:
    text = str(value or 0)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory(value) -> float:
    text = str(value or 0)
    for suffix, gib in (("Gi", 1.0), ("Mi", 1 / 1024), ("Ki", 1 / 1024**2), ("G", 1e9 / 2**30), ("M", 1e6 / 2**30)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * gib
    return float(text) / 2**30


def requested(resources: dict | None) -> Request:
    req = (resources or {}).get("requests") or {}
    return Request(cpu(req.get("cpu")), memory(req.get("memory")))


def pod_request(pod: dict, sidecar: Request = Request()) -> Request:
    """Kubernetes' effective pod request (KEP-753 for restartable init containers)."""
    running = sidecar
    largest_init = Request()
    for c in pod.get("initContainers") or []:
        if c.get("restartPolicy") == "Always":
            running = running + requested(c.get("resources"))
        else:
            largest_init = largest_init.max(requested(c.get("resources")))
    for c in pod.get("containers") or []:
        running = running + requested(c.get("resources"))
    return running.max(largest_init)


def replicas(obj: dict) -> int:
    spec = obj.get("spec") or {}
    if obj["kind"] == "Elasticsearch":
        return sum(int(n.get("count", 1)) for n in spec["nodeSets"])
    if obj["kind"] in ("Kibana", "Logstash"):
        return int(spec.get("count", 1))
    if obj["kind"] in ("DaemonSet", "Beat"):
        return 1  # one node
    return int(spec.get("replicas", 1))


def proxy_request(objs: list[dict]) -> Request:
    """The istio-proxy's requests istiod injects (its injector values)."""
    values = json.loads(named(objs, "ConfigMap", "istio-sidecar-injector")["data"]["values"])
    return requested(values["global"]["proxy"]["resources"])


def dag_width(dag) -> int:
    """The most tasks of one run that can run at once: the largest set of tasks none of which
    is upstream of another, capped by the DAG's max_active_tasks."""
    tasks = list(dag.task_dict)
    ancestors = {t: {u.task_id for u in dag.task_dict[t].get_flat_relatives(upstream=True)} for t in tasks}
    assert len(tasks) <= 16, f"{dag.dag_id}: {len(tasks)} tasks, too many to search"
    width = 1
    for size in range(2, len(tasks) + 1):
        if any(all(a not in ancestors[b] and b not in ancestors[a] for a, b in combinations(group, 2))
               for group in combinations(tasks, size)):
            width = size
    return min(width, dag.max_active_tasks)


@pytest.fixture(scope="module")
def task_pods_at_once() -> int:
    from airflow.dag_processing.dagbag import DagBag

    from airflow_project.release.project import repo_root

    bag = DagBag(dag_folder=str(repo_root() / "airflow_project" / "dags"))
    assert not bag.import_errors, bag.import_errors
    # max_active_runs=1 per DAG (dag_defaults); the e2e suite runs one DAG at a time
    return max(dag_width(dag) for dag in bag.dags.values())


def test_width_counts_tasks_that_can_run_together():
    class Task:
        def __init__(self, task_id, up=()):
            self.task_id, self.up = task_id, list(up)

        def get_flat_relatives(self, upstream):
            seen, todo = [], list(self.up)
            while todo:
                t = todo.pop()
                seen.append(t)
                todo += t.up
            return seen

    a = Task("a")
    b, c = Task("b", [a]), Task("c", [a])
    d = Task("d", [b, c])

    class Dag:
        def __init__(self, max_active_tasks: int) -> None:
            self.dag_id, self.max_active_tasks = "x", max_active_tasks
            self.task_dict = {t.task_id: t for t in (a, b, c, d)}

    assert dag_width(Dag(16)) == 2
    assert dag_width(Dag(1)) == 1


def budget() -> Request:
    return Request((RUNNER_CPU - SYSTEM_CPU) * HEADROOM, (RUNNER_MEMORY_GIB - SYSTEM_MEMORY_GIB) * HEADROOM)


def test_kind_release_and_the_dags_pods_fit_the_runner(plan_render, task_pods_at_once):
    objs = plan_render("kind")
    proxy = proxy_request(objs)
    lines, steady = [], Request()
    for obj in workloads(objs):
        if obj["kind"] in ("Job", "CronJob"):
            continue  # done before the DAGs run (the migration Job: stage 4's install)
        for _, pod, _ in pod_specs(obj):
            each = pod_request(pod)
            steady = steady + each * replicas(obj)
            lines.append(f"{ident(obj)} x{replicas(obj)}: {each.cpu:.2f} CPU {each.memory:.2f} GiB")
    template = pod_template(objs)
    # the task pod's native sidecar: istio-proxy as an init container with restartPolicy Always
    task = pod_request(template["spec"], proxy)
    config = worker_serving_config(objs)
    from airflow_project.serving import manifests

    isvc = manifests.inference_service("wachttijden", "models:/wachttijden/1", config)
    predictor = pod_request({"containers": isvc["spec"]["predictor"]["containers"]}, proxy)
    router = requested(config.router_resources.to_dict()) + proxy
    dags = task * task_pods_at_once + predictor * PREDICTORS_AT_ONCE + router * ROUTERS_AT_ONCE
    total, limit = steady + dags, budget()
    dag_line = (f"{task_pods_at_once} task pods {task}, {PREDICTORS_AT_ONCE} predictors {predictor}, "
                f"router {router}")
    report = "\n".join([*lines, f"steady {steady}", dag_line, f"total {total} / budget {limit}"])
    print(report)  # shown with -s or -rP
    assert total.cpu <= limit.cpu and total.memory <= limit.memory, report


def test_budget_counts_sidecars_and_init_containers():
    pod = {
        "initContainers": [
            {"name": "migrate", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}},
            {"name": "proxy", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
        ],
        "containers": [{"name": "app", "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}}],
    }
    assert pod_request(pod) == Request(2.0, 1.0)  # the migrate init container is the largest
    del pod["initContainers"][0]
    assert pod_request(pod, Request(0.01, 0.0625)) == Request(0.61, 0.6875)
    assert memory("1536Mi") == 1.5 and cpu("250m") == 0.25


def test_kind_leaves_out_what_the_e2e_run_does_not_use(plan_render):
    objs = plan_render("kind")
    assert not by_kind(objs, "Kibana")  # the e2e suite reads Elasticsearch directly
    assert by_kind(plan_render("production"), "Kibana")
    # Elasticsearch on the runner's shared disk: no disk watermark may block its writes
    (es,) = by_kind(objs, "Elasticsearch")
    (node_set,) = es["spec"]["nodeSets"]
    assert node_set["config"]["cluster.routing.allocation.disk.threshold_enabled"] is False
    (prod_es,) = by_kind(plan_render("production"), "Elasticsearch")
    assert "cluster.routing.allocation.disk.threshold_enabled" not in prod_es["spec"]["nodeSets"][0]["config"]
