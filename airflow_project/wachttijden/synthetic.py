"""Synthetic NZa waiting-time exports, in the exact raw format.

The waiting time depends on the features (specialism, kind of wait, region,
institution type) plus noise, so a model trained on it has a measurable
advantage over a mean predictor and tests can assert on model quality.

The drift options make an export the data checks must stop (export_checks): a shifted or
scaled waiting time, specialisms renamed the way a format change would ("Orthopedie
(305)" -> "305 - Orthopedie"), and a share of rows made unusable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .categories import ROAZ_REGIOS, SPECIALISMEN, TYPES_WACHTTIJD, TYPES_ZORGINSTELLING
from .schema import RAW_ENCODING, RAW_SEPARATOR

# Column order of the NZa export; WACHTTIJD and the features sit among
# columns the pipeline must ignore.
RAW_COLUMNS: tuple[str, ...] = (
    "PEILDATUM",
    "ZORGINSTELLING_AGB",
    "ZORGINSTELLING_NAAM",
    "LOCATIE_NAAM",
    "ROAZ_REGIO",
    "TYPE_ZORGINSTELLING",
    "SPECIALISME_CODE",
    "SPECIALISME",
    "TYPE_WACHTTIJD",
    "WACHTTIJD",
    "BRON",
)

_INSTITUTIONS: tuple[str, ...] = (
    "Ziekenhuis Gelderse Vallei",
    "Privékliniek Velsen",
    "Medisch Centrum Leeuwarden",
    "Sint Anna Ziekenhuis",
    "Zuyderland Medisch Centrum",
    "Clinique Esthétique Maastricht",
    "Rijnstate",
    "Oogkliniek Noord-Holland",
)
_TYPE_FACTOR = {"Polikliniekbezoek": 1.0, "Diagnostiek": 0.6, "Behandeling": 1.8}


@dataclass(frozen=True)
class SyntheticConfig:
    rows: int = 10_000
    seed: int = 42
    missing_target_share: float = 0.03
    missing_institution_type_share: float = 0.05
    noise_weeks: float = 1.0
    peildatum: str = "2024-01-01"
    # Drift, for exports the data gate must stop (all off by default).
    target_shift_weeks: float = 0.0
    target_scale: float = 1.0
    renamed_specialisms: int = 0
    unusable_share: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.renamed_specialisms <= len(SPECIALISMEN):
            raise ValueError(f"renamed_specialisms must be between 0 and {len(SPECIALISMEN)}, "
                             f"got {self.renamed_specialisms}")
        if not 0.0 <= self.unusable_share <= 1.0:
            raise ValueError(f"unusable_share must be between 0 and 1, got {self.unusable_share}")
        if self.target_scale <= 0:
            raise ValueError(f"target_scale must be above 0, got {self.target_scale}")


DRIFTED = SyntheticConfig(target_shift_weeks=4.0, renamed_specialisms=3, unusable_share=0.3)
"""`mlops data generate --drifted`: every gated measure over its default threshold."""

# How an unusable row is broken, in turn: each is a drop reason of dataset.clean.
_UNUSABLE_TARGETS = ("onbekend", "-1", "")


def renamed(specialisme: str) -> str:
    """A specialism as a changed export format would name it: "305 - Orthopedie"."""
    name, _, code = specialisme.rpartition(" (")
    return f"{code.rstrip(')')} - {name}"


def generate(config: SyntheticConfig = SyntheticConfig()) -> pd.DataFrame:
    """A raw export as a DataFrame of strings (empty cells are '')."""
    if config.rows < 1:
        raise ValueError(f"rows must be at least 1, got {config.rows}")
    rng = np.random.default_rng(config.seed)
    n = config.rows
    spec_idx = rng.integers(len(SPECIALISMEN), size=n)
    region_idx = rng.integers(len(ROAZ_REGIOS), size=n)
    type_idx = rng.integers(len(TYPES_WACHTTIJD), size=n)
    inst_type_idx = rng.choice(len(TYPES_ZORGINSTELLING), size=n, p=[0.75, 0.25])

    # Fixed per-category effects (seeded independently of the row seed so the
    # relationship is the same in every generated file).
    effects = np.random.default_rng(20240101)
    spec_base = effects.uniform(2.0, 12.0, size=len(SPECIALISMEN))
    region_offset = effects.uniform(-1.0, 2.5, size=len(ROAZ_REGIOS))
    type_factor = np.array([_TYPE_FACTOR[t] for t in TYPES_WACHTTIJD])
    inst_factor = np.array([1.0 if t == "Ziekenhuis" else 0.7 for t in TYPES_ZORGINSTELLING])

    weeks = (spec_base[spec_idx] * type_factor[type_idx] + region_offset[region_idx])
    weeks = weeks * inst_factor[inst_type_idx] + rng.normal(0.0, config.noise_weeks, size=n)
    weeks = weeks * config.target_scale + config.target_shift_weeks
    weeks = np.clip(np.rint(weeks), 0, None).astype(int)

    specialismen = np.array(SPECIALISMEN, dtype=object)[spec_idx]
    inst_types = np.array(TYPES_ZORGINSTELLING, dtype=object)[inst_type_idx]
    target = weeks.astype(str).astype(object)
    target[rng.random(n) < config.missing_target_share] = ""
    inst_types[rng.random(n) < config.missing_institution_type_share] = ""
    regions = np.array(ROAZ_REGIOS, dtype=object)[region_idx]
    if config.unusable_share:
        # Drawn from a generator of its own: the clean rows stay those of the same seed.
        broken = np.flatnonzero(np.random.default_rng([config.seed, 1]).random(n) < config.unusable_share)
        for i, how in enumerate((*_UNUSABLE_TARGETS, "no region")):
            rows = broken[i::len(_UNUSABLE_TARGETS) + 1]
            if how == "no region":
                regions[rows] = ""
            else:
                target[rows] = how
    specialism_names = specialismen.copy()
    for name in SPECIALISMEN[:config.renamed_specialisms]:
        specialism_names[specialismen == name] = renamed(name)
    institution_idx = rng.integers(len(_INSTITUTIONS), size=n)
    names = np.array(_INSTITUTIONS, dtype=object)[institution_idx]

    return pd.DataFrame(
        {
            "PEILDATUM": config.peildatum,
            "ZORGINSTELLING_AGB": (6100000 + institution_idx).astype(str),
            "ZORGINSTELLING_NAAM": names,
            "LOCATIE_NAAM": names,
            "ROAZ_REGIO": regions,
            "TYPE_ZORGINSTELLING": inst_types,
            "SPECIALISME_CODE": [s[s.rindex("(") + 1 : -1] for s in specialismen],
            "SPECIALISME": specialism_names,
            "TYPE_WACHTTIJD": np.array(TYPES_WACHTTIJD, dtype=object)[type_idx],
            "WACHTTIJD": target,
            "BRON": "NZa",
        },
        columns=list(RAW_COLUMNS),
    )


def to_raw_bytes(frame: pd.DataFrame, line_terminator: str = "\r\n") -> bytes:
    """Serialise like the NZa export: `;`, ISO-8859-1, CRLF, no index."""
    return frame.to_csv(sep=RAW_SEPARATOR, index=False, lineterminator=line_terminator).encode(
        RAW_ENCODING
    )
