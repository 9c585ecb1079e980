"""The predictor's command line (`mlops serve`, `python -m airflow_project.serving`) and the
version guard of the KServe/uvicorn adaptations."""

from __future__ import annotations

import pytest

from airflow_project.serving import kserve_compat
from airflow_project.serving.cli import parse_args, server_options


def test_our_spellings_and_kserves_own_flags_are_one_parser():
    args = parse_args(["--model-uri", "models:/wachttijden/3", "--name", "w", "--port", "8100",
                       "--tracking-uri", "http://mlflow", "--event-loop", "asyncio", "--timeout-keep-alive", "5"])
    assert (args.model_uri, args.model_name, args.http_port, args.tracking_uri) == (
        "models:/wachttijden/3", "w", 8100, "http://mlflow")
    assert server_options(args)["event_loop"] == "asyncio"
    assert server_options(args)["timeout_keep_alive"] == 5
    kserve = parse_args(["--model_uri", "models:/wachttijden@champion", "--model_name", "x", "--http_port", "9"])
    assert (kserve.model_name, kserve.http_port) == ("x", 9)


def test_defaults_are_the_predictors_not_kserves():
    args = parse_args(["--model-uri", "models:/wachttijden/3"])
    assert (args.model_name, args.http_port) == ("wachttijden", 8080)
    assert {k: server_options(args)[k] for k in ("enable_grpc", "workers", "enable_docs_url")} == {
        "enable_grpc": False, "workers": 1, "enable_docs_url": False}


@pytest.mark.parametrize(("argv", "message"), [
    (["--model-uri", "models:/wachttijden/3", "--no-such-flag", "1"], "unrecognized arguments: --no-such-flag"),
    (["--name", "w"], "the following arguments are required: --model-uri"),
    (["--model-uri", "models:/wachttijden/3", "--workers", "2"], "--workers: the predictor serves from one process"),
])
def test_unknown_or_missing_flags_fail_loudly(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_mlops_serve_hands_every_argument_to_the_predictor_cli(monkeypatch):
    from airflow_project.local import cli
    from airflow_project.serving import server

    seen = {}
    monkeypatch.setattr(server, "serve", lambda *args, **kwargs: seen.update(args=args, kwargs=kwargs))
    assert cli.main(["serve", "--model-uri", "models:/wachttijden@champion", "--name", "wachttijden",
                     "--port", "8100", "--max-body-bytes", "1024"]) == 0
    assert seen["args"][:3] == ("models:/wachttijden@champion", "wachttijden", 8100)
    assert seen["kwargs"]["max_body_bytes"] == 1024


def test_mlops_serve_rejects_what_the_predictor_does_not_know(capsys):
    from airflow_project.local import cli

    with pytest.raises(SystemExit):
        cli.main(["serve", "--model-uri", "models:/wachttijden/1", "--modle-name", "typo"])
    err = capsys.readouterr().err
    assert err.startswith("usage: mlops serve") and "unrecognized arguments: --modle-name" in err


def test_the_adaptations_refuse_other_kserve_or_uvicorn_releases(monkeypatch):
    kserve_compat.check_versions()  # the installed ones are what they were written for
    versions = {"kserve": "0.22.0", "uvicorn": "0.54.0"}
    monkeypatch.setattr(kserve_compat.metadata, "version", versions.__getitem__)
    with pytest.raises(kserve_compat.IncompatibleVersion, match=r"written for kserve 0\.21\.x, but kserve 0\.22\.0"):
        kserve_compat.apply()
    versions["kserve"] = "0.21.3"
    kserve_compat.check_versions()  # another patch release of the same minor one is fine
    versions["uvicorn"] = "0.540.0"
    with pytest.raises(kserve_compat.IncompatibleVersion, match="uvicorn"):
        kserve_compat.check_versions()
