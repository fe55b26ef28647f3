"""Invariants of the R4 definitions compiled by hand into Python: the ones every imaging write meets.

Spec: https://hl7.org/fhir/R4/conformance-rules.html#constraints, https://hl7.org/fhirpath/N1/ (the semantics each
function follows: ``exists()``, ``empty()``, ``hasValue()``, date/time comparison with precision).

``COMPILED`` maps a constraint's FHIRPath ``expression`` (exactly as HL7 wrote it) to a function of the focus (the
JSON object the constraint sits on) and the ``Scope`` (``%resource``, ``%rootResource``). Keying by the expression
means a changed definition falls back to fhirpathpy instead of running a stale translation; the tests compare each
function with fhirpathpy on the official examples and on mutations. A function answers True (satisfied), False
(violated) or None (FHIRPath's empty result: unknown, e.g. two dates of different precision that agree as far as
both go), like the expression would.

ele-1 (every element has a value or children) is not here: the invariant walk checks it on every object it visits
(``invariants.py``), since the FHIR JSON rules leave one shape for it to catch, an object holding only ``id``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from fhir_imaging import linear_regex


class Scope:
    """The FHIRPath environment of a constraint: ``%resource`` and ``%rootResource`` (the container of a contained
    resource; a resource in a Bundle or Parameters is its own root: fhirpath.html#variables)."""

    __slots__ = ("cache", "resource", "root")

    def __init__(self, resource: dict[str, Any], root: dict[str, Any], cache: dict[str, Any] | None = None) -> None:
        self.resource = resource
        self.root = root
        self.cache = {} if cache is None else cache  # shared by every scope of one root

    def contained_ids(self) -> frozenset[Any]:
        """The ids of the root's contained resources (computed once per root: ref-1 stays linear)."""
        ids = self.cache.get("ids")
        if ids is None:
            ids = self.cache["ids"] = frozenset(item.get("id") for item in _contained(self.root))
        return ids


Compiled = Callable[[Any, Scope], "bool | None"]


def _exists(obj: dict[str, Any], key: str) -> bool:
    """``key.exists()`` on an object: the element has a value or (a primitive) only extensions (``_key``)."""
    return key in obj or "_" + key in obj


def _has_value(obj: dict[str, Any], key: str) -> bool:
    """``key.hasValue()``: a single primitive with a value (not one with only extensions)."""
    value = obj.get(key)
    return value is not None and type(value) is not list and type(value) is not dict


def ext_1(obj: dict[str, Any], scope: Scope) -> bool:
    """``extension.exists() != value.exists()``: an extension holds either extensions or a value[x]."""
    has_value = any(key.startswith(("value", "_value")) for key in obj)
    return ("extension" in obj) != has_value


# -- dates: FHIRPath comparison with precision (fhirpath.html#comparison) ------------------------------------------

_DATE = linear_regex.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?"
)  # RE2: linear in the value


def _moment(text: str) -> tuple[tuple[float, ...], bool] | None:
    """The value's components (year … seconds) and whether it has a time of day with a timezone (then the
    components are in UTC)."""
    match = _DATE.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = (match.group(i) for i in range(1, 9))
    parts: list[int] = [int(year)]
    for piece in (month, day):
        if piece is None:
            return tuple(parts), False
        parts.append(int(piece))
    if hour is None:
        return tuple(parts), False
    seconds = int(second or 0) + (float("0." + fraction) if fraction else 0.0)
    if zone is None:
        return (*parts, int(hour), int(minute), seconds), False
    offset = timedelta(0) if zone == "Z" else timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    sign = -1 if zone.startswith("-") else 1
    try:
        local = datetime(parts[0], parts[1], parts[2], int(hour), int(minute), tzinfo=timezone(sign * offset))
    except ValueError:
        return None
    utc = local.astimezone(UTC)
    return (utc.year, utc.month, utc.day, utc.hour, utc.minute, seconds), True


def compare_moments(a: str, b: str) -> int | None:
    """-1, 0 or 1 as FHIRPath compares two date/dateTime/instant values; None when the result is empty (the values
    agree as far as the coarser one goes, or a value cannot be read)."""
    left, right = _moment(a), _moment(b)
    if left is None or right is None:
        return None
    (x, x_zoned), (y, y_zoned) = left, right
    if len(x) > 3 and len(y) > 3 and x_zoned != y_zoned:
        return None  # a time with a timezone against one without: not comparable here
    for i in range(min(len(x), len(y))):
        if x[i] != y[i]:
            return -1 if x[i] < y[i] else 1
    return 0 if len(x) == len(y) else None


def per_1(obj: dict[str, Any], scope: Scope) -> bool | None:
    """``start.hasValue().not() or end.hasValue().not() or (start <= end)``."""
    if not _has_value(obj, "start") or not _has_value(obj, "end"):
        return True
    order = compare_moments(obj["start"], obj["end"])
    return None if order is None else order <= 0


