"""kubectl for the release steps that talk to the cluster (Secrets, readiness)."""

from __future__ import annotations

import subprocess


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`kubectl ARGS` against the current context; stdin for manifests and credentials (never
    on the command line)."""
    return subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, check=check)
