"""Bulk Data export (https://hl7.org/fhir/uv/bulkdata/STU2/export.html): the kick-offs ``[base]/$export``,
``[base]/Patient/$export`` and ``[base]/Group/[id]/$export`` (GET with query parameters, or POST with a Parameters
resource; ``Prefer: respond-async`` required) answer ``202`` with the status URL in ``Content-Location``; the status
URL answers ``202`` with ``X-Progress`` and ``Retry-After`` while the job runs, then ``200`` with the manifest, and
``DELETE`` cancels the job; the manifest's files are served from ``[base]/$export-file/[job]/[name]``.

Jobs live in the database and run in the background (export/runner.py); only the caller that started a job sees its
status and files (another caller gets 404, which does not confirm the job exists).
"""

from __future__ import annotations

import time
from email.utils import formatdate
from functools import partial
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from fhir_imaging.api.context import BASE_PATH, bases, caller, endpoint, file_endpoint, in_thread, read_body, service
from fhir_imaging.api.formats import check_content_type
from fhir_imaging.api.headers import _prefer
from fhir_imaging.api.rendering import fhir_response
from fhir_imaging.export import jobs
from fhir_imaging.export.owner import owner_of, same_owner
from fhir_imaging.export.request import ExportRequest, parameters_items, parse_export, query_items
from fhir_imaging.export.runner import ExportRunner
from fhir_imaging.fhir.outcome import BadRequest, Forbidden, Issue, NotFound, operation_outcome
from fhir_imaging.fhir.resource import is_valid_id, new_id, without_bom
from fhir_imaging.service import Caller
from fhir_imaging.storage.sqlstore import SqlReader, SqlStore

NDJSON = "application/fhir+ndjson"
RETRY_AFTER = "1"  # seconds a client should wait before asking for the status again (HTTP: whole seconds)


def _runner(request: Request) -> ExportRunner:
    runner: ExportRunner | None = request.app.state.export_runner
    if runner is None:
        raise NotFound("Bulk export is not available on this server")
    return runner


@endpoint
async def export_system(request: Request) -> Response:
    return await _kick_off(request, "system", None)


@endpoint
async def export_patient(request: Request) -> Response:
    return await _kick_off(request, "patient", None)


@endpoint
async def export_group(request: Request) -> Response:
    group_id: str = request.path_params["id"]
    if not is_valid_id(group_id):
        raise NotFound(f"Group/{group_id[:64]} is not known", "id")
    return await _kick_off(request, "group", group_id)


async def _kick_off(request: Request, level: str, group: str | None) -> Response:
    runner = _runner(request)
    prefer = request.headers.get("prefer")
    if _prefer(prefer, "respond-async") is None:
        raise BadRequest("A bulk export is asynchronous: send the header Prefer: respond-async", "Prefer")
    lenient = _prefer(prefer, "handling") == "lenient"
    svc = service(request)
    if request.method == "POST":
        check_content_type(request.headers.get("content-type"))  # FHIR JSON: no cross-site kick-off from a form
        body = await read_body(request)
        try:
            parsed = orjson.loads(without_bom(body))
        except orjson.JSONDecodeError:
            raise BadRequest("The kick-off body is not JSON (a Parameters resource)", "Parameters") from None
        items = parameters_items(parsed)
    else:
        items = query_items(request.scope["query_string"].decode("latin-1"))
    export = parse_export(svc.registry, level, items, group=group, lenient=lenient, from_body=request.method == "POST")
    who = caller(request)
    _authorize(who, export)
    where = bases(request)
    store = svc.store
    assert isinstance(store, SqlStore)
    request_url = where.url + request.url.path.removeprefix(BASE_PATH)
    if request.url.query:
        request_url += f"?{request.url.query}"

    def start(tx: Any) -> jobs.Job:
        if group is not None:
            _check_group(svc, who, tx, group, where)
        return jobs.create_job(tx, new_id(), export, owner_of(who), where.url, request_url)

    job = await in_thread(store.transact, start)
    runner.wake()
    status_url = f"{where.url}/$export-status/{job.id}"
    outcome = operation_outcome([Issue("information", "informational", f"Export started: poll {status_url}")])
    return fhir_response(request, outcome, 202, {"Content-Location": status_url})


