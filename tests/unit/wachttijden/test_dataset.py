"""Reading and cleaning NZa exports, including the awkward inputs."""

from __future__ import annotations

import gzip
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_project.wachttijden import dataset
from airflow_project.wachttijden.schema import COLUMNS, FEATURES, TARGET

HEADER = "ZIEKENHUIS;ROAZ_REGIO;TYPE_ZORGINSTELLING;SPECIALISME;TYPE_WACHTTIJD;WACHTTIJD;EXTRA"


def _raw(*rows: str, header: str = HEADER, newline: str = "\r\n", encoding: str = "iso-8859-1") -> bytes:
    return newline.join([header, *rows, ""]).encode(encoding)


def _prepare(data: bytes, source: str = "raw.csv"):
    return dataset.prepare(data, source)


def test_reads_iso_8859_1_with_accents_crlf_and_extra_columns():
    data = _raw(
        "Privékliniek Velsen;SpoedZorgNet;Kliniek;Orthopedie (305);Behandeling;7;x",
        "Clinique Esthétique;Acute Zorg Oost;Ziekenhuis;Dermatologie (310);Diagnostiek;3;y",
    )
    frame = dataset.read_raw(data, "raw.csv")
    assert list(frame.columns) == list(COLUMNS)
    assert frame["SPECIALISME"].tolist() == ["Orthopedie (305)", "Dermatologie (310)"]
    assert frame[TARGET].tolist() == ["7", "3"]


def test_accented_category_values_survive_decoding():
    data = _raw("A;Région Zuid;Kliniek;Orthopedie (305);Behandeling;7;x")
    assert dataset.read_raw(data, "raw.csv")["ROAZ_REGIO"].iloc[0] == "Région Zuid"


def test_utf8_with_bom_and_lf_is_accepted():
    data = b"\xef\xbb\xbf" + _raw("A;Région Zuid;Kliniek;Urologie (306);Behandeling;4;x",
                                  newline="\n", encoding="utf-8")
    frame = dataset.read_raw(data, "bom.csv")
    assert frame["ROAZ_REGIO"].iloc[0] == "Région Zuid"
    assert frame[TARGET].iloc[0] == "4"


def test_missing_columns_are_listed_by_name_with_the_file_name():
    data = _raw("A;SpoedZorgNet;7", header="ZIEKENHUIS;ROAZ_REGIO;WACHTTIJD")
    with pytest.raises(dataset.DataValidationError) as err:
        dataset.read_raw(data, "raw/2024/01/01/wachttijden.csv")
    message = str(err.value)
    assert message.startswith("raw/2024/01/01/wachttijden.csv: missing required column(s)")
    assert "TYPE_WACHTTIJD, SPECIALISME, TYPE_ZORGINSTELLING" in message
    assert "ROAZ_REGIO" not in message.split(";")[0].split("column(s)")[1]


def test_comma_separated_file_gets_a_hint():
    data = b"WACHTTIJD,TYPE_WACHTTIJD,SPECIALISME,ROAZ_REGIO,TYPE_ZORGINSTELLING\n1,a,b,c,d\n"
    with pytest.raises(dataset.DataValidationError, match="';'-separated"):
        dataset.read_raw(data, "comma.csv")


def test_empty_file_is_an_error_naming_the_file():
    with pytest.raises(dataset.DataValidationError, match="empty.csv: file is empty"):
        dataset.read_raw(b"", "empty.csv")


def test_unknown_and_empty_targets_are_dropped_and_counted():
    data = _raw(
        "A;SpoedZorgNet;Kliniek;Orthopedie (305);Behandeling;onbekend;x",
        "A;SpoedZorgNet;Kliniek;Orthopedie (305);Behandeling;;x",
        "A;SpoedZorgNet;Kliniek;Orthopedie (305);Behandeling;-2;x",
        "A;SpoedZorgNet;Kliniek;Orthopedie (305);Behandeling;5;x",
        "A;SpoedZorgNet;Kliniek;Orthopedie (305);Behandeling;2,5;x",
    )
    cleaned, report = _prepare(data)
    assert cleaned[TARGET].tolist() == [5.0, 2.5]
    assert report.dropped_missing_target == 3
    assert (report.rows_in, report.rows_out) == (5, 2)


