"""`mlops`: the command line of the platform.

The README ("Command line") lists the commands and their output formats. Errors are one
line on stderr and a non-zero exit code; files are written to a temporary name and moved
into place, so a failed command leaves no output file.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

from airflow_project.host.files import write_atomic

EXIT_BAD_INPUT = 2


class CommandError(Exception):
    """An error to report to the user as one line, without a traceback."""


def _read_input(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CommandError(f"{path}: input file does not exist") from None
    except IsADirectoryError:
        raise CommandError(f"{path}: is a directory, expected a file") from None


def cmd_generate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from airflow_project.wachttijden import synthetic

    base = synthetic.DRIFTED if args.drifted else synthetic.SyntheticConfig()
    drift = {name: value for name, value in (
        ("target_shift_weeks", args.target_shift), ("target_scale", args.target_scale),
        ("renamed_specialisms", args.rename_specialisms), ("unusable_share", args.unusable_share),
    ) if value is not None}
    try:
        config = replace(base, rows=args.rows, seed=args.seed, **drift)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    frame = synthetic.generate(config)
    write_atomic(args.output, synthetic.to_raw_bytes(frame))
    print(f"wrote {len(frame)} rows to {args.output}", file=sys.stderr)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from airflow_project.wachttijden import dataset

    cleaned, report = dataset.prepare(_read_input(args.input), str(args.input))
    write_atomic(args.output, dataset.to_prepared_bytes(cleaned))
    print(
        f"wrote {report.rows_out} of {report.rows_in} rows to {args.output} "
        f"({report.dropped_missing_target} without a numeric WACHTTIJD dropped, "
        f"{report.filled_type_zorginstelling} TYPE_ZORGINSTELLING filled)",
        file=sys.stderr,
    )
    return 0


EXIT_GATE_FAILED = 1


def cmd_check(args: argparse.Namespace) -> int:
    """`mlops data check`: the data gate on a raw export against a prepared baseline."""

    from airflow_project.wachttijden import dataset, export_checks

    try:
        thresholds = export_checks.GateThresholds.from_optional(args.min_usable, args.max_drift)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    frame = dataset.select_features(dataset.read_raw(_read_input(args.input), str(args.input)))
    baseline = None
    if args.baseline is not None:
        baseline = dataset.read_prepared(_read_input(args.baseline), str(args.baseline))
    report = export_checks.check_export(
        frame, baseline, source=str(args.input), thresholds=thresholds,
        baseline_source=None if args.baseline is None else str(args.baseline),
        baseline_note="" if args.baseline is not None else "no --baseline given",
    )
    return verdict(report.to_dict(), report.reasons, f"mlops data check: {args.input}: ")


def verdict(report: dict, reasons: list[str], prefix: str) -> int:
    """A check's outcome: the report as one JSON line on stdout; the reasons on stderr, exit 1."""
    import json

    print(json.dumps(report, ensure_ascii=False))
    for reason in reasons:
        print(f"{prefix}{reason}", file=sys.stderr)
    return EXIT_GATE_FAILED if reasons else 0


def cmd_monitor(args: argparse.Namespace) -> int:
    """`mlops monitor`: captured traffic against the training data (and a labelled export)."""
    from airflow_project.monitoring import capture, models
    from airflow_project.monitoring.report import Labels, build_report
    from airflow_project.monitoring.thresholds import MonitorThresholds
    from airflow_project.wachttijden import dataset

    try:
        thresholds = MonitorThresholds.from_optional(args.max_drift, args.max_mae_ratio)
        traffic = capture.read_path(args.requests)
    except ValueError as exc:  # CaptureError included
        raise CommandError(str(exc)) from None
    baseline = dataset.read_prepared(_read_input(args.baseline), str(args.baseline))
    labels = None
    if args.labels is not None:
        labels = Labels(dataset.read_prepared(_read_input(args.labels), str(args.labels)), str(args.labels))
    with contextlib.redirect_stdout(sys.stderr):  # stdout is the one JSON line
        references = models.references(traffic.versions(), baseline=baseline, baseline_source=str(args.baseline),
                                       tracking_uri=args.tracking_uri or default_tracking()[0])
    report = build_report(traffic, references, source=str(args.requests), labels=labels, thresholds=thresholds)
    return verdict(report.to_dict(), report.reasons, "mlops monitor: ")


