"""The definitions shipped in the package are exactly what tools/derive_definitions.py makes of the official files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import orjson

from tests.conftest import SHARED

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_definitions_are_derived_from_the_official_files() -> None:
    spec = importlib.util.spec_from_file_location("derive_definitions", ROOT / "tools" / "derive_definitions.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, content in module.derive_all(SHARED / "fhir-r4").items():
        shipped = (ROOT / "fhir_imaging" / "fhir" / "definitions" / name).read_bytes()
        assert shipped == module.dump(content), f"{name} is stale: run python tools/derive_definitions.py"


def test_shipped_sop_class_names_are_derived_from_pydicom() -> None:
    spec = importlib.util.spec_from_file_location("derive_sop_classes", ROOT / "tools" / "derive_sop_classes.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shipped = orjson.loads((ROOT / "fhir_imaging" / "web" / "sop-classes.json").read_bytes())
    derived = module.derive_sop_classes()
    assert shipped["classes"]["1.2.840.10008.5.1.4.1.1.4"] == "MR Image Storage"
    assert "1.2.840.10008.1.20.1" not in shipped["classes"]  # Storage Commitment is a service, not a storage class
    if shipped["pydicom"] == derived["pydicom"]:
        assert shipped == derived, "sop-classes.json is stale: run python tools/derive_sop_classes.py"
    else:  # another pydicom: what we ship must still be in its dictionary under the same names
        assert shipped["classes"].items() <= derived["classes"].items(), "run python tools/derive_sop_classes.py"
