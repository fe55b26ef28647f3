"""The definitions shipped in the package are exactly what tools/derive_definitions.py makes of the official files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

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
