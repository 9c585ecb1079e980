"""Category values as they appear in the NZa waiting-time export.

Used by the synthetic generator, the load tests and the serving smoke tests, so
that generated traffic looks like production traffic.
"""

from __future__ import annotations

SPECIALISMEN: tuple[str, ...] = (
    "Oogheelkunde (301)",
    "Keel-, neus- en oorheelkunde (302)",
    "Heelkunde (303)",
    "Plastische chirurgie (304)",
    "Orthopedie (305)",
    "Urologie (306)",
    "Obstetrie en gynaecologie (307)",
    "Neurochirurgie (308)",
    "Dermatologie (310)",
    "Inwendige geneeskunde (313)",
    "Kindergeneeskunde (316)",
    "Maag-darm-leverziekten (318)",
    "Cardiologie (320)",
    "Longziekten (322)",
    "Reumatologie (324)",
    "Revalidatiegeneeskunde (327)",
    "Neurologie (330)",
    "Klinische geriatrie (335)",
    "Anesthesiologie (389)",
)

ROAZ_REGIOS: tuple[str, ...] = (
    "Acute Zorgnetwerk Noord Nederland",
    "Acute Zorg Euregio",
    "Netwerk Acute Zorg Zwolle",
    "Netwerk Acute Zorg Noordwest",
    "SpoedZorgNet",
    "Netwerk Acute Zorg West",
    "Regionaal Overleg Acute Zorgketen Zuid-Holland Zuid",
    "Netwerk Acute Zorg Zuidwest Nederland",
    "Netwerk Acute Zorg Brabant",
    "Netwerk Acute Zorg Limburg",
    "Acute Zorg Oost",
)

TYPES_ZORGINSTELLING: tuple[str, ...] = ("Ziekenhuis", "Kliniek")

TYPES_WACHTTIJD: tuple[str, ...] = ("Polikliniekbezoek", "Diagnostiek", "Behandeling")

SAMPLE_ROW: dict[str, str] = {
    "TYPE_WACHTTIJD": "Behandeling",
    "SPECIALISME": "Orthopedie (305)",
    "ROAZ_REGIO": "Acute Zorg Oost",
    "TYPE_ZORGINSTELLING": "Ziekenhuis",
}
"""A real row of the export, in feature order: the deploy smoke test's request and the
row `mlops up` sends (and prints as a curl line) to the predictor and the graph."""