def _quantity_order(low: Any, high: Any) -> int | None:
    """-1, 0 or 1 comparing two Quantity objects of the same unit (``code`` and ``system``, else ``unit``); None
    when a value is missing or the units differ (FHIRPath would need UCUM conversion)."""
    if type(low) is not dict or type(high) is not dict:
        return None
    a, b = low.get("value"), high.get("value")
    if not isinstance(a, int | float) or not isinstance(b, int | float) or isinstance(a, bool) or isinstance(b, bool):
        return None
    if (low.get("system"), low.get("code"), low.get("unit") if "code" not in low else None) != (
        high.get("system"),
        high.get("code"),
        high.get("unit") if "code" not in high else None,
    ):
        return None
    return -1 if a < b else 1 if a > b else 0


def rng_2(obj: dict[str, Any], scope: Scope) -> bool | None:
    """``low.empty() or high.empty() or (low <= high)``."""
    if not _exists(obj, "low") or not _exists(obj, "high"):
        return True
    order = _quantity_order(obj["low"], obj["high"]) if "low" in obj and "high" in obj else None
    return None if order is None else order <= 0


# -- references and contained resources ----------------------------------------------------------------------------


def _contained(resource: dict[str, Any]) -> list[dict[str, Any]]:
    items = resource.get("contained")
    return [item for item in items if type(item) is dict] if type(items) is list else []


def ref_1(obj: dict[str, Any], scope: Scope) -> bool:
    """``reference.startsWith('#').not() or (reference.substring(1) in %rootResource.contained.id)``."""
    reference = obj.get("reference")
    if type(reference) is not str or not reference.startswith("#"):
        return True
    return reference[1:] in scope.contained_ids()


def dom_2(obj: dict[str, Any], scope: Scope) -> bool:
    """``contained.contained.empty()``."""
    return not any("contained" in item for item in _contained(obj))


def _meta(item: dict[str, Any]) -> dict[str, Any]:
    meta = item.get("meta")
    return meta if type(meta) is dict else {}


def dom_4(obj: dict[str, Any], scope: Scope) -> bool:
    """``contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()``."""
    return not any(_exists(_meta(item), "versionId") or _exists(_meta(item), "lastUpdated") for item in _contained(obj))


def dom_5(obj: dict[str, Any], scope: Scope) -> bool:
    """``contained.meta.security.empty()``."""
    return not any("security" in _meta(item) for item in _contained(obj))


def dom_6(obj: dict[str, Any], scope: Scope) -> bool:
    """``text.`div`.exists()``."""
    text = obj.get("text")
    return type(text) is dict and "div" in text


