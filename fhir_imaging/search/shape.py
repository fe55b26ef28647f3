"""``_summary`` and ``_elements``: the parts of each resource a search returns (https://hl7.org/fhir/R4/search.html#summary).

``_summary=true`` keeps the elements the R4 definitions mark ``isSummary`` (inside backbone elements too);
``text`` keeps id, meta, text and the mandatory top-level elements; ``data`` drops ``text``; ``_elements`` keeps the
listed top-level elements plus id, meta and the mandatory ones. A shaped resource carries the ``SUBSETTED`` tag.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import orjson

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
ALWAYS = ("resourceType", "id", "meta")


@cache
def _summary_elements() -> dict[str, dict[str, frozenset[str]]]:
    raw = orjson.loads(
        resources.files("fhir_imaging.fhir").joinpath("definitions", "summary-elements.json").read_bytes()
    )
    return {name: {key: frozenset(paths) for key, paths in item.items()} for name, item in raw.items()}


def _element_name(key: str, allowed: frozenset[str], prefix: str) -> str | None:
    """The element a JSON key belongs to (``valueQuantity`` → ``value[x]``; ``_status`` → ``status``)."""
    base = key[1:] if key.startswith("_") else key
    if f"{prefix}{base}" in allowed:
        return base
    for index in range(len(base) - 1, 0, -1):
        if base[index].isupper() and f"{prefix}{base[:index]}[x]" in allowed:
            return base[:index] + "[x]"
    return None


def _element_of(key: str) -> set[str]:
    """The names a JSON key may belong to: itself, and for a choice (``valueQuantity``) its stem (``value``)."""
    base = key.lstrip("_")
    names = {base}
    for index in range(1, len(base)):
        if base[index].isupper():
            names.add(base[:index])
            break
    return names


def _keep_summary(node: dict[str, Any], spec: dict[str, frozenset[str]], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "resourceType":
            out[key] = value
            continue
        name = _element_name(key, spec["summary"], prefix)
        if name is None:
            continue
        path = f"{prefix}{name}"
        if path in spec["backbone"]:
            items = value if isinstance(value, list) else [value]
            kept = [_keep_summary(item, spec, path + ".") for item in items if isinstance(item, dict)]
            out[key] = kept if isinstance(value, list) else kept[0]
        else:
            out[key] = value
    return out


def _tag(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    tags = [tag for tag in meta.get("tag", []) if tag != SUBSETTED]
    meta["tag"] = [*tags, SUBSETTED]
    resource["meta"] = meta
    return resource


def shape(resource: dict[str, Any], summary: str | None, elements: tuple[str, ...] | None) -> dict[str, Any] | None:
    """The resource as ``_summary`` / ``_elements`` ask (None: return it unchanged)."""
    spec = _summary_elements().get(resource.get("resourceType", ""), {})
    mandatory = spec.get("mandatory", frozenset())
    if summary == "true" and spec:
        return _tag(_keep_summary(resource, spec, ""))
    if summary == "text":
        keep = {*ALWAYS, "text", *mandatory}
        return _tag({key: value for key, value in resource.items() if key.lstrip("_") in keep})
    if summary == "data":
        return _tag({key: value for key, value in resource.items() if key != "text"})
    if elements is not None:
        keep = {*ALWAYS, *mandatory, *elements}
        return _tag({key: value for key, value in resource.items() if _element_of(key) & keep})
    return None
