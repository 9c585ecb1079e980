"""Reading, validating and cleaning the NZa waiting-time export, in its three formats: raw
(the public export), intermediate (the hand-off between the two prepare tasks, Parquet) and
prepared (what training reads). The README ("Data flow") describes each.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .schema import (
    COLUMNS,
    DEFAULT_TYPE_ZORGINSTELLING,
    FEATURES,
    PREPARED_ENCODING,
    PREPARED_SEPARATOR,
    RAW_ENCODING,
    RAW_SEPARATOR,
    TARGET,
)

log = logging.getLogger(__name__)

_UTF8_BOM = b"\xef\xbb\xbf"


class DataValidationError(ValueError):
    """The input does not satisfy the data contract; the message names file and problem."""


@dataclass(frozen=True)
class CleaningReport:
    """What cleaning did to an export: rows in and out, and why each dropped row went."""

    rows_in: int
    rows_out: int
    dropped_empty_target: int
    dropped_target_not_a_number: int
    dropped_negative_target: int
    dropped_missing_feature: int
    filled_type_zorginstelling: int

    @property
    def dropped_missing_target(self) -> int:
        """Rows without a usable WACHTTIJD (empty, not a number, or negative)."""
        return self.dropped_empty_target + self.dropped_target_not_a_number + self.dropped_negative_target


_NOT_TEXT: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip-compressed (decompress it first: gunzip)"),
    (b"PK\x03\x04", "a ZIP archive (an .xlsx workbook? export the sheet as ';'-separated CSV)"),
    (b"\xff\xfe", "UTF-16 text (save it as UTF-8 or ISO-8859-1)"),
    (b"\xfe\xff", "UTF-16 text (save it as UTF-8 or ISO-8859-1)"),
)
_C1_CONTROL = re.compile(rb"[\x80-\x9f]")
"""Bytes ISO-8859-1 maps to control characters: no text export has them, Windows-1252 does."""
_ALL_BUT_C1 = bytes(b for b in range(256) if not 0x80 <= b <= 0x9F)
_UTF8_PROBE = 1 << 20
"""How much of a file decides whether it may be UTF-8: CPython takes ~0.3 s to fail a
150 MB decode even when the first non-UTF-8 byte is near the start."""


def _not_text(data: bytes, source: str) -> None:
    """Refuse, in one line, what is not a text export at all (instead of decoding it into a
    screenful of mojibake 'columns')."""
    for magic, what in _NOT_TEXT:
        if data.startswith(magic):
            raise DataValidationError(f"{source}: is {what}, not a ';'-separated text export")
    if b"\x00" in data[:8192]:
        raise DataValidationError(f"{source}: is binary data (NUL bytes near the start), not a ';'-separated "
                                  "text export")


def _may_be_utf8(data: bytes) -> bool:
    probe = data[:_UTF8_PROBE]
    try:
        probe.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(probe) - 3  # a character cut at the probe's end
    return True


def _raw_utf8(data: bytes, source: str) -> bytes:
    """A raw export as UTF-8 bytes: UTF-8 (with or without byte order mark, which is dropped)
    or ISO-8859-1, the NZa export's own (transcoded); anything else is refused, naming it."""
    if data.startswith(_UTF8_BOM):
        try:
            data[len(_UTF8_BOM):].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataValidationError(
                f"{source}: starts with a UTF-8 byte order mark but is not valid UTF-8 "
                f"(byte offset {exc.start + len(_UTF8_BOM)})"
            ) from exc
        return data[len(_UTF8_BOM):]
    _not_text(data, source)
    if _may_be_utf8(data):  # valid UTF-8 with accents is (practically) never ISO-8859-1 text
        try:
            data.decode("utf-8")
            return data
        except UnicodeDecodeError:
            pass
    control = _C1_CONTROL.search(data) if data.translate(None, _ALL_BUT_C1) else None  # translate: C speed
    if control is not None:
        line = data.count(b"\n", 0, control.start()) + 1
        raise DataValidationError(
            f"{source}: is neither UTF-8 nor ISO-8859-1: byte 0x{data[control.start()]:02x} on line {line} is a "
            "control character in ISO-8859-1 (Windows-1252 text?); save the export as UTF-8 or ISO-8859-1"
        )
    return data.decode(RAW_ENCODING).encode("utf-8")


def _header(text: str, separator: str) -> list[str]:
    first_line = text.split("\n", 1)[0].rstrip("\r")
    return [name.strip().strip('"') for name in first_line.split(separator)]