def cmd_upload(args: argparse.Namespace) -> int:
    """Put a raw export where prepare_dataset reads it, after the checks `prepare` makes."""
    from azure.core.exceptions import AzureError

    from airflow_project.datalake import RAW_CONTAINER, BlobRef, DataLake, dataset_path
    from airflow_project.host.net import tcp_ok
    from airflow_project.local.config import LocalConfig
    from airflow_project.wachttijden import dataset

    data = _read_input(args.input)
    _, report = dataset.prepare(data, str(args.input))  # a bad file stops here: nothing is uploaded
    local = LocalConfig()
    if not args.connection_string and not tcp_ok(local.ports.azurite):  # else the client retries for minutes
        raise CommandError(f"the local data lake (Azurite on 127.0.0.1:{local.ports.azurite}) is not running: "
                           "start the platform with `make up`")
    ref = BlobRef(RAW_CONTAINER, dataset_path(args.date))
    try:
        lake = DataLake.from_connection_string(args.connection_string or local.azurite_connection_string)
        lake.ensure_containers((RAW_CONTAINER,))
        if lake.exists(ref) and not args.replace:
            raise CommandError(f"{ref} already exists in the data lake; pass --replace to overwrite it "
                               "(or --date for another day)")
        gate = upload_gate(data, str(args.input), lake, local)
        if gate is not None:
            if args.strict:
                raise CommandError(f"refused (--strict), nothing uploaded: {gate}")
            print(f"mlops data upload: warning: {gate}; uploading anyway (--strict refuses such a file)",
                  file=sys.stderr)
        lake.write(ref, data)
    except AzureError as exc:
        raise CommandError(f"cannot upload to the data lake: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    print(f"uploaded {args.input} ({report.rows_in} rows, {report.rows_out} usable, "
          f"{report.rows_out / report.rows_in:.1%}) to {ref}", file=sys.stderr)
    print(f"next: trigger prepare_dataset for logical date {args.date:%Y-%m-%d}, or with raw_path "
          f"{ref.path}; train_model follows from its asset event", file=sys.stderr)
    return 0


def upload_gate(data: bytes, source: str, lake: Any, local: Any) -> str | None:
    """Why prepare_dataset's data gate (default thresholds) would stop this export, None when
    it would pass. Against the champion's training data when the platform's MLflow answers
    (`data_tracking.champion_baseline`, as validate_export does), else the usable share only."""
    from airflow_project.host.net import http_ok
    from airflow_project.wachttijden import dataset, export_checks

    frame = dataset.select_features(dataset.read_raw(data, source))
    uri = os.environ.get("MLFLOW_TRACKING_URI") or local.mlflow_uri
    baseline, note = None, f"drift not checked: MLflow at {uri} does not answer"
    if uri.startswith("http") and http_ok(uri.rstrip("/") + "/health"):
        import mlflow

        from airflow_project.data_tracking import champion_baseline
        from airflow_project.registry import mlflow_logs_at_their_level

        mlflow.set_tracking_uri(uri)
        with mlflow_logs_at_their_level():
            found = champion_baseline(lake)
        baseline, note = found, ""
    report = export_checks.check_export(
        frame, None if baseline is None else baseline.frame, source=source,
        baseline_source=None if baseline is None else baseline.source,
        baseline_note=note if baseline is None else baseline.note)
    if report.passed:
        return None
    checked = f" ({note})" if note else ""
    return f"{source} would fail prepare_dataset's data gate{checked}: {'; '.join(report.reasons)}"


def _add_upload_parser(data: argparse._SubParsersAction) -> None:
    import datetime as dt

    def day(text: str) -> dt.date:
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None

    upload = data.add_parser("upload", help="validate a raw export and put it where prepare_dataset reads it")
    upload.add_argument("--input", type=Path, required=True, help="raw NZa export (as `prepare` reads it)")
    upload.add_argument("--date", type=day, default=dt.datetime.now(dt.UTC).date(),
                        help="the logical date it is for (default: today, UTC): raw/wachttijden/YYYY/MM/DD/")
    upload.add_argument("--replace", action="store_true", help="overwrite the export already there for that date")
    upload.add_argument("--connection-string", help="Azure Blob connection string (default: the local Azurite)")
    upload.add_argument("--strict", action="store_true",
                        help="refuse an export that prepare_dataset's data gate would stop (default: warn)")
    upload.set_defaults(func=cmd_upload)


def default_tracking() -> tuple[str, str | None]:
    """MLFLOW_TRACKING_URI, else a SQLite store (and artifact folder) under .local/."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri, None
    from airflow_project.local.config import LocalConfig

    folder = LocalConfig().root / "mlflow-cli"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


def cmd_train(args: argparse.Namespace) -> int:
    from airflow_project import registry
    from airflow_project.wachttijden import dataset
    from airflow_project.wachttijden.training import TrainingConfig

    try:
        config = TrainingConfig(args.estimator, args.test_size, args.seed)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    frame = dataset.read_prepared(_read_input(args.input), str(args.input))
    uri, artifacts = (args.tracking_uri, None) if args.tracking_uri else default_tracking()
    # MLflow prints progress on stdout; stdout is reserved for the one JSON line.
    with contextlib.redirect_stdout(sys.stderr):
        result = registry.train_and_register(
            frame, config, tracking_uri=uri, source=str(args.input), artifact_location=artifacts,
            dataset_uri=str(args.input.resolve()), force=args.force,
        )
    print(result.as_cli_json())
    print(result.decision, file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from airflow_project.serving.cli import main as serve

    return serve(args.args, prog="mlops serve")


def cmd_up(args: argparse.Namespace) -> int:
    from airflow_project.local import commands
    from airflow_project.local.config import LocalConfig

    return commands.up(LocalConfig(), rows=args.rows, drift_demo=args.drift_demo)


def cmd_status(args: argparse.Namespace) -> int:
    from airflow_project.local import commands
    from airflow_project.local.config import LocalConfig

    return commands.status(LocalConfig())


def cmd_down(args: argparse.Namespace) -> int:
    from airflow_project.local import commands
    from airflow_project.local.config import LocalConfig

    return commands.down(LocalConfig(), purge=args.purge)


PARTS = ("apache-airflow", "mlflow", "kserve", "scikit-learn")
"""The installed releases `mlops --version` names next to its own (what a bug report needs)."""


def version_line() -> str:
    """`mlops 0.1.0 (apache-airflow 3.x, mlflow 3.17.2, ...; Python 3.11.7)`, from the installed
    distributions' metadata (no import of any of them)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def installed(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    parts = ", ".join(f"{dist} {installed(dist)}" for dist in PARTS)
    return f"mlops {installed('airflow-project')} ({parts}; Python {platform.python_version()})"


class _Version(argparse.Action):
    """`--version` as one unwrapped line (argparse's own action wraps it at the terminal width)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(version_line())
        parser.exit()


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from airflow_project.wachttijden.schema import DEFAULT_MAX_DRIFT, DEFAULT_MIN_USABLE_SHARE
    from airflow_project.wachttijden.training import DEFAULT_ESTIMATOR, ESTIMATORS

    parser = argparse.ArgumentParser(prog="mlops", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="print the version of mlops and of the platform's main parts, and exit")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="generate, check, prepare or upload NZa exports").add_subparsers(
        dest="data_command", required=True
    )
    generate = data.add_parser("generate", help="write a synthetic raw export")
    generate.add_argument("--rows", type=_positive, required=True)
    generate.add_argument("--seed", type=int, default=42)
    generate.add_argument("--output", type=Path, required=True)
    drift = generate.add_argument_group("drift (an export the data gate must stop)")
    drift.add_argument("--drifted", action="store_true",
                       help="all three below: +4 weeks, 3 specialisms renamed, 30%% of rows unusable")
    drift.add_argument("--target-shift", type=float, metavar="WEEKS", help="add WEEKS to every waiting time")
    drift.add_argument("--target-scale", type=float, metavar="FACTOR", help="multiply every waiting time")
    drift.add_argument("--rename-specialisms", type=int, metavar="N",
                       help='rename the first N specialisms ("Orthopedie (305)" -> "305 - Orthopedie")')
    drift.add_argument("--unusable-share", type=float, metavar="SHARE",
                       help="make this share of rows unusable (onbekend, negative or empty target, no region)")
    generate.set_defaults(func=cmd_generate)

    check = data.add_parser("check", help="the data gate: a raw export against a prepared baseline")
    check.add_argument("--input", type=Path, required=True, help="raw NZa export to check")
    check.add_argument("--baseline", type=Path, help="prepared CSV the model was trained on "
                       "(without it, only the usable share is checked)")
    check.add_argument("--min-usable", type=float, metavar="SHARE",
                       help=f"fail below this share of usable rows (default {DEFAULT_MIN_USABLE_SHARE})")
    check.add_argument("--max-drift", type=float, metavar="PSI",
                       help=f"fail above this drift, PSI of target or feature (default {DEFAULT_MAX_DRIFT})")
    check.set_defaults(func=cmd_check)

    prepare = data.add_parser("prepare", help="select features and fix missing values")
    prepare.add_argument("--input", type=Path, required=True, help="raw NZa export")
    prepare.add_argument("--output", type=Path, required=True, help="prepared CSV (UTF-8, ';')")
    prepare.set_defaults(func=cmd_prepare)
    _add_upload_parser(data)

    train = commands.add_parser("train", help="train, evaluate, register and maybe promote")
    train.add_argument("--input", type=Path, required=True, help="prepared CSV")
    train.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else .local/")
    train.add_argument("--estimator", default=DEFAULT_ESTIMATOR, choices=sorted(ESTIMATORS))
    train.add_argument("--test-size", type=float, default=0.2)
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--force", action="store_true",
                       help="register a new version even when one was trained on identical data with this configuration")
    train.set_defaults(func=cmd_train)

    # The predictor's own parser (KServe's flags and ours) reads the rest: `mlops serve --help`.
    serve = commands.add_parser("serve", help="run the KServe predictor in the foreground", add_help=False,
                                prefix_chars="\0")
    serve.add_argument("args", nargs=argparse.REMAINDER)
    serve.set_defaults(func=cmd_serve)

    monitor = commands.add_parser("monitor", help="drift and realised error of captured traffic")
    monitor.add_argument("--requests", type=Path, required=True, metavar="PATH",
                         help="captured traffic: a folder or file in the capture layout, or prediction-log lines")
    monitor.add_argument("--baseline", type=Path, required=True, help="prepared CSV the served model was trained on")
    monitor.add_argument("--labels", type=Path, help="prepared CSV of a later export: realised MAE")
    monitor.add_argument("--max-drift", type=float, metavar="PSI",
                         help=f"fail above this input or prediction drift (default {DEFAULT_MAX_DRIFT})")
    monitor.add_argument("--max-mae-ratio", type=float, metavar="R",
                         help="fail when realised MAE / hold-out MAE is above R (default 1 + the promotion margin)")
    monitor.add_argument("--tracking-uri", help="registry of the served versions (default: $MLFLOW_TRACKING_URI, "
                         "else .local/)")
    monitor.set_defaults(func=cmd_monitor)

    up = commands.add_parser("up", help="start the local platform and run the whole job")
    up.add_argument("--rows", type=_positive, default=20_000, help="rows of the generated export")
    up.add_argument("--drift-demo", action="store_true",
                    help="then send a drifted export through prepare_dataset and show the data gate stop it")
    up.set_defaults(func=cmd_up)
    commands.add_parser("status", help="show the local platform").set_defaults(func=cmd_status)
    down = commands.add_parser("down", help="stop the local platform")
    down.add_argument("--purge", action="store_true", help="also delete .local/ data")
    down.set_defaults(func=cmd_down)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from airflow_project.settings import NO_TELEMETRY_ENV

    for name, value in NO_TELEMETRY_ENV.items():
        os.environ.setdefault(name, value)  # an explicit choice of the user wins
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr,
    )
    from airflow_project.wachttijden.dataset import DataValidationError

    try:
        return args.func(args)
    except (CommandError, DataValidationError) as exc:
        print(f"mlops: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