def _strings(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Every (element name, string) below ``value``, depth first with an explicit stack (no recursion limit)."""
    stack: list[tuple[str, Any]] = [(key, value)]
    while stack:
        name, item = stack.pop()
        if type(item) is str:
            yield name, item
        elif type(item) is dict:
            stack.extend(item.items())
        elif type(item) is list:
            stack.extend((name, element) for element in item)


def dom_3(obj: dict[str, Any], scope: Scope) -> bool:
    """Every contained resource is referred to from elsewhere in the resource (``'#' + id`` among the descendants'
    ``reference`` values and canonical/uri/url values), or refers to its container (``#``).

    The canonical/uri/url values are taken as every string of the resource: a ``string`` element that reads ``#id``
    also counts (the JSON carries no types; such a value is rare and only ever makes this check more lenient)."""
    contained = _contained(obj)
    if not contained:
        return True
    mentioned = {text for _, text in _strings(obj) if text.startswith("#")}
    for item in contained:
        identifier = item.get("id")
        if type(identifier) is not str or "#" + identifier in mentioned:
            continue
        if any(text == "#" for _, text in _strings(item)):
            continue
        return False
    return True


# -- data types and elements of the imaging resources --------------------------------------------------------------


def qty_3(obj: dict[str, Any], scope: Scope) -> bool:
    """``code.empty() or system.exists()``."""
    return not _exists(obj, "code") or _exists(obj, "system")


def sqty_1(obj: Any, scope: Scope) -> bool:
    """``comparator.empty()``."""
    return type(obj) is not dict or not _exists(obj, "comparator")


def cpt_2(obj: dict[str, Any], scope: Scope) -> bool:
    """``value.empty() or system.exists()``."""
    return not _exists(obj, "value") or _exists(obj, "system")


def att_1(obj: dict[str, Any], scope: Scope) -> bool:
    """``data.empty() or contentType.exists()``."""
    return not _exists(obj, "data") or _exists(obj, "contentType")


def pat_1(obj: dict[str, Any], scope: Scope) -> bool:
    """``name.exists() or telecom.exists() or address.exists() or organization.exists()``."""
    return "name" in obj or "telecom" in obj or "address" in obj or "organization" in obj


# -- Bundle and NamingSystem: the constraints over every entry ------------------------------------------------------


def _entries(obj: dict[str, Any], key: str = "entry") -> list[dict[str, Any]]:
    items = obj.get(key)
    return [item for item in items if type(item) is dict] if type(items) is list else []


def _bundle_entries_have(key: str, types: frozenset[str]) -> Compiled:
    """``entry.all(KEY.exists() = (%resource.type = 'a' or …))`` (bdl-3, bdl-4)."""

    def check(obj: dict[str, Any], scope: Scope) -> bool | None:
        kind = scope.resource.get("type")
        if type(kind) is not str:
            return None if _entries(obj) else True
        wanted = kind in types
        return all((key in entry) == wanted for entry in _entries(obj))

    return check


def bdl_7(obj: dict[str, Any], scope: Scope) -> bool:
    """``(type = 'history') or entry.where(fullUrl.exists()).select(fullUrl&resource.meta.versionId).isDistinct()``."""
    if obj.get("type") == "history":
        return True
    seen: set[tuple[Any, Any]] = set()
    for entry in _entries(obj):
        url = entry.get("fullUrl")
        if type(url) is not str:
            continue
        resource = entry.get("resource")
        version = _meta(resource).get("versionId") if type(resource) is dict else None
        pair = (url, version if type(version) is str else "")
        if pair in seen:
            return False
        seen.add(pair)
    return True


def nsd_2(obj: dict[str, Any], scope: Scope) -> bool:
    """``uniqueId.where(preferred = true).select(type).isDistinct()``."""
    types = [item.get("type") for item in _entries(obj, "uniqueId") if item.get("preferred") is True]
    types = [kind for kind in types if kind is not None]
    return len(types) == len(set(types))


def que_7(obj: dict[str, Any], scope: Scope) -> bool | None:
    """``operator = 'exists' implies (answer is Boolean)``: answer[x] is answerBoolean (fhirpathpy does not type the
    choice element here and answers false)."""
    operator = obj.get("operator")
    if type(operator) is not str:
        return None
    return operator != "exists" or "answerBoolean" in obj


def cnt_3(obj: dict[str, Any], scope: Scope) -> bool | None:
    """``(code.exists() or value.empty()) and (system.empty() or system = %ucum) and (code.empty() or code = '1')
    and (value.empty() or value.hasValue().not() or value.toString().contains('.').not())``: a count is a whole
    number of unit '1' (a decimal read from JSON is whole when it has no fractional part)."""
    value = obj.get("value")
    if _exists(obj, "value") and not _exists(obj, "code"):
        return False
    if "system" in obj and obj["system"] != "http://unitsofmeasure.org":
        return False
    if "code" in obj and obj["code"] != "1":
        return False
    return type(value) is not float or value.is_integer()


COMPILED: dict[str, Compiled] = {
    "(code.exists() or value.empty()) and (system.empty() or system = %ucum) and (code.empty() or code = '1') and "
    "(value.empty() or value.hasValue().not() or value.toString().contains('.').not())": cnt_3,
    "operator = 'exists' implies (answer is Boolean)": que_7,
    "entry.all(request.exists() = (%resource.type = 'batch' or %resource.type = 'transaction' or %resource.type = "
    "'history'))": _bundle_entries_have("request", frozenset({"batch", "transaction", "history"})),
    "entry.all(response.exists() = (%resource.type = 'batch-response' or %resource.type = 'transaction-response' or "
    "%resource.type = 'history'))": _bundle_entries_have(
        "response", frozenset({"batch-response", "transaction-response", "history"})
    ),
    "(type = 'history') or entry.where(fullUrl.exists()).select(fullUrl&resource.meta.versionId).isDistinct()": bdl_7,
    "uniqueId.where(preferred = true).select(type).isDistinct()": nsd_2,
    "extension.exists() != value.exists()": ext_1,
    "start.hasValue().not() or end.hasValue().not() or (start <= end)": per_1,
    "low.empty() or high.empty() or (low <= high)": rng_2,
    "reference.startsWith('#').not() or (reference.substring(1).trace('url') in "
    "%rootResource.contained.id.trace('ids'))": ref_1,
    "contained.contained.empty()": dom_2,
    "contained.where((('#'+id in (%resource.descendants().reference | %resource.descendants().as(canonical) | "
    "%resource.descendants().as(uri) | %resource.descendants().as(url))) or descendants().where(reference = '#')"
    ".exists() or descendants().where(as(canonical) = '#').exists() or descendants().where(as(canonical) = '#')"
    ".exists()).not()).trace('unmatched', id).empty()": dom_3,
    "contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()": dom_4,
    "contained.meta.security.empty()": dom_5,
    "text.`div`.exists()": dom_6,
    "code.empty() or system.exists()": qty_3,
    "comparator.empty()": sqty_1,
    "value.empty() or system.exists()": cpt_2,
    "data.empty() or contentType.exists()": att_1,
    "name.exists() or telecom.exists() or address.exists() or organization.exists()": pat_1,
}
