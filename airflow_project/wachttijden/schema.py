"""The data contract, in one place: column names, model name, file format, and the data
gate's default thresholds (light: DAG files read them at parse time for their Params)."""

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

DEFAULT_MIN_USABLE_SHARE = 0.8
"""Data gate (export_checks): an export where more than one row in five is unusable is
broken, not noisy: the NZa export loses 3-5% of rows to `onbekend`/empty waiting times in a
normal month."""
DEFAULT_MAX_DRIFT = 0.2
"""Data gate (export_checks): the largest PSI of the waiting time or a feature against the
champion's training data. Measured by `make calibrate-drift` (README "Data checks and
promotion"): exports that must pass (other seeds, NZa-shaped months 1-6 after the baseline,
+10% or +1 week for every waiting time) reach at most 0.10; the smallest drift that must be
stopped (every waiting time x1.5) is 0.27, a region gone 0.45, a renamed specialism 0.66,
weeks reported as days 7. 0.2 leaves twice the clean maximum below it and stops all of
those; it sits between PSI's usual 'moderate' (0.1) and 'significant' (0.25) lines."""
