"""Request bodies drawn from the real NZa category lists (deterministic, stdlib only).

The same pool is used by the locustfile and by the benchmark, so every target sees the
same requests. A small share of rows carries a value the model has never seen (a new
SPECIALISME, an empty TYPE_ZORGINSTELLING is not sent: the API contract wants strings),
as production traffic does; the predictor answers those too.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

from airflow_project.wachttijden.categories import (
    ROAZ_REGIOS,
    SPECIALISMEN,
    TYPES_WACHTTIJD,
    TYPES_ZORGINSTELLING,
)
from airflow_project.wachttijden.schema import FEATURES

UNSEEN_SPECIALISME = "Nieuw specialisme (999)"
UNSEEN_SHARE = 0.02


def random_row(rng: random.Random) -> dict[str, str]:
    specialisme = UNSEEN_SPECIALISME if rng.random() < UNSEEN_SHARE else rng.choice(SPECIALISMEN)
    return {
        "TYPE_WACHTTIJD": rng.choice(TYPES_WACHTTIJD),
        "SPECIALISME": specialisme,
        "ROAZ_REGIO": rng.choice(ROAZ_REGIOS),
        "TYPE_ZORGINSTELLING": rng.choice(TYPES_ZORGINSTELLING),
    }


def rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [random_row(rng) for _ in range(n)]


def v1_body(batch: Sequence[dict[str, str]]) -> dict:
    """KServe V1: `{"instances": [{feature: value}, ...]}`."""
    return {"instances": [dict(r) for r in batch]}


def v2_body(batch: Sequence[dict[str, str]]) -> dict:
    """Open Inference Protocol, pandas form: one BYTES input per feature column."""
    return {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": f, "datatype": "BYTES", "shape": [len(batch)], "data": [r[f] for r in batch]}
            for f in FEATURES
        ],
    }


def pool(size: int = 256, rows_per_request: int = 1, seed: int = 20251126) -> list[list[dict[str, str]]]:
    """`size` batches of `rows_per_request` rows each (deterministic for a seed)."""
    all_rows = rows(size * rows_per_request, seed)
    return [all_rows[i * rows_per_request:(i + 1) * rows_per_request] for i in range(size)]


def encoded(batches: Sequence[Sequence[dict[str, str]]], protocol: str) -> list[bytes]:
    """Pre-serialized bodies (compact JSON) so the load generator does no encoding work."""
    make = {"v1": v1_body, "v2": v2_body}[protocol]
    return [json.dumps(make(b), separators=(",", ":"), ensure_ascii=False).encode() for b in batches]
