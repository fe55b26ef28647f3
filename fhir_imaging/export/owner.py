"""Who an export job belongs to: the caller of its kick-off, kept with the job so that the runner exports what that
caller may see (its scopes and patient context, checked again as each resource is written) and so that only that
caller may read the job's status and files."""

from __future__ import annotations

from typing import Any

from fhir_imaging.auth.scopes import Access, Grant
from fhir_imaging.service.caller import Caller


def owner_of(caller: Caller) -> dict[str, Any]:
    owner: dict[str, Any] = {"name": caller.name, "client_id": caller.client_id, "anonymous": caller.anonymous}
    if caller.access is not None:
        owner["patient"] = caller.access.patient
        owner["grants"] = [
            [grant.context, grant.resource_type, "".join(sorted(grant.interactions)), grant.query]
            for grant in caller.access.grants
        ]
    return owner


def caller_of(owner: dict[str, Any]) -> Caller:
    access = None
    if "grants" in owner:
        grants = tuple(
            Grant(context, kind, frozenset(letters), query) for context, kind, letters, query in owner["grants"]
        )
        access = Access(grants, owner.get("patient"))
    return Caller(
        owner["name"], anonymous=owner.get("anonymous", False), access=access, client_id=owner.get("client_id")
    )


def same_owner(owner: dict[str, Any], caller: Caller) -> bool:
    """Whether ``caller`` is the party that started the job (the same subject and client)."""
    return bool(owner["name"] == caller.name and owner.get("client_id") == caller.client_id)
