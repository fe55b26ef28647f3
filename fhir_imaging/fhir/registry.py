"""The one registry of FHIR R4 knowledge the server runs on, built once at start-up from the shipped definitions.

Resource types come from the R4 StructureDefinitions, search parameters from the R4 SearchParameter bundle plus our
additions (``search-parameters-extra.json``, same format; an addition with the code and base of an official parameter
replaces it for that base), the Patient compartment from its CompartmentDefinition. Routes, the CapabilityStatement,
index extraction, query compilation and strict-mode errors all read from here.

Spec: https://hl7.org/fhir/R4/searchparameter.html, https://hl7.org/fhir/R4/compartmentdefinition.html
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import orjson

from fhir_imaging.fhir.fhirpath_text import split_top_level

COMMON_BASES = ("Resource", "DomainResource")
# Resources that are not DomainResources do not take DomainResource's parameters (_text).
NOT_DOMAIN_RESOURCES = frozenset({"Binary", "Bundle", "Parameters"})
# The parameter types the search engine indexes and answers (special, e.g. Location.near, is not supported).
SEARCHABLE_TYPES = frozenset({"number", "date", "string", "token", "reference", "quantity", "uri", "composite"})
# The types a composite parameter's components may have (each component is searched by its own type's rules).
COMPONENT_TYPES = SEARCHABLE_TYPES - {"composite"}


@dataclass(frozen=True, slots=True)
class SearchParam:
    """One search parameter as it applies to one resource type."""

    code: str
    type: str  # number | date | string | token | reference | composite | quantity | uri | special
    url: str
    base: str
    expression: str | None
    targets: tuple[str, ...] = ()
    components: tuple[tuple[str, str], ...] = ()  # (definition url, expression)
    description: str = ""
    # A composite's components resolved (search.html#composite): each the parameter its definition url names, with
    # the component's expression (relative to the element the composite's expression selects) and its code set to
    # the composite's code. Empty when a definition cannot be found.
    parts: tuple[SearchParam, ...] = ()

    @property
    def searchable(self) -> bool:
        """Whether search supports it: a type the engine indexes, and an expression to index (a composite: every
        component resolved, of a type the engine indexes)."""
        if self.type not in SEARCHABLE_TYPES or self.expression is None:
            return False
        if self.type == "composite":
            return bool(self.components) and len(self.parts) == len(self.components)
        return True


@dataclass(frozen=True)
class Registry:
    resource_types: frozenset[str]
    search_params: dict[str, dict[str, SearchParam]]
    patient_compartment: dict[str, tuple[str, ...]]
    by_url: dict[str, SearchParam] = field(default_factory=dict)

    def is_resource_type(self, name: str) -> bool:
        return name in self.resource_types

    def params_for(self, resource_type: str) -> dict[str, SearchParam]:
        return self.search_params.get(resource_type, {})

    def searchable_params(self, resource_type: str) -> list[SearchParam]:
        """The parameters search supports for a type: a supported type and an expression to index."""
        return [param for param in self.params_for(resource_type).values() if param.searchable]


def split_union(expression: str) -> list[str]:
    """Split a FHIRPath expression on its top-level ``|`` operators."""
    return split_top_level(expression, "|")


def _head_type(part: str) -> str:
    head = part.lstrip("(")
    for stop, char in enumerate(head):
        if not (char.isalnum() or char == "_"):
            return head[:stop]
    return head


def expression_for_base(expression: str | None, base: str) -> str | None:
    """The part of a (possibly multi-resource) expression that applies to ``base``."""
    if expression is None:
        return None
    parts = [part for part in split_union(expression) if _head_type(part) in (base, *COMMON_BASES)]
    return " | ".join(parts) if parts else None


def _param(definition: dict[str, Any], base: str, by_url: dict[str, dict[str, Any]]) -> SearchParam:
    components = tuple((c["definition"], c["expression"]) for c in definition.get("component", ()))
    return SearchParam(
        code=definition["code"],
        type=definition["type"],
        url=definition["url"],
        base=base,
        expression=expression_for_base(definition.get("expression"), base),
        targets=tuple(definition.get("target", ())),
        components=components,
        description=description_for_base(definition.get("description", ""), base),
        parts=_parts(definition["code"], base, components, by_url),
    )


def _parts(
    code: str, base: str, components: tuple[tuple[str, str], ...], by_url: dict[str, dict[str, Any]]
) -> tuple[SearchParam, ...]:
    """A composite's components as parameters of their own type (``()`` when one cannot be resolved to a definition
    of a component type): the definition names the type and targets, the component its expression."""
    parts = []
    for url, expression in components:
        definition = by_url.get(url)
        if definition is None or definition["type"] not in COMPONENT_TYPES:
            return ()
        parts.append(
            SearchParam(
                code=code,
                type=definition["type"],
                url=url,
                base=base,
                expression=expression,
                targets=tuple(definition.get("target", ())),
            )
        )
    return tuple(parts)


def description_for_base(description: str, base: str) -> str:
    """A multi-resource description lists one line per type (``* [Type](type.html): text``): keep ``base``'s."""
    marker = f"* [{base}]("
    for line in description.splitlines():
        if line.startswith(marker):
            return line.split("): ", 1)[-1].strip()
    return description.strip()


def build_registry(
    resource_types: list[str],
    definitions: list[dict[str, Any]],
    extras: list[dict[str, Any]],
    compartment: dict[str, list[str]],
) -> Registry:
    """Pure: assemble the registry from already-loaded definition lists."""
    types = frozenset(resource_types)
    params: dict[str, dict[str, SearchParam]] = {name: {} for name in sorted(types)}
    by_url: dict[str, SearchParam] = {}
    definitions_by_url = {definition["url"]: definition for definition in [*definitions, *extras]}
    for definition in [*definitions, *extras]:
        for base in definition["base"]:
            if base in COMMON_BASES:
                applies_to = [t for t in params if base == "Resource" or t not in NOT_DOMAIN_RESOURCES]
            else:
                applies_to = [base] if base in params else []
            for resource_type in applies_to:
                param = _param(definition, base if base not in COMMON_BASES else resource_type, definitions_by_url)
                params[resource_type][param.code] = param
                by_url.setdefault(param.url, param)
    return Registry(
        resource_types=types,
        search_params={name: dict(sorted(codes.items())) for name, codes in params.items()},
        patient_compartment={name: tuple(codes) for name, codes in compartment.items()},
        by_url=by_url,
    )


def _read(name: str) -> Any:
    return orjson.loads(resources.files("fhir_imaging.fhir").joinpath("definitions", name).read_bytes())


@cache
def load_registry() -> Registry:
    """The registry built from the shipped definitions (loaded once per process)."""
    return build_registry(
        _read("resource-types.json"),
        _read("search-parameters.json"),
        _read("search-parameters-extra.json"),
        _read("compartment-patient.json"),
    )
