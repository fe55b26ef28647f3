"""SMART on FHIR scopes (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html), v2 and v1, read into
grants: which interactions (c create, r read/vread/history, u update/patch, d delete, s search) a token allows on
which resource types. Pure: plain string handling, no regular expressions.

v2: ``patient/ImagingStudy.rs``, ``user/*.cruds``, ``system/*.rs``; v1: ``.read`` (= rs), ``.write`` (= cud),
``.*`` (= cruds). Scopes that are not resource scopes (``openid``, ``fhirUser``, ``launch``…) grant nothing here.
A scope that cannot be read grants nothing (it is not an error: a token may carry scopes for other servers).
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
        """Whether ``interaction`` (a letter of "cruds") is allowed on every resource of ``resource_type``.

        Only ``user/`` and ``system/`` grants without a query count here: a ``patient/`` grant confines access to one
        patient's compartment, and a granular grant (``?category=…``) to the resources matching its query, and both
        are refused until those confinements are enforced (they never widen access)."""
        return any(
            grant.context != "patient" and not grant.query and grant.covers(interaction, resource_type)
            for grant in self.grants
        )

    def readable_types(self, resource_types: frozenset[str]) -> frozenset[str]:
        """The types whose resources this access may read (for system-wide searches and ``_include``)."""
        return frozenset(name for name in resource_types if self.allows("r", name) or self.allows("s", name))
