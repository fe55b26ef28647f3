"""Derive ``fhir_imaging/web/sop-classes.json``, the names of the DICOM storage SOP classes, from pydicom's UID
dictionary (itself generated from DICOM PS3.6 Annex A), so that the study browser shows "CT Image Storage" rather
than ``1.2.840.10008.5.1.4.1.1.2`` without a hand-typed table.

Usage: ``python tools/derive_sop_classes.py``

A storage SOP class is a UID of type "SOP Class" whose name says "Storage" (Storage Commitment, a service, is not
one). Retired classes are kept: old archives hold them. The file records the pydicom version it came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pydicom
from pydicom.uid import UID_dictionary

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "fhir_imaging" / "web" / "sop-classes.json"


def derive_sop_classes() -> dict[str, Any]:
    """``{"pydicom": version, "classes": {uid: name}}``, the UIDs in order."""
    classes = {
        uid: name
        for uid, (name, kind, *_rest) in UID_dictionary.items()
        if kind == "SOP Class" and "Storage" in name and "Storage Commitment" not in name
    }
    return {"pydicom": pydicom.__version__, "classes": dict(sorted(classes.items()))}


def dump(content: Any) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_INDENT_2) + b"\n"


def main() -> None:
    TARGET.write_bytes(dump(derive_sop_classes()))
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
