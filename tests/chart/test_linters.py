"""`make lint` runs hadolint on the Dockerfile and actionlint on the GitHub workflows; so does
`make test`, here. Both tools come as wheels with their binary (pyproject's dev group)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from chart_helpers import ROOT, e2e_module

pytestmark = pytest.mark.chart

BIN = Path(sys.executable).parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / tool), *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_dockerfile_passes_hadolint():
    proc = _run("hadolint", "Dockerfile")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_reports_what_it_finds(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install requests\n")
    proc = _run("hadolint", str(bad))
    assert proc.returncode == 1
    assert "DL3007" in proc.stdout  # :latest


def test_workflows_pass_actionlint():
    assert [w.name for w in WORKFLOWS] == ["ci.yml", "e2e.yml"]
    proc = _run("actionlint", *map(str, WORKFLOWS))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_reports_what_it_finds(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ github.nope }}\n")
    proc = _run("actionlint", str(bad))
    assert proc.returncode == 1 and "nope" in proc.stdout


def _steps(name: str) -> list[str]:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    return [s.get("run", "") for job in workflow["jobs"].values() for s in job["steps"]]


def test_ci_workflow_runs_the_readme_test_command_with_real_subcharts():
    runs = _steps("ci.yml")
    assert "make test" in runs and "make lint" in runs
    assert runs.index("make chart-deps") < runs.index("make test")


def test_e2e_workflow_installs_the_release_then_runs_the_suite():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "e2e.yml").read_text())
    runs = _steps("e2e.yml")
    create = next(r for r in runs if "kind create cluster" in r)
    assert "${NODE_IMAGE}" in create and workflow["env"]["NODE_IMAGE"].startswith("kindest/node:v1.3")

    def step(text: str) -> int:
        (index,) = [i for i, r in enumerate(runs) if text in r]
        return index

    # disk: free the runner's tools first, and the images' host copies once they are in the node
    assert step("sudo rm -rf /usr/share/dotnet") < step("make image") < step("kind load docker-image")
    load = runs[step("kind load docker-image")]
    assert load.index("kind load docker-image") < load.index("docker image rm") < load.index("docker builder prune")
    assert step("kind load docker-image") < step("make deploy DEPLOY_ENV=kind LOAD_IMAGES=0") < runs.index("make e2e")
    assert runs.index(create) < step("kind load docker-image")
    kube = e2e_module("kube")  # the suite's own pins
    assert workflow["env"]["KIND_VERSION"] == kube.DEFAULT_KIND_VERSION
    assert workflow["env"]["NODE_IMAGE"] == kube.DEFAULT_NODE_IMAGE
    values_kind = yaml.safe_load((ROOT / "helm" / "values-kind.yaml").read_text())
    node_port = next(p["nodePort"] for p in values_kind["istio-gateway"]["service"]["ports"] if p["name"] == "http2")
    assert workflow["env"]["INGRESS_PORT"] == str(node_port)


def test_e2e_workflow_pins_helm_and_keeps_what_explains_a_failure():
    from airflow_project.release import tools

    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "e2e.yml").read_text())
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    assert workflow["env"]["HELM_VERSION"] == tools.HELM_VERSION
    (setup,) = [s for s in steps if str(s.get("uses", "")).startswith("azure/setup-helm@")]
    assert setup["with"]["version"] == "${{ env.HELM_VERSION }}"
    assert steps.index(setup) < next(i for i, s in enumerate(steps) if "make deploy" in s.get("run", ""))
    on_failure = "\n".join(s.get("run", "") for s in steps if s.get("if") == "failure()")
    for what in ("kubectl describe pods -A", "kubectl logs", "kubectl get events", "helm history"):
        assert what in on_failure, what


def test_the_helm_the_tests_render_with_is_the_pinned_one(helm):
    from airflow_project.release import tools

    if helm != str(tools.tools_dir(ROOT) / "bin" / "helm"):
        pytest.skip(f"rendering with {helm} from PATH, not the pinned wheel's helm")
    assert tools.helm_version(helm).startswith(tools.HELM_VERSION + "+")


def test_make_e2e_builds_images_unless_it_tests_a_deployed_cluster():
    import shutil

    if not shutil.which("make"):
        pytest.skip("make not installed")

    def dry_run(*variables: str) -> str:
        proc = subprocess.run(["make", "-n", "e2e", "IMAGE_TAG=1.2.3", *variables], cwd=ROOT,
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert "docker build --target airflow" in dry_run()
    deployed = dry_run("MLOPS_E2E_SKIP_DEPLOY=1")
    assert "docker build" not in deployed and "pytest tests/e2e" in deployed