def _require_columns(header: list[str], source: str, separator: str | None = None) -> None:
    if header == [""]:
        raise DataValidationError(f"{source}: file is empty (no header line)")
    missing = [column for column in COLUMNS if column not in header]
    if missing:
        hint = ""
        if separator and len(header) == 1 and ("," in header[0] or "\t" in header[0]):
            hint = f" (is it {separator!r}-separated? the header is a single column)"
        raise DataValidationError(
            f"{source}: missing required column(s) {', '.join(missing)}{hint}; "
            f"found columns: {_shown(header)}"
        )


def _shown(header: list[str], names: int = 15, width: int = 40) -> str:
    """The header for a message: at most `names` names of at most `width` characters."""
    if not any(header):
        return "(none)"
    cut = [name if len(name) <= width else name[: width - 3] + "..." for name in header[:names]]
    more = f", ... ({len(header)} columns)" if len(header) > names else ""
    return ", ".join(cut) + more


def _read_columns(text: str, source: str, separator: str) -> pd.DataFrame:
    header = _header(text, separator)
    _require_columns(header, source, separator)
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=separator,
            usecols=lambda name: name.strip().strip('"') in COLUMNS,
            dtype=str,
            keep_default_na=False,
            skipinitialspace=True,
        )
    except pd.errors.ParserError as exc:
        raise DataValidationError(f"{source}: cannot parse as {separator!r}-separated: {exc}") from exc
    frame.columns = [str(c).strip().strip('"') for c in frame.columns]
    return frame.loc[:, list(COLUMNS)]


def _first_line(utf8: bytes) -> str:
    return utf8.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", errors="replace")


