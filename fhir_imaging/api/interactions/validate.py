"""$validate: https://hl7.org/fhir/R4/resource-operation-validate.html

``POST /[type]/$validate`` and ``POST /[type]/[id]/$validate`` take the resource itself or a Parameters resource
with a ``resource`` parameter (and an optional ``mode``). The answer is 200 with an OperationOutcome listing every
issue, valid or not; nothing is stored. Only a request the operation cannot work on at all is a 4xx. Reading the
body and validating run in a worker thread.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.context import caller, endpoint, in_thread, read_body, resource_type_of, service
from fhir_imaging.api.formats import check_content_type
from fhir_imaging.api.rendering import fhir_response
from fhir_imaging.fhir.outcome import BadRequest, Issue, operation_outcome
from fhir_imaging.fhir.resource import parse_resource_json

MODES = ("create", "update", "delete")


def _unwrap(body: dict[str, Any], resource_type: str) -> tuple[dict[str, Any] | None, str | None]:
    """The resource to validate and the mode, from a bare resource or a Parameters wrapper."""
    if body["resourceType"] != "Parameters" or resource_type == "Parameters":
        return body, None
    parameters = body.get("parameter", [])
    if not isinstance(parameters, list):
        raise BadRequest("Parameters.parameter is a list of parameters", "Parameters.parameter")
    resource, mode = None, None
    for number, parameter in enumerate(parameters):
        where = f"Parameters.parameter[{number}]"
        if not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str):
            raise BadRequest("Each parameter is an object with a name", f"{where}.name")
        if parameter["name"] == "resource":
            resource = _resource_parameter(parameter, where)
        elif parameter["name"] == "mode":
            mode = parameter.get("valueCode")
            if mode not in MODES:
                raise BadRequest(f"mode must be one of {', '.join(MODES)}, not {mode!r}", f"{where}.valueCode")
    if resource is None and mode != "delete":
        raise BadRequest("The Parameters resource has no 'resource' parameter to validate", "Parameters.parameter")
    return resource, mode


def _resource_parameter(parameter: dict[str, Any], where: str) -> dict[str, Any]:
    resource = parameter.get("resource")
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise BadRequest("The 'resource' parameter holds a resource, with its resourceType", f"{where}.resource")
    return resource


async def _validate(request: Request, resource_id: str | None) -> Response:
    svc = service(request)
    resource_type = resource_type_of(request)
    check_content_type(request.headers.get("content-type"))
    body = await in_thread(parse_resource_json, await read_body(request))
    resource, mode = _unwrap(body, resource_type)
    mode = mode or request.query_params.get("mode")
    if resource is None:
        issues: list[Issue] = []
    elif resource.get("resourceType") != resource_type:
        raise BadRequest(
            f"The resourceType '{resource.get('resourceType')}' does not match the type in the URL, '{resource_type}'",
            "resourceType",
        )
    else:
        issues = await in_thread(svc.validation_issues, caller(request), resource, resource_id, mode)
    if not issues:
        issues = [Issue("information", "informational", "No issues: the resource is valid")]
    return fhir_response(request, operation_outcome(issues))


@endpoint
async def validate_type(request: Request) -> Response:
    return await _validate(request, None)


@endpoint
async def validate_instance(request: Request) -> Response:
    return await _validate(request, request.path_params["id"])
