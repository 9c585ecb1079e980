"""The data contract, in one place: column names, model name, file format."""

from __future__ import annotations

TARGET = "WACHTTIJD"
"""Waiting time in weeks; empty or non-numeric in a raw export means 'unknown'."""

FEATURES: tuple[str, ...] = (
    "TYPE_WACHTTIJD",
    "SPECIALISME",
    "ROAZ_REGIO",
    "TYPE_ZORGINSTELLING",
)
COLUMNS: tuple[str, ...] = (TARGET, *FEATURES)

DEFAULT_TYPE_ZORGINSTELLING = "Kliniek"
"""An empty TYPE_ZORGINSTELLING in the NZa export means an independent clinic."""

MODEL_NAME = "wachttijden"
"""Name of the registered model in MLflow and of the served model in KServe."""

RAW_SEPARATOR = ";"
RAW_ENCODING = "iso-8859-1"
PREPARED_SEPARATOR = ";"
PREPARED_ENCODING = "utf-8"