def test_empty_institution_type_becomes_kliniek():
    data = _raw("A;SpoedZorgNet;;Orthopedie (305);Behandeling;5;x",
                "A;SpoedZorgNet;Ziekenhuis;Orthopedie (305);Behandeling;6;x")
    cleaned, report = _prepare(data)
    assert cleaned["TYPE_ZORGINSTELLING"].tolist() == ["Kliniek", "Ziekenhuis"]
    assert report.filled_type_zorginstelling == 1


def test_rows_with_another_empty_feature_are_dropped():
    data = _raw("A;;Kliniek;Orthopedie (305);Behandeling;5;x",
                "A;SpoedZorgNet;Kliniek;Orthopedie (305);Behandeling;6;x")
    cleaned, report = _prepare(data)
    assert len(cleaned) == 1 and report.dropped_missing_feature == 1


def test_nothing_usable_after_cleaning_is_an_error():
    data = _raw("A;SpoedZorgNet;Kliniek;Orthopedie (305);Behandeling;onbekend;x")
    with pytest.raises(dataset.DataValidationError, match="raw.csv: no usable rows after cleaning"):
        _prepare(data)


def test_prepared_bytes_have_the_exact_header_and_no_index():
    data = _raw("A;SpoedZorgNet;;Orthopedie (305);Behandeling;5;x")
    cleaned, _ = _prepare(data)
    text = dataset.to_prepared_bytes(cleaned).decode("utf-8")
    assert text == (
        "WACHTTIJD;TYPE_WACHTTIJD;SPECIALISME;ROAZ_REGIO;TYPE_ZORGINSTELLING\n"
        "5;Behandeling;Orthopedie (305);SpoedZorgNet;Kliniek\n"
    )


def test_prepared_roundtrip_gives_float_target_and_string_features():
    data = _raw("A;SpoedZorgNet;;Orthopedie (305);Behandeling;5;x")
    cleaned, _ = _prepare(data)
    back = dataset.read_prepared(dataset.to_prepared_bytes(cleaned), "prep.csv")
    assert back[TARGET].dtype == "float64"
    assert back.loc[0, list(FEATURES)].tolist() == cleaned.loc[0, list(FEATURES)].tolist()


def test_read_prepared_names_the_bad_target_row():
    data = ";".join(COLUMNS).encode() + b"\n5;a;b;c;d\nabc;a;b;c;d\n"
    with pytest.raises(dataset.DataValidationError, match=r"prep.csv: column WACHTTIJD .* row 2: 'abc'"):
        dataset.read_prepared(data, "prep.csv")


def test_intermediate_roundtrip_keeps_values_as_found():
    data = _raw("A;SpoedZorgNet;;Orthopedie (305);Behandeling;onbekend;x",
                "B;Zuidwest;Ziekenhuis;Cardiologie (320);Diagnostiek; 4,5 ;y")
    selected = dataset.select_features(dataset.read_raw(data, "raw.csv"))
    back = dataset.read_intermediate(dataset.to_intermediate_bytes(selected), "mid.parquet")
    assert list(back.columns) == list(COLUMNS)
    assert back.to_dict("records") == selected.to_dict("records")
    assert back.loc[0, TARGET] == "onbekend"


def test_read_intermediate_names_file_and_problem():
    with pytest.raises(dataset.DataValidationError, match="mid.parquet: not a Parquet file"):
        dataset.read_intermediate(b"WACHTTIJD;x\n1;2\n", "mid.parquet")
    buffer = io.BytesIO()
    pq.write_table(pa.table({"WACHTTIJD": ["1"], "SPECIALISME": ["x"]}), buffer)
    with pytest.raises(dataset.DataValidationError,
                       match="mid.parquet: missing required column.*TYPE_WACHTTIJD"):
        dataset.read_intermediate(buffer.getvalue(), "mid.parquet")



