"""Compiled per-type checkers: the shipped structures turned into lookup tables keyed by JSON property name.

Spec: https://hl7.org/fhir/R4/elementdefinition.html (cardinality, types, bindings, contentReference) and
https://hl7.org/fhir/R4/json.html (choice names ``value[x]`` → ``valueQuantity``; primitive extensions ``_x``).

A ``Structure`` describes one JSON object shape (a resource, a complex datatype or a backbone element): every JSON
property it may hold, the required elements and whether ``resourceType`` belongs to it. Types are compiled lazily,
the first time a resource or datatype is needed; compiled structures are immutable afterwards and shared between
threads.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fhir_imaging.validation.primitives import PrimitiveCheck, compile_primitives

PRIMITIVE, COMPLEX, RESOURCE, EXTENSION_OF = 0, 1, 2, 3


@dataclass(slots=True, eq=False)
class Prop:
    """One JSON property of a structure."""

    key: str  # the JSON property name: "status", "valueQuantity", "_status"
    segment: str  # its FHIRPath step: "status", "value.ofType(Quantity)"
    kind: int  # PRIMITIVE | COMPLEX | RESOURCE | EXTENSION_OF (a ``_x`` property)
    array: bool
    type_code: str  # "code", "Coding", "Resource", … (for EXTENSION_OF: the primitive's type)
    check: PrimitiveCheck | None = None
    struct: Structure | None = None  # COMPLEX: resolved on first use for datatypes, at compile time for backbones
    type_ref: str = ""  # COMPLEX: the datatype name, or "" when ``struct`` is a backbone of the same type
    choice: str = ""  # "value[x]" when the property is one of the types of a choice element
    codes: frozenset[str] | None = None  # required binding: every code of the expansion
    system_codes: frozenset[tuple[str, str]] | None = None  # required binding: (system, code) pairs
    binding: str = ""  # the bound value set's URL
    targets: frozenset[str] | None = None  # Reference: allowed target resource types (None: any)
    base: Prop | None = None  # EXTENSION_OF: the primitive property it extends
    owner: str = ""  # the name of the structure holding it: "Patient", "ImagingStudy.series", "HumanName"


@dataclass(slots=True, eq=False)
class Structure:
    """The JSON shape of one resource, complex datatype or backbone element."""

    name: str  # "ImagingStudy", "Coding", "ImagingStudy.series"
    is_resource: bool
    props: dict[str, Prop] = field(default_factory=dict)
    required: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (element, JSON keys satisfying it)


class Schema:
    """The package data compiled on demand; ``resource(type)`` and ``datatype(type)`` return root structures."""

    def __init__(self, types: Mapping[str, Any], valuesets: Mapping[str, Any]) -> None:
        self._raw_resources: Mapping[str, Any] = types["resources"]
        self._raw_complex: Mapping[str, Any] = types["complex"]
        self.abstract = frozenset(types["abstract"])
        self.resource_types = frozenset(self._raw_resources) - self.abstract
        self.datatypes = frozenset(self._raw_complex)
        self.primitive_table: Mapping[str, Mapping[str, str]] = types["primitives"]
        self.checks = compile_primitives(self.primitive_table)
        self._expansions: Mapping[str, Mapping[str, list[str]]] = valuesets["expansions"]
        self.unexpandable = frozenset(valuesets["unexpandable"])
        self._bindings: dict[str, tuple[frozenset[str], frozenset[tuple[str, str]]]] = {}
        self._compiled: dict[str, Structure] = {}
        self._lock = threading.RLock()

    def resource(self, type_name: str) -> Structure | None:
        """The root structure of a concrete resource type, or None when the type is unknown or abstract."""
        if type_name not in self.resource_types:
            return None
        return self._compiled.get(type_name) or self._compile(type_name, self._raw_resources[type_name], True)

    def datatype(self, type_name: str) -> Structure:
        """The root structure of a complex datatype (``Element`` is the shape of a ``_x`` object)."""
        return self._compiled.get(type_name) or self._compile(type_name, self._raw_complex[type_name], False)

    def _compile(self, type_name: str, raw: Mapping[str, Any], is_resource: bool) -> Structure:
        with self._lock:
            if type_name in self._compiled:
                return self._compiled[type_name]
            structures = {path: Structure(path, is_resource and path == type_name) for path in raw}
            for path, elements in raw.items():
                for name, spec in elements.items():
                    if is_resource and path == type_name and name == "id":
                        # resource.html#id: the logical id is an ``id`` ([A-Za-z0-9\-\.]{1,64}); the definitions
                        # type Resource.id as a bare string (System.String), contained resources included.
                        spec = {**spec, "types": ["id"]}
                    self._add(structures[path], structures, name, spec)
            self._compiled[type_name] = structures[type_name]
            return structures[type_name]

    def _binding(self, url: str) -> tuple[frozenset[str], frozenset[tuple[str, str]]] | None:
        expansion = self._expansions.get(url)
        if expansion is None:
            return None  # not expandable from the definitions: the binding is not checked (docs/validation.md)
        if url not in self._bindings:
            pairs = frozenset((system, code) for system, codes in expansion.items() for code in codes)
            self._bindings[url] = (frozenset(code for _, code in pairs), pairs)
        return self._bindings[url]

    def _add(self, struct: Structure, structures: dict[str, Structure], name: str, spec: Mapping[str, Any]) -> None:
        types: list[str] = spec["types"]
        array = spec.get("max", "1") != "1"
        is_choice = name.endswith("[x]")
        base_name = name[:-3] if is_choice else name
        binding = self._binding(spec["binding"]) if "binding" in spec else None
        targets = frozenset(spec["targets"]) if "targets" in spec else None
        keys: list[str] = []
        for type_code in types:
            key = base_name + type_code[0].upper() + type_code[1:] if is_choice else base_name
            segment = f"{base_name}.ofType({type_code})" if is_choice else base_name
            prop = Prop(key, segment, COMPLEX, array, type_code, choice=name if is_choice else "", owner=struct.name)
            if type_code.startswith("@"):
                prop.struct = structures[type_code[1:]]
                prop.type_code = "BackboneElement"
            elif type_code == "Resource":
                prop.kind = RESOURCE
            elif type_code in self.checks:
                prop.kind, prop.check = PRIMITIVE, self.checks[type_code]
                ext = Prop("_" + key, segment, EXTENSION_OF, array, type_code, choice=prop.choice, base=prop)
                ext.owner = struct.name
                ext.type_ref = "Element"
                struct.props[ext.key] = ext
                keys.append(ext.key)
            else:
                prop.type_ref = type_code
            if binding is not None:
                prop.codes, prop.system_codes = binding
                prop.binding = spec["binding"]
            if type_code == "Reference":
                prop.targets = targets
            struct.props[key] = prop
            keys.append(key)
        if spec.get("min", 0) > 0:
            struct.required.append((name, tuple(keys)))

    def resolve(self, prop: Prop) -> Structure:
        """The structure of a COMPLEX or EXTENSION_OF property (datatypes are compiled on first use)."""
        struct = prop.struct
        if struct is None:
            struct = prop.struct = self.datatype(prop.type_ref)
        return struct
