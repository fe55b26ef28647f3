"""SMART on FHIR scopes (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html), v2 and v1, read into
grants: which interactions (c create, r read/vread/history, u update/patch, d delete, s search) a token allows on
which resource types. Pure: plain string handling, no regular expressions.

v2: ``patient/ImagingStudy.rs``, ``user/*.cruds``, ``system/*.rs``; v1: ``.read`` (= rs), ``.write`` (= cud),
``.*`` (= cruds). Scopes that are not resource scopes (``openid``, ``fhirUser``, ``launch``…) grant nothing here.
A scope that cannot be read grants nothing (it is not an error: a token may carry scopes for other servers).

Granular v2 scopes (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html, "Finer-grained resource
constraints using search parameters"): ``patient/Observation.rs?category=…|laboratory`` allows its interactions on
its type only on the resources that match its query. Several grants covering the same interaction and type combine
with OR; one without a query covering it makes it unrestricted (``Access.queries``). Here the query stays text: the
service reads it with the search parser for each type (service/granular.py), where a query that does not parse
grants nothing for that type. Patient context (``confined_to``) still applies on top of ``patient/`` grants.
"""

from __future__ import annotations

from dataclasses import dataclass

CONTEXTS = ("patient", "user", "system")
V2_ORDER = "cruds"
V1 = {"read": frozenset("rs"), "write": frozenset("cud"), "*": frozenset("cruds")}
NAMES = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


@dataclass(frozen=True, slots=True)
class Grant:
    """One resource scope: a context, a resource type (or ``*``), the interactions, and (v2 granular scopes) the
    search parameters that narrow it."""

    context: str  # patient | user | system
    resource_type: str  # a resource type, or "*"
    interactions: frozenset[str]  # letters of "cruds"
    query: str = ""  # e.g. "category=laboratory" (granular v2 scope)

    def covers(self, interaction: str, resource_type: str) -> bool:
        return interaction in self.interactions and self.resource_type in ("*", resource_type)


def parse_scope(scope: str) -> Grant | None:
    """One scope → its grant, or None when it is not a (readable) resource scope."""
    context, slash, rest = scope.partition("/")
    if not slash or context not in CONTEXTS:
        return None
    head, _, query = rest.partition("?")
    resource_type, dot, permissions = head.rpartition(".")
    if not dot or not resource_type or not (resource_type == "*" or resource_type.isalpha()):
        return None
    interactions = V1.get(permissions) or _v2_permissions(permissions)
    if interactions is None:
        return None
    return Grant(context, resource_type, interactions, query)


def _v2_permissions(text: str) -> frozenset[str] | None:
    """``rs`` → {r, s}; the letters must be a subsequence of "cruds" (each once, in order)."""
    if not text:
        return None
    position = 0
    for letter in text:
        found = V2_ORDER.find(letter, position)
        if found < 0:
            return None
        position = found + 1
    return frozenset(text)


def parse_scopes(text: str) -> tuple[Grant, ...]:
    """Every resource grant in a space-separated scope string (the ``scope`` claim)."""
    grants = (parse_scope(scope) for scope in text.split())
    return tuple(grant for grant in grants if grant is not None)


@dataclass(frozen=True, slots=True)
class Access:
    """What one verified token allows."""

    grants: tuple[Grant, ...]
    patient: str | None = None  # the patient in context (the token's ``patient`` claim)

    def allows(self, interaction: str, resource_type: str) -> bool:
        """Whether some grant allows ``interaction`` (a letter of "cruds") on ``resource_type``, on some resources
        at least: a ``user/`` or ``system/`` grant, or a ``patient/`` grant when a patient is in context (then
        confined to that patient's compartment: see ``confined_to``); a granular grant allows it on the resources
        matching its query (see ``queries``)."""
        return any(self._counts(grant) and grant.covers(interaction, resource_type) for grant in self.grants)

    def queries(self, interaction: str, resource_type: str) -> tuple[str, ...] | None:
        """Which resources the grants allow ``interaction`` on: None for every one (a grant without a query covers
        it), else those matching at least one of these queries (each once, in the token's order; none: no grant
        covers it)."""
        found: list[str] = []
        for grant in self.grants:
            if self._counts(grant) and grant.covers(interaction, resource_type):
                if not grant.query:
                    return None
                found.append(grant.query)
        return tuple(dict.fromkeys(found))

    def confined_to(self, interaction: str, resource_type: str) -> str | None:
        """The patient whose compartment bounds ``interaction`` on ``resource_type``: the patient in context unless
        a ``user/`` or ``system/`` grant without a query allows it. (With granular grants of both kinds, the
        compartment then bounds the ``user/`` ones too: narrower than their union, never wider.)"""
        for grant in self.grants:
            if grant.context != "patient" and not grant.query and grant.covers(interaction, resource_type):
                return None
        return self.patient

    def _counts(self, grant: Grant) -> bool:
        return grant.context != "patient" or self.patient is not None