def _clean_per_row(frame):
    """The cleaning rules written the plain way, row by row: what `clean` must equal."""
    import numpy as np
    import pandas as pd

    text = frame.astype(str).apply(lambda column: column.str.strip())
    target = pd.to_numeric(text[TARGET].str.replace(",", ".", regex=False), errors="coerce")
    text["TYPE_ZORGINSTELLING"] = text["TYPE_ZORGINSTELLING"].replace("", "Kliniek")
    keep = np.isfinite(target) & (target >= 0) & (text[list(FEATURES)] != "").all(axis=1)
    out = text.loc[keep, list(COLUMNS)].copy()
    out[TARGET] = target[keep].astype("float64")
    return out.reset_index(drop=True)


def test_cleaning_by_distinct_value_equals_the_rules_applied_row_by_row() -> None:
    import numpy as np
    import pandas as pd

    targets = [" 12 ", "onbekend", None, np.nan, 7, "12", " 12 ", "3,5", "", "-1", "inf", "0"]
    rows = len(targets)
    frame = pd.DataFrame({
        TARGET: targets,
        "TYPE_WACHTTIJD": ["Behandeling", " Diagnostiek", "x", "x", "x", "", "x", "x", "x", "x", "x", "x"],
        "SPECIALISME": ["Urologie (306) "] * rows,
        "ROAZ_REGIO": ["Région Zuid", "a", "b", "c", "d", "e", " ", "f", "g", "h", "i", "j"],
        "TYPE_ZORGINSTELLING": ["", "Ziekenhuis", " ", "", "Kliniek", "", "", "x", "", "", "", ""],
    }, index=range(100, 100 + rows))
    cleaned, report = dataset.clean(frame, "awkward.csv")
    pd.testing.assert_frame_equal(cleaned, _clean_per_row(frame))
    assert (report.rows_in, report.rows_out) == (rows, len(cleaned))
    assert report.dropped_empty_target == 1 and report.dropped_negative_target == 1
    assert report.dropped_target_not_a_number == 4  # onbekend, None, nan, inf
    assert report.dropped_missing_feature == 2  # an empty TYPE_WACHTTIJD, a blank ROAZ_REGIO


@pytest.mark.parametrize(("data", "named"), [
    (gzip.compress(_raw("A;SpoedZorgNet;Kliniek;Orthopedie (305);Behandeling;7;x")), "is gzip-compressed"),
    (b"PK\x03\x04" + bytes(range(256)) * 10, "is a ZIP archive"),
    (bytes(range(256)) * 20, "is binary data (NUL bytes near the start)"),
    ("\ufeff".encode("utf-16-le") + _raw("A;B;C;D;E;7;x").decode("iso-8859-1").encode("utf-16-le"), "is UTF-16"),
    (_raw("A;Acute Zorg \u2013 Oost;Kliniek;Orthopedie (305);Behandeling;7;x", encoding="cp1252"),
     "is neither UTF-8 nor ISO-8859-1: byte 0x96 on line 2 is a control character"),
])
def test_input_that_is_not_a_text_export_is_named_as_such_in_one_line(data: bytes, named: str):
    with pytest.raises(dataset.DataValidationError) as err:
        dataset.read_raw(data, "export.csv")
    message = str(err.value)
    assert message.startswith(f"export.csv: {named}"), message
    assert "\n" not in message and len(message) < 300


def test_utf8_without_a_byte_order_mark_is_read_as_utf8():
    data = _raw("A;Région Zuid;Kliniek;Urologie (306);Behandeling;4;x", newline="\n", encoding="utf-8")
    assert dataset.read_raw(data, "utf8.csv")["ROAZ_REGIO"].iloc[0] == "Région Zuid"


def test_a_long_header_is_cut_in_the_message():
    header = ";".join(f"COLUMN_{i}_{'X' * 60}" for i in range(200))
    with pytest.raises(dataset.DataValidationError) as err:
        dataset.read_raw(header.encode() + b"\n", "wide.csv")
    assert "... (200 columns)" in str(err.value) and len(str(err.value)) < 1000


