"""``python -m airflow_project.release <command>``.

image-tag              print the tag `make image` uses
version                print the project version
tools [--checkov]      make sure helm (and checkov) are available; print helm's path
export-requirements    write image/requirements-*.txt from uv.lock (--check: fail when stale)
plan                   print the staged install commands (what DRY_RUN=1 shows)
deploy                 run the staged install against the current kube context
                       (both refuse values that are still placeholders: --values FILE adds yours)
secrets                --check | --create-dev | --elasticsearch-from-eck | --create-airflow-admin | --list
scan                   checkov on the rendered own templates and the Dockerfile
chart-deps --from DIR  copy the pinned dependency charts from DIR into helm/charts/
chart-deps --if-missing  fetch them (helm dependency build) when helm/charts/ lacks them, no
                       CHART_DEPS_DIR is set and the repositories answer; one line either way
ready cert-manager|webhook-ca   wait for what `helm --wait` does not (see readiness.py)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import chart, devsecrets, placeholders, plan, project, readiness, requirements, tools


def _current_context() -> str:
    """The current kubectl context, or '' when kubectl or a kubeconfig is missing."""
    try:
        return subprocess.run(
            ["kubectl", "config", "current-context"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _detect_env(requested: str) -> str:
    if requested != "auto":
        return requested
    return "kind" if _current_context().startswith("kind-") else "production"


def _kind_cluster() -> str:
    ctx = _current_context()
    return ctx.removeprefix("kind-") if ctx.startswith("kind-") else "kind"


def _config(args: argparse.Namespace, helm: str) -> plan.DeployConfig:
    env = _detect_env(args.env)
    return plan.DeployConfig(
        env=env,
        release=args.release,
        namespace=args.namespace,
        tag=args.tag or project.image_tag(),
        registry=args.registry,
        chart=os.path.relpath(chart.chart_dir(), project.repo_root()),
        helm=helm,
        kind_cluster=args.kind_cluster or _kind_cluster(),
        values=tuple(args.values),
        load_images=not args.no_load_images,
        chart_deps=os.environ.get(chart.DEPS_ENV, ""),
    )


def _checked_config(args: argparse.Namespace, helm: str) -> plan.DeployConfig:
    """The deploy config, after refusing placeholder values (exits 1 naming them)."""
    cfg = _config(args, helm)
    root = project.repo_root()
    try:
        placeholders.check([root / f for f in cfg.values_files()], cfg.set_flags())
    except (placeholders.PlaceholderError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_project.release",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("image-tag")
    cd = sub.add_parser("chart-deps")
    how = cd.add_mutually_exclusive_group(required=True)
    how.add_argument("--from", dest="source", help="folder of packaged charts")
    how.add_argument("--if-missing", action="store_true",
                     help="helm dependency build, only when needed and possible (never fails)")
    sub.add_parser("scan")
    sub.add_parser("version")
    t = sub.add_parser("tools")
    t.add_argument(
        "--checkov", action="store_true", help="also install checkov into .tools/checkov"
    )
    e = sub.add_parser("export-requirements")
    e.add_argument("--check", action="store_true")
    for name in ("plan", "deploy"):
        p = sub.add_parser(name)
        p.add_argument("--env", choices=["auto", "kind", "production"], default="auto")
        p.add_argument("--release", default="mlops")
        p.add_argument("--namespace", default="mlops")
        p.add_argument("--tag", default="", help="image tag (default: the one `make image` builds)")
        p.add_argument("--registry", default="", help='registry prefix ending in "/"')
        p.add_argument("--kind-cluster", default="")
        p.add_argument("--no-load-images", action="store_true",
                       help="kind: the images are in the node already (skip `kind load`)")
        p.add_argument(
            "--values",
            action="append",
            default=[],
            metavar="FILE",
            help="a values file of your own, after the chart's (repeatable; paths from the repo root)",
        )
    r = sub.add_parser("ready")
    r.add_argument("what", choices=["cert-manager", "webhook-ca"])
    r.add_argument("--namespace", default="mlops")
    r.add_argument("--timeout", type=float, default=300.0, help="seconds")
    s = sub.add_parser("secrets")
    s.add_argument("--env", choices=["kind", "production"], default="production")
    s.add_argument("--namespace", default="mlops")
    s.add_argument("--release", default="mlops", help="with --create-airflow-admin")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--check", action="store_true")
    g.add_argument("--create-dev", action="store_true")
    g.add_argument("--elasticsearch-from-eck", action="store_true")
    g.add_argument("--create-airflow-admin", action="store_true")
    g.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)

    if args.cmd == "image-tag":
        print(project.image_tag())
    elif args.cmd == "chart-deps" and args.if_missing:
        print(chart.fetch_if_missing(tools.ensure_helm()))
    elif args.cmd == "chart-deps":
        try:
            copied = chart.install_packages(Path(args.source).resolve())
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print("\n".join(f"copied {c}" for c in copied))
    elif args.cmd == "scan":
        from . import scan

        return scan.main()
    elif args.cmd == "version":
        print(project.project_version())
    elif args.cmd == "tools":
        print(tools.ensure_helm())
        if args.checkov:
            print(tools.ensure_checkov())
    elif args.cmd == "export-requirements":
        if args.check:
            stale = requirements.stale()
            if stale:
                print("stale (run `make requirements`): " + ", ".join(stale), file=sys.stderr)
                return 1
            print("image requirements match uv.lock")
        else:
            for path in requirements.write():
                print(f"wrote {path}")
    elif args.cmd == "plan":
        helm = "helm" if shutil.which("helm") else (tools.find_helm() or "helm")
        if args.registry and not args.registry.endswith("/"):
            args.registry += "/"
        sys.stdout.write(plan.render(plan.build(_checked_config(args, helm))))
    elif args.cmd == "deploy":
        if args.registry and not args.registry.endswith("/"):
            args.registry += "/"
        cfg = _checked_config(args, tools.ensure_helm())
        print(
            f"deploying release {cfg.release} ({cfg.env}) to namespace {cfg.namespace}, image tag {cfg.tag}"
        )
        plan.execute(plan.build(cfg), project.repo_root())
    elif args.cmd == "ready":
        try:
            if args.what == "cert-manager":
                readiness.cert_manager_ready(args.namespace, args.timeout)
            else:
                readiness.webhooks_have_ca(args.timeout)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{args.what}: ready")
    elif args.cmd == "secrets":
        try:
            return _secrets(args)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


def _secrets(args: argparse.Namespace) -> int:
    """The `secrets` subcommand; problems it can name are RuntimeErrors."""
    if args.list:
        print(devsecrets.describe(args.env))
    elif args.check:
        devsecrets.check_or_die(args.env, args.namespace)
        print("all required Secrets are present")
    elif args.create_dev:
        created = devsecrets.create_dev(args.namespace)
        print("created: " + (", ".join(created) or "nothing (all present)"))
    elif args.create_airflow_admin:
        devsecrets.create_airflow_admin(args.namespace, args.release)
        print("Airflow admin account: see Secret airflow-admin")
    else:
        devsecrets.elasticsearch_from_eck(args.namespace)
    return 0
