"""Rules on primitive values that the datatypes' regular expressions cannot state, and on Attachment's data.

Spec: https://hl7.org/fhir/R4/datatypes.html: date, dateTime and instant are dates that exist ("a valid date in
the calendar": ``2023-02-30`` and ``2023-02-29`` match the regex but name no day); "Strings SHALL NOT exceed 1MB in
size" (read as 1024 × 1024 characters); xhtml is a narrative (narrative.py); Attachment ``size`` is "the number of
bytes of data that make up this content (before base64 encoding)" and ``hash`` "the calculated hash of the data using
SHA-1, represented using base64".

Each rule runs only on a value that already matched its type's regex, and returns ``None`` or a short reason.
Hours 24 and minutes 60 never match the R4 regexes; a leap second (``:60``) does, and is accepted as R4 and HL7's
validator accept it.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
from collections.abc import Callable
from typing import Any

from fhir_imaging.validation.narrative import html_checks

ValueRule = Callable[[str], "str | None"]

MAX_STRING_LENGTH = 1024 * 1024  # datatypes.html#string: "SHALL NOT exceed 1MB"


def date_exists(value: str) -> str | None:
    """A date (or the date part of a dateTime / instant) with a day names a day of the calendar."""
    if len(value) < 10:  # a year, or a year and month: the regex allows only existing months
        return None
    year, month, day = int(value[0:4]), int(value[5:7]), int(value[8:10])
    if day > calendar.monthrange(year, month)[1]:
        return f"{value[:10]!r} is not a day of the calendar"
    return None


def string_length(value: str) -> str | None:
    if len(value) > MAX_STRING_LENGTH:
        return f"a string of {len(value)} characters is over the limit of {MAX_STRING_LENGTH} (1MB)"
    return None


def narrative_xhtml(value: str) -> str | None:
    problems = html_checks(value)
    return "; ".join(problems) if problems else None


RULES: dict[str, ValueRule] = {
    "date": date_exists,
    "dateTime": date_exists,
    "instant": date_exists,
    "string": string_length,
    "xhtml": narrative_xhtml,
}


def attachment_problems(attachment: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(element, severity, reason) for an Attachment whose ``size`` or ``hash`` does not match its ``data`` (only
    when both are present and of the right JSON types; other faults are reported by the structure walk). A wrong
    size is an error; a wrong hash only a warning: HL7's own example DiagnosticReport-example-pgx carries a hex
    digest of other data, and HL7's validator accepts it."""
    data = attachment.get("data")
    size, digest = attachment.get("size"), attachment.get("hash")
    if type(data) is not str or (type(size) is not int and type(digest) is not str):
        return []
    try:
        content = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return []  # not base64: the value rule of base64Binary reports it
    problems = []
    if type(size) is int and size != len(content):
        problems.append(("size", "error", f"size is {size}, but data holds {len(content)} bytes"))
    if type(digest) is str and digest != base64.b64encode(hashlib.sha1(content).digest()).decode():
        problems.append(("hash", "warning", "hash is not the base64 SHA-1 of data"))
    return problems


def attachment_ok(attachment: Any) -> bool:
    """The yes/no form of ``attachment_problems`` (for the fast pass)."""
    if type(attachment) is not dict or "data" not in attachment:
        return True
    if "size" not in attachment and "hash" not in attachment:
        return True
    return not attachment_problems(attachment)