def _authorize(who: Caller, export: ExportRequest) -> None:
    """Each type asked for must be readable and searchable by the caller, by scopes without a query (without
    ``_type`` the runner keeps to the types it may read and search that way: export/owner.py builds its caller
    without granular grants' queries, which then allow nothing); patient scopes allow Patient and Group exports
    only (the runner then keeps to the caller's patient)."""
    for resource_type in export.types:
        who.authorize("r", resource_type, "_type")
        who.authorize("s", resource_type, "_type")
        if who.granted("r", resource_type) is not None or who.granted("s", resource_type) is not None:
            raise Forbidden(
                f"Granular scopes (with a search query) do not allow a bulk export of {resource_type}: ask with a "
                "scope without a query, or use _typeFilter",
                "_type",
            )
    if who.access is None:
        return
    if not any({"r", "s"} <= grant.interactions for grant in who.access.grants):
        raise Forbidden("The access token's scopes allow no resource type to be read and searched")
    if export.level == "system":
        confined = [who.confined_to("r", name) for name in export.types or ("*",)]
        if any(patient is not None for patient in confined):
            raise Forbidden("Patient scopes allow Patient/$export and Group/[id]/$export only", "$export")


def _check_group(svc: Any, who: Caller, reader: SqlReader, group: str, where: Any) -> None:
    who.authorize("r", "Group")
    version = reader.read("Group", group)
    if version is None or version.body is None or not svc.visible(who, "r", version, where):
        raise NotFound(f"Group/{group} is not known", "id")


async def _owned_job(request: Request) -> jobs.Job:
    job_id: str = request.path_params["job"]
    store = service(request).store
    assert isinstance(store, SqlStore)
    job: jobs.Job | None = None
    if is_valid_id(job_id):
        job = await in_thread(store.reading, partial(jobs.get_job, job_id=job_id))
    if job is None or job.state == "cancelled" or not same_owner(job.owner, caller(request)):
        raise NotFound(f"There is no export {job_id[:64]}", "job")
    return job


@endpoint
async def export_status(request: Request) -> Response:
    _runner(request)
    job = await _owned_job(request)
    if job.state in jobs.ACTIVE:
        progress = job.progress or ("queued" if job.state == "accepted" else "starting")
        return Response(status_code=202, headers={"X-Progress": progress[:100], "Retry-After": RETRY_AFTER})
    assert job.manifest is not None
    if job.state == "failed":
        message = str(job.manifest.get("error", "the export failed"))
        outcome = operation_outcome([Issue("error", "exception", f"The export failed: {message}")])
        return fhir_response(request, outcome, 500)
    return Response(orjson.dumps(job.manifest), media_type="application/json", headers={"Expires": _expires(request)})


def _expires(request: Request) -> str:
    """When the files go (the manifest's HTTP ``Expires``, as the IG suggests)."""
    return formatdate(time.time() + service(request).settings.export_ttl, usegmt=True)


@endpoint
async def export_cancel(request: Request) -> Response:
    runner = _runner(request)
    job = await _owned_job(request)
    store = service(request).store
    assert isinstance(store, SqlStore)
    await in_thread(store.transact, lambda tx: jobs.cancel(tx, job.id))
    runner.wake()
    outcome = operation_outcome([Issue("information", "informational", f"Export {job.id} cancelled")])
    return fhir_response(request, outcome, 202)


@file_endpoint
async def export_file(request: Request) -> Response:
    runner = _runner(request)
    job = await _owned_job(request)
    name: str = request.path_params["name"]
    manifest = job.manifest or {}
    listed = {entry["url"].rsplit("/", 1)[-1] for part in ("output", "error") for entry in manifest.get(part, [])}
    if job.state != "completed" or name not in listed:  # only names the manifest lists: no path reaches elsewhere
        raise NotFound(f"The export {job.id} has no file {name[:64]}", "name")
    path = runner.folder(job.id) / name
    if not path.is_file():
        raise NotFound(f"The file {name} of export {job.id} has expired", "name")
    return FileResponse(path, media_type=NDJSON)