def _read_raw_fast(utf8: bytes) -> pd.DataFrame | None:
    """The COLUMNS of a raw export through pyarrow's CSV reader (1M rows: ~1 s instead of
    pandas' ~2 s, same run), when its header names the columns plainly (no quotes or spaces
    around a name, none twice) and every row parses; None for anything else, which pandas'
    reader then reads, with its messages. Values are as found: pandas' reader also skips a
    space after a separator, which cleaning strips anyway."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    names = _first_line(utf8).split(RAW_SEPARATOR)
    if len(set(names)) != len(names) or any(name != name.strip().strip('"') for name in names):
        return None
    try:
        table = pcsv.read_csv(io.BytesIO(utf8), parse_options=pcsv.ParseOptions(delimiter=RAW_SEPARATOR),
                              convert_options=pcsv.ConvertOptions(
                                  include_columns=list(COLUMNS), column_types={name: pa.string() for name in COLUMNS},
                                  strings_can_be_null=False, quoted_strings_can_be_null=False))
    except pa.ArrowInvalid:
        return None
    return table.to_pandas().loc[:, list(COLUMNS)]


def read_raw(data: bytes, source: str) -> pd.DataFrame:
    """The COLUMNS of a raw NZa export as strings (empty cells are '')."""
    utf8 = _raw_utf8(data, source)
    _require_columns([name.strip().strip('"') for name in _first_line(utf8).split(RAW_SEPARATOR)], source,
                     RAW_SEPARATOR)
    fast = _read_raw_fast(utf8)
    return fast if fast is not None else _read_columns(utf8.decode("utf-8"), source, RAW_SEPARATOR)


def select_features(raw: pd.DataFrame) -> pd.DataFrame:
    """Keep the target and the four features, in contract order, values as found."""
    return raw.loc[:, list(COLUMNS)].reset_index(drop=True)


@dataclass(frozen=True)
class _Distinct:
    """A column as text: its distinct values, stripped, and each row's index into them.

    pandas' string methods and object comparisons loop in Python per row; an export repeats
    a few hundred distinct values over a million rows, so cleaning works on the distinct
    values and spreads results back with integer indexing (cProfile, 1M rows: per-row
    `.str.strip` took 2.4 s of ~4.6 s; after stripping per distinct value, the per-row
    `== ""` comparisons and frame copies still took ~1 s of ~2 s; now ~0.7 s in all)."""

    codes: np.ndarray
    values: pd.Series

    @classmethod
    def of(cls, column: pd.Series) -> _Distinct:
        codes, distinct = pd.factorize(column.astype(str))
        return cls(codes, pd.Series(distinct, dtype=object).str.strip())

    def per_row(self, per_value: Any) -> np.ndarray:
        return np.asarray(per_value)[self.codes]

    def empty(self) -> np.ndarray:
        return self.per_row((self.values == "").to_numpy())


def clean(frame: pd.DataFrame, source: str) -> tuple[pd.DataFrame, CleaningReport]:
    """Drop rows without a usable target, fill the institution type, type the target.

    - WACHTTIJD empty, not a (finite) number ("onbekend"), or negative: row dropped.
    - TYPE_ZORGINSTELLING empty: "Kliniek" (the NZa leaves it empty for clinics).
    - any other feature empty: row dropped (a prediction needs all four).
    Values are stripped of surrounding white space; a decimal comma is a decimal point.
    Each dropped row is counted under its first reason, in that order. The one definition
    of a usable row: the data checks (export_checks) count with it too. May return no rows.
    """
    rows_in = len(frame)
    text_target = _Distinct.of(frame[TARGET])
    numbers = pd.to_numeric(text_target.values.str.replace(",", ".", regex=False), errors="coerce")
    target = text_target.per_row(numbers.to_numpy(dtype="float64"))
    empty_target = text_target.empty()
    finite = np.isfinite(target)
    not_a_number = ~empty_target & ~finite
    negative = finite & (target < 0)
    has_target = ~(empty_target | not_a_number | negative)

    features = {name: _Distinct.of(frame[name]) for name in FEATURES}
    institution = features["TYPE_ZORGINSTELLING"]
    empty_type = institution.empty()
    features["TYPE_ZORGINSTELLING"] = _Distinct(
        institution.codes, institution.values.mask(institution.values == "", DEFAULT_TYPE_ZORGINSTELLING))
    has_features = ~np.logical_or.reduce([column.empty() for column in features.values()])

    keep = has_target & has_features
    cleaned = pd.DataFrame({
        TARGET: target[keep],
        **{name: column.values.to_numpy(dtype=object)[column.codes[keep]] for name, column in features.items()},
    }).loc[:, list(COLUMNS)]
    report = CleaningReport(
        rows_in=rows_in,
        rows_out=len(cleaned),
        dropped_empty_target=int(empty_target.sum()),
        dropped_target_not_a_number=int(not_a_number.sum()),
        dropped_negative_target=int(negative.sum()),
        dropped_missing_feature=int((has_target & ~has_features).sum()),
        filled_type_zorginstelling=int((empty_type & keep).sum()),
    )
    log.info(
        "%s: kept %d of %d rows; dropped %d with an empty %s, %d not a number, %d negative, "
        "%d with an empty feature; filled %d empty TYPE_ZORGINSTELLING with %r",
        source, report.rows_out, rows_in, report.dropped_empty_target, TARGET,
        report.dropped_target_not_a_number, report.dropped_negative_target,
        report.dropped_missing_feature, report.filled_type_zorginstelling, DEFAULT_TYPE_ZORGINSTELLING,
    )
    return cleaned, report


def fix_missing_values(frame: pd.DataFrame, source: str) -> tuple[pd.DataFrame, CleaningReport]:
    """`clean`, and an error when nothing is left: training on nothing must not look like success."""
    cleaned, report = clean(frame, source)
    if cleaned.empty:
        raise DataValidationError(
            f"{source}: no usable rows after cleaning ({report.rows_in} rows read, "
            f"{report.dropped_missing_target} without a numeric {TARGET}, "
            f"{report.dropped_missing_feature} with an empty feature)"
        )
    return cleaned, report


def prepare(raw: bytes, source: str) -> tuple[pd.DataFrame, CleaningReport]:
    """A raw export, prepared: the contract's columns, rows a model can learn from."""
    return fix_missing_values(select_features(read_raw(raw, source)), source)


def digest(frame: pd.DataFrame) -> str:
    """A digest of every row of a prepared frame (its COLUMNS, values and row order): equal
    digests mean the same training data. ~0.2 s per million rows (pandas hashes each
    distinct text once)."""
    rows = pd.util.hash_pandas_object(frame.loc[:, list(COLUMNS)], index=False).to_numpy()
    return hashlib.sha256(";".join(COLUMNS).encode() + rows.tobytes()).hexdigest()[:16]


PREPARED_FLOAT_FORMAT = "%.10g"
PREPARED_HEADER = PREPARED_SEPARATOR.join(COLUMNS)


