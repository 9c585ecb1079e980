"""Pinned requirements for the two images, derived from uv.lock.

Why two different sets: kserve 0.21 pins ``psutil<6`` while Airflow 3.3 needs
``psutil>=6.1``. The dev environment forces both together with a uv override; an
image cannot. So

* the **airflow** image gets ``uv export ... --prune kserve``: everything the
  project locks except kserve and the packages only kserve needs. The DAGs only
  need the kubernetes client there (InferenceServices are applied as manifests);
  the predictor code is never imported by Airflow.
* the **predictor** image gets the lock's closure of kserve, scikit-learn, skops,
  mlflow-skinny, pandas and numpy (the same versions training used) with psutil
  replaced by the newest 5.x that kserve accepts.

``image/requirements-*.txt`` are checked in; ``tests/chart/test_requirements.py``
fails when they differ from what this module generates from the current uv.lock.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

from .project import repo_root

AIRFLOW_FILE = "image/requirements-airflow.txt"
PREDICTOR_FILE = "image/requirements-predictor.txt"
PREDICTOR_ROOTS = ("kserve", "scikit-learn", "skops", "mlflow-skinny", "pandas", "numpy")
# kserve==0.21.0 requires psutil>=5.9.6,<6; 5.9.8 is the last 5.x release.
PREDICTOR_PSUTIL = "psutil==5.9.8"
EXPORT_ARGS = (
    "export",
    "--frozen",
    "--no-dev",
    "--no-hashes",
    "--no-emit-project",
    "--no-header",
    "--no-annotate",
)

_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _uv() -> str:
    uv = shutil.which("uv")
    if not uv:
        raise RuntimeError("uv is not on PATH: run `make uv` (or `make install`) first")
    return uv


def uv_export(root: Path, *extra: str) -> list[str]:
    out = subprocess.run(
        [_uv(), *EXPORT_ARGS, *extra], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    return [line for line in out.splitlines() if line.strip() and not line.startswith("#")]


def lock_closure(root: Path, roots: tuple[str, ...]) -> set[str]:
    """Names reachable from ``roots`` in uv.lock (dependencies and requested extras)."""
    with (root / "uv.lock").open("rb") as fh:
        lock = tomllib.load(fh)
    packages = {_normalize(p["name"]): p for p in lock["package"]}
    seen: set[str] = set()
    todo = [(_normalize(r), ()) for r in roots]
    while todo:
        name, extras = todo.pop()
        pkg = packages[name]
        key_new = name not in seen
        seen.add(name)
        deps = list(pkg.get("dependencies", [])) if key_new else []
        for extra in extras:
            deps += pkg.get("optional-dependencies", {}).get(extra, [])
        for dep in deps:
            todo.append((_normalize(dep["name"]), tuple(dep.get("extra", []))))
    return seen


def _header(what: str) -> list[str]:
    return [
        f"# {what}",
        "# GENERATED from uv.lock by `make requirements`",
        "# (python -m airflow_project.release export-requirements). Do not edit.",
    ]


def airflow_requirements(root: Path | None = None) -> str:
    root = root or repo_root()
    lines = uv_export(root, "--prune", "kserve")
    if any(_normalize(_NAME.match(line).group(1)) == "kserve" for line in lines):
        raise RuntimeError("kserve leaked into the airflow export")
    head = _header(
        "Airflow image: the project's runtime dependencies without kserve (psutil>=6.1)."
    )
    return "\n".join([*head, *lines]) + "\n"


def predictor_requirements(root: Path | None = None) -> str:
    root = root or repo_root()
    wanted = lock_closure(root, PREDICTOR_ROOTS)
    lines = []
    for line in uv_export(root):
        name = _normalize(_NAME.match(line).group(1))
        if name not in wanted:
            continue
        if name == "psutil":
            line = PREDICTOR_PSUTIL + "  # kserve 0.21 needs psutil<6; the dev env overrides it"
        lines.append(line)
    head = _header(
        "Predictor image: kserve, scikit-learn, skops, mlflow-skinny, pandas, numpy at the locked versions."
    )
    return "\n".join([*head, *lines]) + "\n"


def generated(root: Path | None = None) -> dict[str, str]:
    root = root or repo_root()
    return {AIRFLOW_FILE: airflow_requirements(root), PREDICTOR_FILE: predictor_requirements(root)}


def write(root: Path | None = None) -> list[Path]:
    root = root or repo_root()
    written = []
    for rel, text in generated(root).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def stale(root: Path | None = None) -> list[str]:
    """Files under image/ that differ from a fresh export (empty list: up to date)."""
    root = root or repo_root()
    out = []
    for rel, text in generated(root).items():
        path = root / rel
        if not path.is_file() or path.read_text() != text:
            out.append(rel)
    return out
