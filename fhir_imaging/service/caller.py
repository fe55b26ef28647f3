"""Who is asking: every service operation takes a ``Caller``. Today every request is the anonymous caller; access
control decides from the caller what each operation may see and do."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    """The party a request acts for."""

    name: str  # a stable name for logs and audit ("anonymous" when the request carried no identity)
    anonymous: bool = False


ANONYMOUS = Caller("anonymous", anonymous=True)
