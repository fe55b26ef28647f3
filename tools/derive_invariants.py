"""Derive the invariants (``constraint`` elements) of the FHIR R4 (4.0.1) StructureDefinitions into package data.

Spec: https://hl7.org/fhir/R4/elementdefinition-definitions.html#ElementDefinition.constraint,
https://hl7.org/fhir/R4/conformance-rules.html#constraints and https://hl7.org/fhir/R4/validation.html.

Reads ``definitions/Bundle-types.json`` and ``Bundle-resources.json`` under ``--source`` (default ``../shared/fhir-r4``
relative to the repository root) and writes ``fhir_imaging/validation/data/invariants/invariants.json`` (sorted keys):

- ``constraints``: id → ``key``, ``severity``, ``human``, ``expression``, ``source`` (the type that defines it) and
  ``bestPractice`` (the best-practice extension, e.g. dom-6). The id is ``key`` when the key is unique, else
  ``Type:key`` (R4 reuses ``inv-1`` in Parameters, Task and TestReport).
- ``structures``: structure path → constraint ids evaluated on every object of that structure: a resource or
  datatype (``Period``, ``ImagingStudy``: its own and inherited root constraints, e.g. dom-2 from DomainResource,
  qty-3 from Quantity on Age) or a backbone element (``Patient.contact``). The paths are those of ``types.json``.
- ``elements``: element path (``Organization.address``, ``RiskAssessment.prediction.probability[x]``) → constraint
  ids evaluated on every value of that element: constraints written on a non-backbone element, and those of the
  constraint profile an element's type names (``SimpleQuantity``: sqty-1).
- ``everyElement``: ele-1, which holds on every element (Element's own constraint, copied onto every element).
- ``unused``: constraint id → why it is never evaluated on a base resource (a profile no element uses).

Usage: ``python tools/derive_invariants.py [--source DIR] [--out DIR]``.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO / ".." / "shared" / "fhir-r4"
DEFAULT_OUT = REPO / "fhir_imaging" / "validation" / "data" / "invariants"
SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
BEST_PRACTICE = "http://hl7.org/fhir/StructureDefinition/elementdefinition-bestpractice"
EVERY_ELEMENT = "Element"  # the source of ele-1

Json = dict[str, Any]


def _load(path: Path) -> Json:
    return orjson.loads(path.read_bytes())  # type: ignore[no-any-return]


def _definitions(source: Path) -> list[Json]:
    sds = []
    for name in ("Bundle-types.json", "Bundle-resources.json"):
        for entry in _load(source / "definitions" / name)["entry"]:
            sd = entry["resource"]
            if sd["resourceType"] == "StructureDefinition" and "snapshot" in sd:
                sds.append(sd)
    return sds


def _source(constraint: Json, sd: Json) -> str:
    return str(constraint.get("source", SD_PREFIX + sd["id"])).removeprefix(SD_PREFIX)


def derive_invariants(sds: list[Json]) -> Json:
    by_source: dict[tuple[str, str], Json] = {}
    structures: dict[str, list[tuple[str, str]]] = {}
    elements: dict[str, list[tuple[str, str]]] = {}
    profiles: dict[str, list[tuple[str, str]]] = {}  # constraint profile → its root constraints not of its base
    used_profiles: dict[str, set[str]] = {}  # element path → constraint profiles its types name
    for sd in sds:
        kind, derivation = sd.get("kind"), sd.get("derivation")
        if kind not in ("complex-type", "resource", "primitive-type") or sd["type"] == "BackboneElement":
            continue
        elements_of = sd["snapshot"]["element"]
        with_children = {e["path"].rsplit(".", 1)[0] for e in elements_of if "." in e["path"]}
        for el in elements_of:
            path = el["path"]
            if ":" in el["id"]:
                continue
            for constraint in el.get("constraint", ()):
                source = _source(constraint, sd)
                ident = (source, constraint["key"])
                if ident not in by_source:
                    by_source[ident] = {
                        "key": constraint["key"],
                        "severity": constraint["severity"],
                        "human": constraint["human"],
                        "expression": constraint["expression"],
                        "source": source,
                        "bestPractice": any(
                            ext["url"] == BEST_PRACTICE and ext.get("valueBoolean")
                            for ext in constraint.get("extension", ())
                        ),
                    }
                if source == EVERY_ELEMENT:
                    continue  # ele-1: everywhere
                if derivation == "constraint":
                    if "." not in path and source == sd["id"]:
                        profiles.setdefault(sd["id"], []).append(ident)
                    continue
                if "." not in path or path in with_children:
                    structures.setdefault(path if "." in path else sd["type"], []).append(ident)
                elif not (source == "Extension" and path.endswith((".extension", ".modifierExtension"))):
                    elements.setdefault(path, []).append(ident)  # ext-1 on extension elements: the Extension type's
            for ty in el.get("type", ()):
                for profile in ty.get("profile", ()):
                    if profile.startswith(SD_PREFIX) and derivation != "constraint" and "." in path:
                        used_profiles.setdefault(path, set()).add(profile.removeprefix(SD_PREFIX))
    for path, names in used_profiles.items():
        for name in sorted(names):
            elements.setdefault(path, []).extend(profiles.get(name, ()))
    counts = Counter(key for _, key in by_source)

    def ident_of(ident: tuple[str, str]) -> str:
        return ident[1] if counts[ident[1]] == 1 else f"{ident[0]}:{ident[1]}"

    used = {ident for idents in (*structures.values(), *elements.values()) for ident in idents}
    unused = {
        ident_of(ident): f"defined by the profile {ident[0]}, which no element of the R4 resources and types uses"
        for ident in by_source
        if ident not in used and ident[0] != EVERY_ELEMENT
    }
    return {
        "constraints": {ident_of(ident): entry for ident, entry in by_source.items()},
        "structures": {path: sorted({ident_of(i) for i in idents}) for path, idents in structures.items()},
        "elements": {path: sorted({ident_of(i) for i in idents}) for path, idents in elements.items()},
        "everyElement": sorted(ident_of(i) for i in by_source if i[0] == EVERY_ELEMENT),
        "unused": unused,
    }


def derive(source: Path) -> dict[str, bytes]:
    """File name → bytes of the package data derived from ``source`` (deterministic)."""
    option = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
    return {"invariants.json": orjson.dumps(derive_invariants(_definitions(source)), option=option)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="the fhir-r4 folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in derive(args.source).items():
        (args.out / name).write_bytes(data)
        print(f"wrote {args.out / name} ({len(data):,} bytes)")


if __name__ == "__main__":
    main()
