"""The extensions the specification defines, used as defined: a known URL, an allowed value type, an allowed context.

Spec: https://hl7.org/fhir/R4/extensibility.html (extension URLs, modifier extensions), https://hl7.org/fhir/R4/
defining-extensions.html#context (where an extension may be used) and https://hl7.org/fhir/R4/extension-registry.html.

Only URLs in the core namespace ``http://hl7.org/fhir/StructureDefinition/`` are checked, against the table derived
from the definitions (``data/extensions.json``, tools/derive_validation.py): an unknown one there is an error (a typo
or an extension R4 does not have); any other URL is someone else's extension and stays allowed. A known extension
must carry one of the value types its ``value[x]`` allows (none for a complex extension), sit in ``modifierExtension``
exactly when it is a modifier, and be used on an element its contexts name: a type (``Element``, ``Patient``,
``CodeableConcept``, ``string``…) or a path (``Patient.name``, ``ImagingStudy.series``). The validator knows the
path of an element only from the structure that holds it: inside a datatype (``HumanName.family``) a path context
written from a resource (``Patient.name.family``) is accepted when its last element agrees.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import orjson

CORE = "http://hl7.org/fhir/StructureDefinition/"


@dataclass(frozen=True, slots=True)
class Definition:
    value_keys: frozenset[str]  # "valueString", "valueCodeableConcept"… (empty: a complex extension)
    contexts: tuple[str, ...]
    modifier: bool


@dataclass(frozen=True, slots=True)
class Holder:
    """Where an extension sits: the names its contexts may use (type names and the element's definition path)."""

    names: frozenset[str]
    path: str  # "Patient.name", "HumanName.family", "ImagingStudy.series", "Patient" (a resource)
    in_datatype: bool  # the path starts from a datatype, not from a resource


class CoreExtensions:
    """The table of core extensions; ``problems`` judges one extension object."""

    def __init__(self, table: Mapping[str, Mapping[str, Any]]) -> None:
        self.definitions = {
            url: Definition(
                frozenset("value" + code[0].upper() + code[1:] for code in spec["types"]),
                tuple(spec["contexts"]),
                bool(spec.get("modifier")),
            )
            for url, spec in table.items()
        }

    def problems(self, extension: dict[str, Any], slot: str, holder: Holder) -> list[tuple[str, str]]:
        """(element, reason) for a core extension used against its definition; [] for any other extension."""
        url = extension.get("url")
        if type(url) is not str or not url.startswith(CORE):
            return []
        definition = self.definitions.get(url)
        if definition is None:
            return [("url", f"{url!r} is not an extension defined by FHIR R4 (the URL is in its namespace)")]
        found: list[tuple[str, str]] = []
        for key in extension:
            if key.startswith("value") and key not in definition.value_keys:
                allowed = ", ".join(sorted(definition.value_keys)) or "no value (a complex extension)"
                found.append((key, f"{url} takes {allowed}, not {key}"))
        if definition.modifier != (slot == "modifierExtension"):
            where = "modifierExtension" if definition.modifier else "extension"
            found.append(("url", f"{url} is {'a' if definition.modifier else 'not a'} modifier: it belongs in {where}"))
        if not _in_context(definition.contexts, holder):
            contexts = ", ".join(definition.contexts)
            found.append(("url", f"{url} may not be used on {holder.path} (its contexts: {contexts})"))
        return found


def _in_context(contexts: Iterable[str], holder: Holder) -> bool:
    for context in contexts:
        if context in holder.names:
            return True
        if holder.in_datatype and "." in context and context.rsplit(".", 1)[1] == holder.path.rsplit(".", 1)[-1]:
            return True
    return False


def holder(type_names: Iterable[str], path: str, in_datatype: bool) -> Holder:
    """A ``Holder`` of the given types at ``path``; ``Element`` (every element) is always among its names."""
    return Holder(frozenset((*type_names, path, "Element")), path, in_datatype)


@cache
def core_extensions() -> CoreExtensions:
    """The table of the shipped package data (read once, on the first core extension met)."""
    data = resources.files("fhir_imaging.validation") / "data" / "extensions.json"
    return CoreExtensions(orjson.loads(data.read_bytes()))
