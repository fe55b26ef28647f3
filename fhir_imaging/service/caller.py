"""Who is asking: every service operation takes a ``Caller``. Without authorization every request is the anonymous
caller, allowed everything; with it, the caller carries the ``Access`` its verified token grants, and ``authorize``
is the one check every interaction passes."""

from __future__ import annotations

from dataclasses import dataclass

from fhir_imaging.auth.scopes import NAMES, Access
from fhir_imaging.fhir.outcome import Forbidden


@dataclass(frozen=True, slots=True)
class Caller:
    """The party a request acts for."""

    name: str  # a stable name for logs and audit: the token's subject, or "anonymous"
    anonymous: bool = False
    access: Access | None = None  # None: unrestricted (the server runs without authorization)
    client_id: str | None = None

    def may(self, interaction: str, resource_type: str) -> bool:
        """Whether ``interaction`` (a letter of "cruds") is allowed on ``resource_type``."""
        return self.access is None or self.access.allows(interaction, resource_type)

    def confined_to(self, interaction: str, resource_type: str) -> str | None:
        """The patient whose compartment bounds what the caller may do (``patient/`` scopes), or None."""
        return None if self.access is None else self.access.confined_to(interaction, resource_type)

    def authorize(self, interaction: str, resource_type: str, *expression: str) -> None:
        """Forbidden (403 insufficient_scope) unless the caller may do ``interaction`` on ``resource_type``."""
        if not self.may(interaction, resource_type):
            what = "every resource type" if resource_type == "*" else resource_type
            raise Forbidden(f"The access token's scopes do not allow {NAMES[interaction]} on {what}", *expression)


ANONYMOUS = Caller("anonymous", anonymous=True)
