"""`mlops data generate|prepare` through the real console script."""

from __future__ import annotations

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
