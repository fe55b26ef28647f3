"""Who is asking: every service operation takes a ``Caller``. Without authorization every request is the anonymous
caller, allowed everything; with it, the caller carries the ``Access`` its verified token grants, and ``authorize``
is the one check every interaction passes.

Granular scopes (``user/ImagingStudy.rs?modality=CT``) allow an interaction on the resources matching their
queries only: ``granted`` says which, as groups of search filters (read by the service's ``GrantQueries``,
service/granular.py), and the service narrows searches and checks reads and writes with them. A query that does not
parse grants nothing, so ``authorize`` refuses an interaction that only such grants cover.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fhir_imaging.auth.scopes import NAMES, Access
from fhir_imaging.fhir.outcome import Forbidden
from fhir_imaging.search.query import Filter

# What granular grants allow of one type: a resource must match every filter of at least one group (the groups
# are the grants' queries, OR-ed; no group: nothing is allowed).
Groups = tuple[tuple[Filter, ...], ...]


class QueryReader(Protocol):
    def groups(self, queries: tuple[str, ...], resource_type: str) -> Groups:
        """The filters of each query that parses for ``resource_type`` (the others are left out)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """The party a request acts for."""

    name: str  # a stable name for logs and audit: the token's subject, or "anonymous"
    anonymous: bool = False
    access: Access | None = None  # None: unrestricted (the server runs without authorization)
    client_id: str | None = None
    queries: QueryReader | None = None  # reads granular grants' queries; None: such grants allow nothing

    def granted(self, interaction: str, resource_type: str) -> Groups | None:
        """Which resources of ``resource_type`` the scopes allow ``interaction`` (a letter of "cruds") on: None
        for every one (patient context aside: ``confined_to``), else those matching at least one group."""
        if self.access is None:
            return None
        queries = self.access.queries(interaction, resource_type)
        if queries is None:
            return None
        if not queries or self.queries is None:
            return ()
        return self.queries.groups(queries, resource_type)

    def may(self, interaction: str, resource_type: str) -> bool:
        """Whether ``interaction`` is allowed on ``resource_type`` (on some of its resources at least)."""
        return self.granted(interaction, resource_type) != ()

    def confined_to(self, interaction: str, resource_type: str) -> str | None:
        """The patient whose compartment bounds what the caller may do (``patient/`` scopes), or None."""
        return None if self.access is None else self.access.confined_to(interaction, resource_type)

    def authorize(self, interaction: str, resource_type: str, *expression: str) -> None:
        """Forbidden (403 insufficient_scope) unless the caller may do ``interaction`` on ``resource_type``."""
        if not self.may(interaction, resource_type):
            what = "every resource type" if resource_type == "*" else resource_type
            raise Forbidden(f"The access token's scopes do not allow {NAMES[interaction]} on {what}", *expression)


ANONYMOUS = Caller("anonymous", anonymous=True)
