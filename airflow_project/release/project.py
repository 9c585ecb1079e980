"""Where the repository is, what version it has, which image tag a build gets."""

from __future__ import annotations

import os
import subprocess
import tomllib
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def repo_root() -> Path:
    """The repository root: ``$MLOPS_REPO_ROOT`` or the folder holding pyproject.toml."""
    env = os.environ.get("MLOPS_REPO_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "airflow_project").is_dir():
            return parent
    return Path.cwd()


def project_version(root: Path | None = None) -> str:
    """``[project].version`` from pyproject.toml."""
    root = root or repo_root()
    with (root / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)["project"]["version"]


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def image_tag(root: Path | None = None) -> str:
    """The tag for ``make image``.

    ``<version>`` when HEAD carries the tag ``v<version>`` (or ``<version>``) and the
    tree is clean; otherwise ``<version>-<short sha>``, with ``-dirty`` appended when
    the work tree has changes, so a dirty build never reuses a clean build's tag.
    Outside git (a source tarball) it is just ``<version>``.
    """
    root = root or repo_root()
    version = project_version(root)
    sha = _git(root, "rev-parse", "--short=7", "HEAD")
    if not sha:
        return version
    dirty = bool(_git(root, "status", "--porcelain", "--untracked-files=no"))
    tags = (_git(root, "tag", "--points-at", "HEAD") or "").split()
    tagged = f"v{version}" in tags or version in tags
    if tagged and not dirty:
        return version
    return f"{version}-{sha}" + ("-dirty" if dirty else "")
