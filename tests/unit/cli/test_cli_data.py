"""`mlops data generate|prepare` through the real console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

MLOPS = str(Path(sys.executable).parent / "mlops")
HEADER = "WACHTTIJD;TYPE_WACHTTIJD;SPECIALISME;ROAZ_REGIO;TYPE_ZORGINSTELLING"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MLOPS, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "raw.csv"
    result = run("data", "generate", "--rows", "2000", "--seed", "4", "--output", str(path))
    assert result.returncode == 0, result.stderr
    return path


def test_generate_writes_the_raw_format(raw: Path):
    data = raw.read_bytes()
    assert data.count(b"\r\n") == 2001
    assert b";WACHTTIJD;" in data.split(b"\r\n")[0]


def test_prepare_writes_the_prepared_contract(raw: Path, tmp_path: Path):
    out = tmp_path / "prepared.csv"
    result = run("data", "prepare", "--input", str(raw), "--output", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == HEADER
    assert 1900 < len(lines) - 1 < 2000  # ~3% dropped
    assert all(line.count(";") == 4 for line in lines)
    assert not any(line.split(";")[0] == "" for line in lines[1:])
    assert result.stdout == ""


def test_prepare_error_names_the_problem_and_creates_nothing(tmp_path: Path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"ROAZ_REGIO;WACHTTIJD\r\nSpoedZorgNet;5\r\n")
    out = tmp_path / "out" / "prepared.csv"
    result = run("data", "prepare", "--input", str(bad), "--output", str(out))
    assert result.returncode != 0
    assert f"{bad}: missing required column(s) TYPE_WACHTTIJD, SPECIALISME" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert not list(tmp_path.rglob("*.tmp"))


def test_prepare_missing_input_is_a_clear_error(tmp_path: Path):
    result = run("data", "prepare", "--input", str(tmp_path / "nope.csv"), "--output",
                 str(tmp_path / "o.csv"))
    assert result.returncode != 0
    assert "nope.csv: input file does not exist" in result.stderr


def test_prepare_keeps_an_existing_output_when_it_fails(tmp_path: Path):
    out = tmp_path / "prepared.csv"
    out.write_text("previous\n")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(HEADER.replace(";", ";").encode() + b"\r\nonbekend;a;b;c;d\r\n")
    result = run("data", "prepare", "--input", str(bad), "--output", str(out))
    assert result.returncode != 0 and "no usable rows after cleaning" in result.stderr
    assert out.read_text() == "previous\n"


# --------------------------------------------------------------------------- mlops data check
CHECK_KEYS = {"usable_share", "drift", "new_categories", "missing_categories", "passed", "reasons"}


@pytest.fixture(scope="module")
def baseline(raw: Path) -> Path:
    out = raw.parent / "baseline.csv"
    assert run("data", "prepare", "--input", str(raw), "--output", str(out)).returncode == 0
    return out


def _generate(path: Path, *flags: str, seed: str = "5") -> Path:
    result = run("data", "generate", "--rows", "2000", "--seed", seed, "--output", str(path), *flags)
    assert result.returncode == 0, result.stderr
    return path


def test_check_passes_a_clean_export_with_one_json_line(baseline: Path, tmp_path: Path):
    clean = _generate(tmp_path / "clean.csv")
    result = run("data", "check", "--input", str(clean), "--baseline", str(baseline))
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    report = json.loads(line)
    assert CHECK_KEYS <= set(report)
    assert report["passed"] is True and report["reasons"] == []
    assert 0.9 < report["usable_share"] < 1.0 and report["drift"] < 0.2
    assert result.stderr == ""


def test_check_fails_a_drifted_export_naming_measures_on_stderr(baseline: Path, tmp_path: Path):
    drifted = _generate(tmp_path / "drifted.csv", "--drifted")
    result = run("data", "check", "--input", str(drifted), "--baseline", str(baseline))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["passed"] is False and len(report["reasons"]) == 2
    assert report["new_categories"]["SPECIALISME"]["301 - Oogheelkunde"] > 0
    assert "Oogheelkunde (301)" in report["missing_categories"]["SPECIALISME"]
    assert "usable_share 0.6" in result.stderr and "below min_usable_share 0.800" in result.stderr
    assert "above max_drift 0.200" in result.stderr


def test_check_thresholds_come_from_the_flags(baseline: Path, tmp_path: Path):
    shifted = _generate(tmp_path / "shifted.csv", "--target-shift", "1")
    strict = run("data", "check", "--input", str(shifted), "--baseline", str(baseline), "--max-drift", "0.01")
    assert strict.returncode == 1 and "above max_drift 0.010" in strict.stderr
    unusable = _generate(tmp_path / "unusable.csv", "--unusable-share", "0.4")
    lenient = run("data", "check", "--input", str(unusable), "--min-usable", "0.5")
    assert lenient.returncode == 0, lenient.stderr
    report = json.loads(lenient.stdout)
    assert report["drift"] is None and report["baseline"]["applicable"] is False


def test_check_bad_input_is_an_error_not_a_gate_failure(baseline: Path, tmp_path: Path):
    result = run("data", "check", "--input", str(tmp_path / "nope.csv"), "--baseline", str(baseline))
    assert result.returncode == 2 and "nope.csv: input file does not exist" in result.stderr
    result = run("data", "check", "--input", str(baseline), "--min-usable", "2")
    assert result.returncode == 2 and "min_usable_share must be between 0 and 1" in result.stderr


def test_generate_refuses_a_drift_out_of_range(tmp_path: Path):
    result = run("data", "generate", "--rows", "10", "--unusable-share", "1.5", "--output", str(tmp_path / "x.csv"))
    assert result.returncode == 2 and "unusable_share must be between 0 and 1" in result.stderr
    assert not (tmp_path / "x.csv").exists()