def _pandas_prepared_bytes(frame) -> bytes:
    """The prepared format as pandas writes it: what the fast writer must match byte for byte."""
    return frame.loc[:, list(COLUMNS)].to_csv(sep=";", index=False, lineterminator="\n",
                                              float_format="%.10g").encode("utf-8")


@pytest.mark.parametrize("region", ["Région Zuid", 'Regio "Oost"', "Regio; West", "Regio\nNoord"])
def test_the_fast_prepared_writer_writes_what_pandas_writes(region: str, monkeypatch: pytest.MonkeyPatch):
    import pandas as pd

    frame = pd.DataFrame({TARGET: [7.0, 0.1, 1e-7, 12345678901.0, 2.5, 7.0],
                          "TYPE_WACHTTIJD": ["Behandeling"] * 6, "SPECIALISME": ["Urologie (306)"] * 6,
                          "ROAZ_REGIO": [region, "Acute Zorg Oost", region, "x", "y", "z"],
                          "TYPE_ZORGINSTELLING": ["Kliniek"] * 6})
    data = dataset.to_prepared_bytes(frame)
    assert data == _pandas_prepared_bytes(frame)
    back = dataset.read_prepared(data, "prepared.csv")
    monkeypatch.setattr(dataset, "_read_prepared_fast", lambda data: None)
    assert back.equals(dataset.read_prepared(data, "prepared.csv"))  # as the pandas reader reads it
    assert back.iloc[:, 1:].equals(frame.iloc[:, 1:])


def test_the_fast_prepared_reader_reads_what_the_pandas_reader_reads(monkeypatch: pytest.MonkeyPatch):
    cases = [
        ";".join(COLUMNS).encode() + b"\n7;Behandeling;Urologie (306);R\xc3\xa9gio;Kliniek\n2.5;a;b;c;d\n",
        ";".join(COLUMNS).encode() + b"\r\n7;Behandeling;Urologie (306);Regio;Kliniek\r\n",
        ";".join(COLUMNS).encode() + b'\n7;"Behandeling";"Uro; logie";Regio;Kliniek\n',
        ";".join(COLUMNS).encode() + b"\n7; Behandeling;Urologie (306);Regio;Kliniek\n",  # pandas skips the space
    ]
    fast = [dataset.read_prepared(data, "p.csv") for data in cases]
    monkeypatch.setattr(dataset, "_read_prepared_fast", lambda data: None)
    for data, frame in zip(cases, fast):
        assert frame.equals(dataset.read_prepared(data, "p.csv")), data


@pytest.mark.parametrize("data", [
    _raw("Privékliniek Velsen;SpoedZorgNet;Kliniek;Orthopedie (305);Behandeling;7;x",
         "Clinique Esthétique;Acute Zorg Oost;;Dermatologie (310);Diagnostiek;onbekend;y"),
    _raw('A;"Regio; West";Kliniek;"Orthopedie (305)";Behandeling;"3,5";x', newline="\n", encoding="utf-8"),
    _raw("A; SpoedZorgNet ;Kliniek; Urologie (306);Behandeling; 4;x", "B;;Kliniek;Urologie (306);Behandeling;2;x"),
    _raw("A;SpoedZorgNet;Kliniek;Urologie (306);Behandeling;4;x;one too many"),  # pandas' reader decides
    _raw("A;SpoedZorgNet;Kliniek;Urologie (306);Behandeling;4;x", header=HEADER.replace("EXTRA", '"EXTRA"')),
])
def test_the_fast_raw_reader_prepares_what_the_pandas_reader_prepares(data: bytes, monkeypatch: pytest.MonkeyPatch):
    def prepared(raw: bytes):
        try:
            return dataset.clean(dataset.select_features(dataset.read_raw(raw, "raw.csv")), "raw.csv")
        except dataset.DataValidationError as exc:
            return str(exc)

    fast = prepared(data)
    monkeypatch.setattr(dataset, "_read_raw_fast", lambda utf8: None)
    slow = prepared(data)
    if isinstance(slow, str):
        assert fast == slow
    else:
        assert fast[0].equals(slow[0]) and fast[1] == slow[1]