def to_prepared_bytes(frame: pd.DataFrame) -> bytes:
    """The prepared format: UTF-8, `;`, header exactly COLUMNS, LF, no index.

    Written by pyarrow's CSV writer, byte for byte what pandas' `to_csv` writes: pandas
    formats every float in Python (~2 s per million rows; this takes ~0.4 s), so the target
    is formatted once per distinct value here. A value that needs quoting (a `;`, a quote, a
    line break) is refused by that writer without quoting; then pandas writes the file.
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv

    frame = frame.loc[:, list(COLUMNS)]
    distinct, codes = np.unique(frame[TARGET].to_numpy(dtype="float64"), return_inverse=True)
    target = np.array([PREPARED_FLOAT_FORMAT % value for value in distinct], dtype=object)[codes.reshape(-1)]
    table = pa.table({TARGET: pa.array(target, type=pa.string()),
                      **{name: pa.array(frame[name], type=pa.string()) for name in FEATURES}})
    buffer = io.BytesIO()
    buffer.write((PREPARED_HEADER + "\n").encode(PREPARED_ENCODING))
    try:
        pcsv.write_csv(table, buffer, pcsv.WriteOptions(include_header=False, delimiter=PREPARED_SEPARATOR,
                                                        quoting_style="none"))
    except pa.ArrowInvalid:  # a value with a separator, quote or line break: pandas quotes it
        return frame.to_csv(sep=PREPARED_SEPARATOR, index=False, lineterminator="\n",
                            float_format=PREPARED_FLOAT_FORMAT).encode(PREPARED_ENCODING)
    return buffer.getvalue()


def to_intermediate_bytes(frame: pd.DataFrame) -> bytes:
    """The intermediate stage: COLUMNS as strings, values as found, as Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({name: pa.array(frame[name], type=pa.string()) for name in COLUMNS})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def read_intermediate(data: bytes, source: str) -> pd.DataFrame:
    """A file written by to_intermediate_bytes; COLUMNS as strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise DataValidationError(
            f"{source}: not a Parquet file of the intermediate stage ({exc})"
        ) from exc
    _require_columns(table.column_names, source)
    return table.select(list(COLUMNS)).cast(
        pa.schema([(name, pa.string()) for name in COLUMNS])
    ).to_pandas()


def _read_prepared_fast(data: bytes) -> pd.DataFrame | None:
    """What `read_prepared` reads, through pyarrow's CSV reader (~2x pandas' on a million
    rows), for a file in exactly the form `to_prepared_bytes` writes: that header, a number
    in every target cell, no value starting with a space. None for anything else, which the
    pandas reader then reads, with its messages for what is wrong."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    if not data.startswith((PREPARED_HEADER + "\n").encode()) and not data.startswith((PREPARED_HEADER + "\r\n").encode()):
        return None
    try:
        table = pcsv.read_csv(io.BytesIO(data), parse_options=pcsv.ParseOptions(delimiter=PREPARED_SEPARATOR),
                              convert_options=pcsv.ConvertOptions(
                                  column_types={TARGET: pa.float64(), **{name: pa.string() for name in FEATURES}},
                                  strings_can_be_null=False, quoted_strings_can_be_null=False))
    except pa.ArrowInvalid:
        return None
    if table.num_rows == 0 or table.column(TARGET).null_count:
        return None
    if any(pc.any(pc.starts_with(table.column(name), " ")).as_py() for name in FEATURES):
        return None  # pandas' reader skips the initial space: let it
    return table.to_pandas()


def read_prepared(data: bytes, source: str) -> pd.DataFrame:
    """A prepared file with a float target; validates header and target."""
    fast = _read_prepared_fast(data)
    if fast is not None:
        return fast
    try:
        text = data.decode(PREPARED_ENCODING)
    except UnicodeDecodeError as exc:
        raise DataValidationError(f"{source}: must be UTF-8 ({exc})") from exc
    frame = _read_columns(text, source, PREPARED_SEPARATOR)
    target = pd.to_numeric(frame[TARGET], errors="coerce")
    bad = target.isna()
    if bad.any():
        first = int(bad.idxmax())
        raise DataValidationError(
            f"{source}: column {TARGET} has {int(bad.sum())} non-numeric value(s), first at data "
            f"row {first + 1}: {frame[TARGET].iloc[first]!r} (was the file prepared?)"
        )
    if frame.empty:
        raise DataValidationError(f"{source}: no data rows")
    frame[TARGET] = target.astype("float64")
    return frame
