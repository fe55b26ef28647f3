"""Derive the compact definitions shipped in ``fhir_imaging/fhir/definitions/`` from the official R4 files.

Usage: ``python tools/derive_definitions.py [--source ../shared/fhir-r4]``

Reads the HL7 FHIR R4 4.0.1 package files (``Bundle-resources.json``, ``Bundle-searchParams.json``,
``CompartmentDefinition-patient.json``) and writes, deterministically:

- ``resource-types.json``: every concrete resource type (StructureDefinition kind=resource, not abstract);
- ``search-parameters.json``: every SearchParameter, reduced to the fields the server uses;
- ``compartment-patient.json``: resource type → the parameters that put it in a Patient's compartment;
- ``summary-elements.json``: resource type → its summary elements (``isSummary``, paths below the type, backbone
  elements included), which of those are backbone elements, and its mandatory top-level elements (``_summary``).

Our own additions (``search-parameters-extra.json``) are hand-kept in SearchParameter form and not touched here.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "fhir_imaging" / "fhir" / "definitions"
DEFAULT_SOURCE = ROOT.parent / "shared" / "fhir-r4"

SEARCH_PARAMETER_FIELDS = (
    "url",
    "code",
    "base",
    "type",
    "expression",
    "target",
    "multipleOr",
    "multipleAnd",
    "comparator",
    "modifier",
    "chain",
    "component",
    "description",
)


def _load(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def derive_resource_types(resources_bundle: dict[str, Any]) -> list[str]:
    return sorted(
        entry["resource"]["type"]
        for entry in resources_bundle["entry"]
        if entry["resource"]["resourceType"] == "StructureDefinition"
        and entry["resource"]["kind"] == "resource"
        and not entry["resource"].get("abstract", False)
    )


def derive_search_parameters(search_bundle: dict[str, Any]) -> list[dict[str, Any]]:
    params = []
    for entry in search_bundle["entry"]:
        resource = entry["resource"]
        params.append({key: resource[key] for key in SEARCH_PARAMETER_FIELDS if key in resource})
    return sorted(params, key=lambda param: param["url"])


def derive_compartment(compartment: dict[str, Any]) -> dict[str, list[str]]:
    return {item["code"]: item["param"] for item in compartment["resource"] if item.get("param")}


def derive_summary_elements(resources_bundle: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """Per resource type: ``summary`` element paths, ``backbone`` paths among them, top-level ``mandatory`` ones."""
    out: dict[str, dict[str, list[str]]] = {}
    for entry in resources_bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] != "StructureDefinition" or resource["kind"] != "resource":
            continue
        if resource.get("abstract", False):
            continue
        name = resource["type"]
        summary, backbone, mandatory = [], [], []
        for element in resource["snapshot"]["element"]:
            path = element["path"]
            if "." not in path:
                continue
            relative = path.split(".", 1)[1]
            if element.get("isSummary"):
                summary.append(relative)
                if any(kind.get("code") in ("BackboneElement", "Element") for kind in element.get("type", ())):
                    backbone.append(relative)
            if "." not in relative and element.get("min", 0) >= 1:
                mandatory.append(relative)
        out[name] = {"summary": summary, "backbone": backbone, "mandatory": mandatory}
    return dict(sorted(out.items()))


def derive_all(source: Path) -> dict[str, Any]:
    """File name → content, for every file this script owns."""
    definitions = source / "definitions"
    return {
        "resource-types.json": derive_resource_types(_load(definitions / "Bundle-resources.json")),
        "search-parameters.json": derive_search_parameters(_load(definitions / "Bundle-searchParams.json")),
        "compartment-patient.json": derive_compartment(_load(definitions / "CompartmentDefinition-patient.json")),
        "summary-elements.json": derive_summary_elements(_load(definitions / "Bundle-resources.json")),
    }


def dump(content: Any) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder holding definitions/ of FHIR R4")
    args = parser.parse_args()
    TARGET.mkdir(parents=True, exist_ok=True)
    for name, content in derive_all(args.source).items():
        (TARGET / name).write_bytes(dump(content))
        print(f"wrote {TARGET / name}")


if __name__ == "__main__":
    main()
