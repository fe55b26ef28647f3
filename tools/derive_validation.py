"""Derive the validator's compact package data from the official FHIR R4 (4.0.1) definitions.

Spec: https://hl7.org/fhir/R4/structuredefinition.html, https://hl7.org/fhir/R4/elementdefinition.html,
https://hl7.org/fhir/R4/datatypes.html and https://hl7.org/fhir/R4/valueset.html (compose / expansion).

Reads ``definitions/Bundle-types.json``, ``Bundle-resources.json``, ``Bundle-valuesets.json``,
``Bundle-v3-codesystems.json`` and ``Bundle-extensions.json`` under ``--source`` (default ``../shared/fhir-r4``
relative to the repository root) and writes, with sorted keys:

- ``fhir_imaging/validation/data/types.json``: every primitive type (JSON type and regular expression) and every
  complex type and resource (one structure per backbone path: element name → cardinality, types, required binding,
  reference targets);
- ``fhir_imaging/validation/data/valuesets.json``: the expansion (system → codes) of every value set used by a
  required binding that can be expanded from the files (the FHIR and the v3 code systems and value sets), and the
  list of those that cannot;
- ``fhir_imaging/validation/data/extensions.json``: every extension the specification defines (URL → the types its
  ``value[x]`` allows, none for a complex extension; the contexts it may be used in; whether it is a modifier).

Usage: ``python tools/derive_validation.py [--source DIR] [--out DIR]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO / ".." / "shared" / "fhir-r4"
DEFAULT_OUT = REPO / "fhir_imaging" / "validation" / "data"

SYSTEM_PREFIX = "http://hl7.org/fhirpath/System."
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
# FHIRPath system type of a primitive's value → the JSON type FHIR JSON uses for it (json.html#primitive).
JSON_TYPES = {"Boolean": "boolean", "Integer": "integer", "Decimal": "number"}

Json = dict[str, Any]


def _load(path: Path) -> Json:
    return orjson.loads(path.read_bytes())  # type: ignore[no-any-return]


def _resources(bundle: Json, resource_type: str) -> list[Json]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]


def _extension(holder: Json, url: str) -> Any:
    for ext in holder.get("extension", ()):
        if ext["url"] == url:
            return ext.get("valueUrl", ext.get("valueString"))
    return None


def derive_primitives(sds: list[Json]) -> Json:
    """Primitive type → {"json": JSON type, "regex": the spec's regular expression (or absent)}.

    The JSON type comes from the FHIRPath system type of the ``value`` element of the primitive at the root of its
    ``baseDefinition`` chain (positiveInt → integer → System.Integer), as R4 types the value of some specialisations
    as System.String.
    """
    prims = {sd["id"]: sd for sd in sds if sd.get("kind") == "primitive-type"}

    def value_type(name: str) -> Json:
        sd = prims[name]
        return next(e for e in sd["snapshot"]["element"] if e["path"] == f"{name}.value")["type"][0]  # type: ignore[no-any-return]

    def root(name: str) -> str:
        base = prims[name].get("baseDefinition", "").rsplit("/", 1)[-1]
        return root(base) if base in prims else name

    out: Json = {}
    for name in sorted(prims):
        system = value_type(root(name))["code"].removeprefix(SYSTEM_PREFIX)
        entry: Json = {"json": JSON_TYPES.get(system, "string")}
        regex = _extension(value_type(name), REGEX_EXT)
        if regex is not None:
            entry["regex"] = regex
        out[name] = entry
    return out


def _type_codes(el: Json) -> list[str]:
    codes = []
    for ty in el.get("type", ()):
        code = ty["code"]
        if code.startswith(SYSTEM_PREFIX):
            code = _extension(ty, FHIR_TYPE_EXT) or code.removeprefix(SYSTEM_PREFIX).lower()
        codes.append(code)
    return codes


def derive_structures(sd: Json) -> Json:
    """One structure per element that has children: path → {element name → element entry}.

    Element entry keys (defaults left out): ``min`` (default 0), ``max`` ("1" or "*"; default "1"), ``types`` (type
    codes; ``@Path`` is a nested structure of the same type: a backbone element or a ``contentReference``),
    ``binding`` (value set of a required binding, version stripped) and ``targets`` (Reference target types).
    """
    elements = sd["snapshot"]["element"]
    with_children = {e["path"].rsplit(".", 1)[0] for e in elements if "." in e["path"]}
    structures: Json = {sd["type"]: {}}
    for el in elements:
        path = el["path"]
        if "." not in path or ":" in el["id"]:
            continue
        parent, name = path.rsplit(".", 1)
        entry: Json = {}
        if el.get("min", 0):
            entry["min"] = el["min"]
        if el.get("max", "1") != "1":
            entry["max"] = "*" if el["max"] == "*" else el["max"]
        if "contentReference" in el:
            entry["types"] = ["@" + el["contentReference"].lstrip("#")]
        elif path in with_children:
            entry["types"] = ["@" + path]
            structures[path] = {}
        else:
            entry["types"] = _type_codes(el)
        binding = el.get("binding")
        if binding and binding["strength"] == "required" and "valueSet" in binding:
            entry["binding"] = binding["valueSet"].split("|", 1)[0]
        targets = sorted(
            {
                profile.rsplit("/", 1)[-1]
                for ty in el.get("type", ())
                if ty["code"] == "Reference"
                for profile in ty.get("targetProfile", ())
            }
        )
        if targets and targets != ["Resource"]:
            entry["targets"] = targets
        structures.setdefault(parent, {})[name] = entry
    return structures


def derive_types(types_bundle: Json, resources_bundle: Json) -> Json:
    sds = _resources(types_bundle, "StructureDefinition") + _resources(resources_bundle, "StructureDefinition")
    out: Json = {"primitives": derive_primitives(sds), "complex": {}, "resources": {}, "abstract": []}
    for sd in sds:
        kind = sd.get("kind")
        if sd.get("derivation") == "constraint" or kind not in ("complex-type", "resource"):
            continue
        if sd.get("abstract"):
            out["abstract"].append(sd["type"])
        if sd["type"] == "BackboneElement":
            continue  # its elements are copied into every backbone element's snapshot; Element types `_x` objects
        group = "resources" if kind == "resource" else "complex"
        out[group][sd["type"]] = derive_structures(sd)
    out["abstract"].sort()
    return out


def _concepts(concepts: list[Json]) -> list[str]:
    codes: list[str] = []
    for concept in concepts:
        codes.append(concept["code"])
        codes.extend(_concepts(concept.get("concept", ())))
    return codes


def expand(url: str, valuesets: dict[str, Json], codesystems: dict[str, Json]) -> dict[str, list[str]] | None:
    """system → codes of value set ``url`` from its ``compose``, or None when the files cannot expand it.

    Supported: includes/excludes of a whole complete CodeSystem, of a concept list, and of other value sets; a
    filter, a CodeSystem that is missing or not ``complete``, or an unknown value set make it unexpandable.
    """
    vs = valuesets.get(url)
    if vs is None or "compose" not in vs:
        return None

    def part(inc: Json) -> dict[str, set[str]] | None:
        if "filter" in inc:
            return None
        result: dict[str, set[str]] = {}
        if "system" in inc:
            if "concept" in inc:
                result[inc["system"]] = {c["code"] for c in inc["concept"]}
            else:
                cs = codesystems.get(inc["system"])
                if cs is None or cs.get("content") != "complete":
                    return None
                result[inc["system"]] = set(_concepts(cs.get("concept", ())))
        for other in inc.get("valueSet", ()):
            sub = expand(other.split("|", 1)[0], valuesets, codesystems)
            if sub is None:
                return None
            for system, codes in sub.items():
                if "system" in inc:  # include = intersection of the system part and the value set
                    result[system] = result.get(system, set()) & set(codes)
                else:
                    result.setdefault(system, set()).update(codes)
        return result

    codes: dict[str, set[str]] = {}
    for inc in vs["compose"].get("include", ()):
        got = part(inc)
        if got is None:
            return None
        for system, found in got.items():
            codes.setdefault(system, set()).update(found)
    for exc in vs["compose"].get("exclude", ()):
        got = part(exc)
        if got is None:
            return None
        for system, found in got.items():
            codes[system] = codes.get(system, set()) - found
    return {system: sorted(found) for system, found in codes.items()}


def derive_valuesets(types: Json, valuesets_bundle: Json, v3_bundle: Json | None = None) -> Json:
    bound = {
        entry["binding"]
        for group in ("complex", "resources")
        for structures in types[group].values()
        for elements in structures.values()
        for entry in elements.values()
        if "binding" in entry
    }
    bundles = [valuesets_bundle] + ([v3_bundle] if v3_bundle is not None else [])
    valuesets = {vs["url"]: vs for bundle in bundles for vs in _resources(bundle, "ValueSet")}
    codesystems = {cs["url"]: cs for bundle in bundles for cs in _resources(bundle, "CodeSystem")}
    out: Json = {"expansions": {}, "unexpandable": []}
    for url in sorted(bound):
        codes = expand(url, valuesets, codesystems)
        if codes is None:
            out["unexpandable"].append(url)
        else:
            out["expansions"][url] = codes
    return out


def derive_extensions(extensions_bundle: Json) -> Json:
    """Extension URL → {"types": value[x] type codes ([] when value[x] is 0..0: a complex extension), "contexts":
    the ``element`` context expressions, "modifier": true for a modifier extension (absent otherwise)}."""
    out: Json = {}
    for sd in _resources(extensions_bundle, "StructureDefinition"):
        elements = sd["snapshot"]["element"]
        value = next(e for e in elements if e["path"] == "Extension.value[x]")
        entry: Json = {
            "types": [] if value.get("max") == "0" else [t["code"] for t in value.get("type", ())],
            "contexts": sorted(c["expression"] for c in sd.get("context", ()) if c["type"] == "element"),
        }
        if elements[0].get("isModifier"):
            entry["modifier"] = True
        out[sd["url"]] = entry
    return out


def derive(source: Path) -> dict[str, bytes]:
    """File name → bytes of every package data file derived from ``source`` (deterministic)."""
    definitions = source / "definitions"
    types = derive_types(_load(definitions / "Bundle-types.json"), _load(definitions / "Bundle-resources.json"))
    valuesets = derive_valuesets(
        types, _load(definitions / "Bundle-valuesets.json"), _load(definitions / "Bundle-v3-codesystems.json")
    )
    extensions = derive_extensions(_load(definitions / "Bundle-extensions.json"))
    option = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
    return {
        "types.json": orjson.dumps(types, option=option),
        "valuesets.json": orjson.dumps(valuesets, option=option),
        "extensions.json": orjson.dumps(extensions, option=option),
    }


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
