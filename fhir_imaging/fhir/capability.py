"""The CapabilityStatement, generated from the registry and the route table (https://hl7.org/fhir/R4/capabilitystatement.html).

Pure: given the registry, the interactions the routes offer and the base URL, it builds the resource.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fhir_imaging import FHIR_VERSION, __version__
from fhir_imaging.fhir.registry import Registry

FORMATS = ["application/fhir+json", "application/json"]
PATIENT_COMPARTMENT = "http://hl7.org/fhir/CompartmentDefinition/patient"


_REVINCLUDES: dict[int, dict[str, list[str]]] = {}


def _revincludes(registry: Registry) -> dict[str, list[str]]:
    """Target type → the ``Source:param`` references that may point at it (for ``searchRevInclude``)."""
    if id(registry) not in _REVINCLUDES:
        out: dict[str, list[str]] = {}
        for source in sorted(registry.resource_types):
            for param in registry.searchable_params(source):
                if param.type == "reference":
                    for target in param.targets or sorted(registry.resource_types):
                        out.setdefault(target, []).append(f"{source}:{param.code}")
        _REVINCLUDES[id(registry)] = out
    return _REVINCLUDES[id(registry)]


BULK_DATA = "http://hl7.org/fhir/uv/bulkdata"
BULK_TYPE_OPERATIONS = {  # Bulk Data Access IG v2.0.0: the kick-offs at type and instance level
    "Patient": ({"name": "export", "definition": f"{BULK_DATA}/OperationDefinition/patient-export"},),
    "Group": ({"name": "export", "definition": f"{BULK_DATA}/OperationDefinition/group-export"},),
}


def _resource_entry(
    registry: Registry, resource_type: str, interactions: Iterable[str], search: bool, operations: Iterable[str]
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": resource_type,
        "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
        "interaction": [{"code": code} for code in interactions],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "full-support",
        "conditionalUpdate": True,
        "conditionalDelete": "multiple",
    }
    if search:
        params = []
        for param in registry.searchable_params(resource_type):
            item = {"name": param.code, "definition": param.url, "type": param.type}
            if param.description:
                item["documentation"] = param.description
            params.append(item)
        entry["searchParam"] = params
        references = [param.code for param in registry.searchable_params(resource_type) if param.type == "reference"]
        entry["searchInclude"] = ["*", *(f"{resource_type}:{code}" for code in references)]
        entry["searchRevInclude"] = _revincludes(registry).get(resource_type, [])
    entry["operation"] = [
        {"name": name, "definition": f"http://hl7.org/fhir/OperationDefinition/Resource-{name}"} for name in operations
    ]
    entry["operation"].extend(BULK_TYPE_OPERATIONS.get(resource_type, ()))
    if not entry["operation"]:
        del entry["operation"]
    return entry


def capability_statement(
    registry: Registry,
    type_interactions: Iterable[str],
    system_interactions: Iterable[str],
    base: str,
    date: str,
    searchable: bool = True,
    operations: Iterable[str] = (),
    cors: bool = False,
    oauth: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The server's CapabilityStatement. ``oauth`` (with authorization): the SMART on FHIR endpoints by name
    (``token``, ``authorize``, ``introspect``), declared in ``rest.security`` with the SMART-on-FHIR service code."""
    type_codes = list(type_interactions)
    operation_list = list(operations)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "fhir-imaging",
        "kind": "instance",
        "instantiates": [f"{BULK_DATA}/CapabilityStatement/bulk-data"],
        "software": {"name": "fhir-imaging", "version": __version__},
        "implementation": {"description": "fhir-imaging FHIR R4 server for medical imaging", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": FORMATS,
        "rest": [
            {
                "mode": "server",
                "security": _security(cors, oauth),
                "resource": [
                    _resource_entry(
                        registry, name, type_codes, searchable and "search-type" in type_codes, operation_list
                    )
                    for name in sorted(registry.resource_types)
                ],
                "interaction": [{"code": code} for code in system_interactions],
                "operation": [{"name": "export", "definition": f"{BULK_DATA}/OperationDefinition/export"}],
                **({"compartment": [PATIENT_COMPARTMENT]} if searchable and "search-type" in type_codes else {}),
            }
        ],
    }


SMART_SERVICE = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}],
    "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
}
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def _security(cors: bool, oauth: dict[str, str] | None) -> dict[str, Any]:
    """``rest.security``: whether CORS headers are sent (for the origins of the cors_origin setting) and, with
    authorization, the SMART service and its OAuth endpoints."""
    security: dict[str, Any] = {"cors": cors}
    if oauth is not None:
        if oauth:
            uris = [{"url": name, "valueUri": uri} for name, uri in oauth.items()]
            security["extension"] = [{"url": OAUTH_URIS, "extension": uris}]
        security["service"] = [SMART_SERVICE]
        security["description"] = "Every request but /metadata and the SMART configuration needs a bearer token"
    return security
