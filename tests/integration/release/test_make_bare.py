"""`make install helm lint` in a fresh copy of the repository, with a Python that has nothing
installed first on PATH (a bare runner's python3: no PyYAML, a virtualenv). Takes a minute or
two: uv installs the locked environment from its cache, npm installs Azurite."""

from __future__ import annotations

import os
import shutil
import subprocess
import venv

import pytest
from chart_helpers import fresh_copy

pytestmark = pytest.mark.integration


@pytest.mark.timeout(1200)
def test_make_install_helm_lint_from_a_fresh_copy_with_a_bare_python(tmp_path):
    for tool in ("make", "npm", "git"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed")
    bare = tmp_path / "bare"
    venv.create(bare, with_pip=True)  # pip: where uv is missing, `make uv` installs it with it
    probe = subprocess.run([str(bare / "bin" / "python3"), "-c", "import yaml"], capture_output=True, check=False)
    assert probe.returncode != 0, "the bare Python must not have PyYAML"
    copy = fresh_copy(tmp_path / "repo")
    # The bare Python first; node and the system tools after it (the Makefile adds
    # ~/.local/bin, where `make uv` puts uv). No helm: it comes from `make helm`.
    tools = {os.path.dirname(shutil.which(t)) for t in ("npm", "make", "git")}
    path = os.pathsep.join([str(bare / "bin"), *sorted(tools), "/usr/bin", "/bin"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON", "UV_PROJECT"))}
    env |= {"PATH": path, "HOME": os.environ.get("HOME", str(tmp_path))}
    proc = subprocess.run(
        ["make", "install", "helm", "lint"], cwd=copy, env=env,
        capture_output=True, text=True, timeout=1200, check=False,
    )
    output = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, output
    assert "ModuleNotFoundError" not in output
    assert (copy / ".venv" / "bin" / "python").exists()
    helm = subprocess.run(
        ["make", "-s", "helm"], cwd=copy, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert helm.returncode == 0 and helm.stdout.strip().endswith("helm"), helm.stdout + helm.stderr
    version = subprocess.run([helm.stdout.strip().splitlines()[-1], "version", "--short"],
                             capture_output=True, text=True, check=False)
    assert version.returncode == 0 and version.stdout.startswith("v"), version.stderr
