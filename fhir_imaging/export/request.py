"""A Bulk Data export request (https://hl7.org/fhir/uv/bulkdata/STU2/export.html), read from the kick-off's query
string or its ``Parameters`` body: pure, every refusal a 400 naming the parameter.

Supported: ``_outputFormat`` (``application/fhir+ndjson``, ``application/ndjson``, ``ndjson``), ``_since`` (an
instant), ``_type`` (comma-separated, repeatable), ``_typeFilter`` (``Type?search``, repeatable; filters of one type
are OR-ed), ``_elements`` (``Type.element`` or ``element``), and for Patient and Group exports ``patient``
(references, in a POST's ``Parameters`` only). Anything else (``includeAssociatedData``, ``_typeElements``,
``organizeOutputBy``, ``allowPartialManifests``…) is refused, or ignored with a warning in the manifest under
``Prefer: handling=lenient``, as the IG asks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from fhir_imaging.api.params import parse_since
from fhir_imaging.fhir.outcome import BadRequest
from fhir_imaging.fhir.registry import Registry
from fhir_imaging.fhir.resource import is_valid_id

OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
LEVELS = ("system", "patient", "group")
MAX_TYPE_FILTERS = 100
MAX_PATIENTS = 10_000


@dataclass(frozen=True)
class ExportRequest:
    """What one kick-off asks for."""

    level: str  # system | patient | group
    group: str | None = None  # the Group's id (group level)
    types: tuple[str, ...] = ()  # empty: every type the level and the caller's scopes allow
    since: str | None = None  # instant, stored format
    type_filters: dict[str, tuple[str, ...]] = field(default_factory=dict)  # type → query strings (OR-ed)
    elements: tuple[str, ...] = ()  # "Type.element" or "element"
    patients: tuple[str, ...] = ()  # Patient ids (patient/group level, POST)
    ignored: tuple[str, ...] = ()  # parameters ignored under handling=lenient

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "group": self.group,
            "types": list(self.types),
            "since": self.since,
            "type_filters": {name: list(queries) for name, queries in self.type_filters.items()},
            "elements": list(self.elements),
            "patients": list(self.patients),
            "ignored": list(self.ignored),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportRequest:
        return cls(
            level=data["level"],
            group=data.get("group"),
            types=tuple(data.get("types", ())),
            since=data.get("since"),
            type_filters={name: tuple(queries) for name, queries in data.get("type_filters", {}).items()},
            elements=tuple(data.get("elements", ())),
            patients=tuple(data.get("patients", ())),
            ignored=tuple(data.get("ignored", ())),
        )


def parameters_items(body: Any) -> list[tuple[str, str]]:
    """The (name, value) pairs of a POST kick-off's ``Parameters`` resource (``patient`` values as references)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise BadRequest("A POST kick-off carries a Parameters resource", "resourceType")
    items: list[tuple[str, str]] = []
    for index, parameter in enumerate(body.get("parameter", [])):
        name = parameter.get("name") if isinstance(parameter, dict) else None
        if not isinstance(name, str):
            raise BadRequest("Every parameter needs a name", f"Parameters.parameter[{index}].name")
        values = [value for key, value in parameter.items() if key.startswith("value")]
        reference = parameter.get("valueReference")
        if isinstance(reference, dict) and isinstance(reference.get("reference"), str):
            items.append((name, reference["reference"]))
        elif len(values) == 1 and isinstance(values[0], str):
            items.append((name, values[0]))
        else:
            raise BadRequest(f"Parameter {name[:40]} needs one value (a string or a reference)", name)
    return items


def query_items(query_string: str) -> list[tuple[str, str]]:
    return parse_qsl(query_string, keep_blank_values=True)


def parse_export(
    registry: Registry,
    level: str,
    items: Iterable[tuple[str, str]],
    *,
    group: str | None = None,
    lenient: bool = False,
    from_body: bool = False,
) -> ExportRequest:
    """The export request of a kick-off at ``level`` with parameters ``items``."""
    types: list[str] = []
    since: str | None = None
    filters: dict[str, list[str]] = {}
    elements: list[str] = []
    patients: list[str] = []
    ignored: list[str] = []
    for name, value in items:
        if name == "_outputFormat":
            if value not in OUTPUT_FORMATS:
                raise BadRequest(f"_outputFormat must be one of {', '.join(sorted(OUTPUT_FORMATS))}", name)
        elif name == "_since":
            if since is not None:
                raise BadRequest("_since may be given once", name)
            since = parse_since(value)
        elif name == "_type":
            for item in value.split(","):
                types.append(_known_type(registry, item.strip(), name))
        elif name == "_typeFilter":
            resource_type, mark, query = value.partition("?")
            if not mark or not query:
                raise BadRequest("_typeFilter must be a search such as ImagingStudy?modality=CT", name)
            filters.setdefault(_known_type(registry, resource_type, name), []).append(query)
            if sum(len(queries) for queries in filters.values()) > MAX_TYPE_FILTERS:
                raise BadRequest(f"At most {MAX_TYPE_FILTERS} _typeFilter values", name)
        elif name == "_elements":
            elements.extend(item.strip() for item in value.split(",") if item.strip())
        elif name == "patient" and from_body and level != "system":
            patients.append(_patient_id(value))
            if len(patients) > MAX_PATIENTS:
                raise BadRequest(f"At most {MAX_PATIENTS} patient parameters", name)
        elif name in ("_format",):
            continue
        elif lenient:
            ignored.append(name)
        else:
            raise BadRequest(
                f"The export parameter {name[:60]} is not supported (say Prefer: handling=lenient to have it ignored)",
                name[:60],
            )
    if types:
        outside = [name for name in filters if name not in types]
        if outside:
            raise BadRequest(f"_typeFilter names {outside[0]}, which _type leaves out", "_typeFilter")
    return ExportRequest(
        level=level,
        group=group,
        types=tuple(dict.fromkeys(types)),
        since=since,
        type_filters={name: tuple(queries) for name, queries in filters.items()},
        elements=tuple(dict.fromkeys(elements)),
        patients=tuple(dict.fromkeys(patients)),
        ignored=tuple(dict.fromkeys(ignored)),
    )


def _known_type(registry: Registry, name: str, parameter: str) -> str:
    if not registry.is_resource_type(name):
        raise BadRequest(f"{name[:60]!r} is not an R4 resource type", parameter)
    return name


def _patient_id(reference: str) -> str:
    head, slash, patient_id = reference.rpartition("Patient/")
    if not slash or not is_valid_id(patient_id) or (head and not head.endswith("/")):
        raise BadRequest(f"patient must reference a Patient (Patient/id), not {reference[:60]!r}", "patient")
    return patient_id
