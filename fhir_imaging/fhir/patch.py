"""PATCH bodies applied to a resource: JSON Patch (RFC 6902) and FHIRPath Patch (https://hl7.org/fhir/R4/fhirpatch.html).

Pure: ``apply_json_patch`` and ``apply_fhirpath_patch`` return a new resource and leave their input alone. A patch
document that cannot be read is a ``BadRequest`` (400); one that reads but cannot be applied to this resource (a
path that matches nothing or too much, a failed ``test``) is ``Unprocessable`` (422). The result is validated by the
caller like any update.

FHIRPath Patch paths are evaluated over the JSON with the element definitions at hand (to know which elements
repeat). Supported steps: the resource type, element names (choice elements by their name, e.g. ``value``), an index
``[n]``, ``where(criteria)`` (criteria evaluated by fhirpathpy on each candidate), ``first()`` and ``last()``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import jsonpatch
import jsonpointer
from fhirpathpy import evaluate as fhirpath_evaluate

from fhir_imaging.fhir.fhirpath_text import split_top_level
from fhir_imaging.fhir.outcome import BadRequest, Unprocessable
from fhir_imaging.validation.schema import COMPLEX, RESOURCE, Prop, Schema, Structure

OPERATION_TYPES = ("add", "insert", "delete", "replace", "move")
STEP = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\[(?P<index>\d+)\])?$")
FUNCTION = re.compile(r"(?P<name>where|first|last)\((?P<argument>.*)\)(?:\[(?P<index>\d+)\])?$", re.DOTALL)


def apply_json_patch(resource: dict[str, Any], operations: Any) -> dict[str, Any]:
    if not isinstance(operations, list):
        raise BadRequest("A JSON Patch document is a JSON array of operations (RFC 6902)")
    try:
        patched: dict[str, Any] = jsonpatch.apply_patch(resource, operations, in_place=False)
    except (jsonpatch.InvalidJsonPatch, TypeError) as exc:
        raise BadRequest(f"Invalid JSON Patch: {exc}") from None
    except (jsonpatch.JsonPatchConflict, jsonpatch.JsonPatchTestFailed, jsonpointer.JsonPointerException) as exc:
        raise Unprocessable(f"The JSON Patch cannot be applied: {exc}") from None
    if not isinstance(patched, dict):
        raise Unprocessable("The JSON Patch replaced the whole resource with something that is not a resource")
    return patched


# -- FHIRPath Patch ------------------------------------------------------------------------------------------------


@dataclass
class Node:
    """One element found by a path: its value, where it sits (``container[key]``) and its definition."""

    value: Any
    container: Any  # dict (key: str) or list (key: int)
    key: Any
    struct: Structure | None  # the structure of ``value`` when it is an object
    owner: dict[str, Any] | None = None  # for a list item: the object holding the list
    owner_key: str = ""  # for a list item: the list's property name


def split_path(path: str) -> list[str]:
    """Split a FHIRPath on its top-level dots (not inside parentheses or quotes)."""
    return split_top_level(path, ".")


class FhirPathPatcher:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema

    def apply(self, resource: dict[str, Any], parameters: Any) -> dict[str, Any]:
        if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
            raise BadRequest("A FHIRPath Patch is a Parameters resource", "resourceType")
        patched = copy.deepcopy(resource)
        operations = [p for p in parameters.get("parameter") or [] if isinstance(p, dict)]
        if not operations:
            raise BadRequest("The FHIRPath Patch has no operation", "Parameters.parameter")
        for number, operation in enumerate(operations):
            where = f"Parameters.parameter[{number}]"
            if operation.get("name") != "operation":
                raise BadRequest("Each parameter of a FHIRPath Patch is named 'operation'", f"{where}.name")
            parts = _parts(operation, where)
            self._apply_one(patched, parts, where)
        return patched

    # -- evaluation ---------------------------------------------------------------------------------------------

    def _root(self, resource: dict[str, Any]) -> Node:
        return Node(resource, None, None, self.schema.resource(resource.get("resourceType", "")))

    def evaluate(self, resource: dict[str, Any], path: str, where: str) -> list[Node]:
        steps = split_path(path)
        nodes = [self._root(resource)]
        if steps and steps[0] == resource.get("resourceType"):
            steps = steps[1:]
        for step in steps:
            nodes = self._step(nodes, step, where)
        return nodes

    def _step(self, nodes: list[Node], step: str, where: str) -> list[Node]:
        function = FUNCTION.fullmatch(step)
        if function:
            name, argument = function["name"], function["argument"].strip()
            if name == "where":
                kept = [node for node in nodes if _criteria_hold(node.value, argument, where)]
            elif argument:
                raise BadRequest(f"{name}() takes no argument", f"{where}.path")
            else:
                kept = nodes[:1] if name == "first" else nodes[-1:]
            return _index(kept, function["index"])
        match = STEP.fullmatch(step)
        if not match:
            raise BadRequest(f"Unsupported FHIRPath step '{step}' in a patch path", f"{where}.path")
        found: list[Node] = []
        for node in nodes:
            if isinstance(node.value, dict):
                found.extend(self._children(node, match["name"]))
        return _index(found, match["index"])

    def _children(self, node: Node, name: str) -> list[Node]:
        value: dict[str, Any] = node.value
        key = name if name in value else _choice_key(value, name)
        if key is None:
            return []
        prop = node.struct.props.get(key) if node.struct else None
        child = value[key]
        if isinstance(child, list):
            return [
                Node(item, child, index, self._struct_of(prop, item), owner=value, owner_key=key)
                for index, item in enumerate(child)
            ]
        return [Node(child, value, key, self._struct_of(prop, child))]

    def _struct_of(self, prop: Prop | None, value: Any) -> Structure | None:
        if prop is None or not isinstance(value, dict):
            return None
        if prop.kind == RESOURCE:
            return self.schema.resource(value.get("resourceType", ""))
        if prop.kind == COMPLEX:
            return self.schema.resolve(prop)
        return None

    # -- operations ---------------------------------------------------------------------------------------------

    def _apply_one(self, resource: dict[str, Any], parts: dict[str, Any], where: str) -> None:
        kind = parts.get("type")
        if kind not in OPERATION_TYPES:
            raise BadRequest(
                f"Operation type must be one of {', '.join(OPERATION_TYPES)}, not {kind!r}", f"{where}.type"
            )
        path = parts.get("path")
        if not isinstance(path, str) or not path:
            raise BadRequest("Every FHIRPath Patch operation needs a path", f"{where}.path")
        if kind == "delete":
            self._delete(resource, path, where)
        elif kind == "replace":
            target = self._single(resource, path, where)
            target.container[target.key] = _value(parts, where)[0]
        elif kind == "add":
            self._add(resource, path, parts, where)
        elif kind == "insert":
            items, owner, key = self._list(resource, path, where)
            index = _int_part(parts, "index", where)
            if index > len(items):
                raise Unprocessable(
                    f"index {index} is past the end of {path} ({len(items)} elements)", f"{where}.index"
                )
            items.insert(index, _value(parts, where)[0])
            owner[key] = items
        else:
            items, owner, key = self._list(resource, path, where)
            source, destination = _int_part(parts, "source", where), _int_part(parts, "destination", where)
            if source >= len(items) or destination >= len(items):
                raise Unprocessable(f"move {source} → {destination} is outside {path} ({len(items)} elements)", where)
            items.insert(destination, items.pop(source))

    def _single(self, resource: dict[str, Any], path: str, where: str) -> Node:
        nodes = self.evaluate(resource, path, where)
        if len(nodes) != 1:
            raise Unprocessable(
                f"The path {path} must match exactly one element; it matches {len(nodes)}", f"{where}.path"
            )
        return nodes[0]

    def _delete(self, resource: dict[str, Any], path: str, where: str) -> None:
        nodes = self.evaluate(resource, path, where)
        if len(nodes) > 1:
            raise Unprocessable(f"delete removes a single element; {path} matches {len(nodes)}", f"{where}.path")
        if not nodes:
            return
        node = nodes[0]
        if node.container is None:
            raise Unprocessable("The resource itself cannot be deleted by a patch", f"{where}.path")
        del node.container[node.key]
        if isinstance(node.container, list) and not node.container and node.owner is not None:
            del node.owner[node.owner_key]  # FHIR JSON has no empty arrays

    def _add(self, resource: dict[str, Any], path: str, parts: dict[str, Any], where: str) -> None:
        target = self._single(resource, path, where)
        name = parts.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest("add needs the name of the element to add", f"{where}.name")
        if not isinstance(target.value, dict):
            raise Unprocessable(f"{path} is not an element that can hold {name}", f"{where}.path")
        value, value_type = _value(parts, where)
        key = name
        if target.struct is not None and name not in target.struct.props and value_type:
            key = name + value_type  # a choice element: value + Quantity → valueQuantity
        prop = target.struct.props.get(key) if target.struct else None
        existing = target.value.get(key)
        if (prop is not None and prop.array) or isinstance(existing, list):
            target.value.setdefault(key, []).append(value)
        elif existing is not None:
            raise Unprocessable(f"{path}.{name} already exists and does not repeat: use replace", f"{where}.name")
        else:
            target.value[key] = value

    def _list(self, resource: dict[str, Any], path: str, where: str) -> tuple[list[Any], dict[str, Any], str]:
        """The list a path names (``Patient.identifier``), with the object holding it and its key."""
        steps = split_path(path)
        parent_path, last = ".".join(steps[:-1]), steps[-1]
        if not STEP.fullmatch(last) or "[" in last:
            raise BadRequest(f"{path} must end with the name of a repeating element", f"{where}.path")
        parent = self._single(resource, parent_path, where) if parent_path else self._root(resource)
        if not isinstance(parent.value, dict):
            raise Unprocessable(f"{parent_path} is not an element", f"{where}.path")
        items = parent.value.get(last, [])
        if not isinstance(items, list):
            raise Unprocessable(f"{path} does not repeat", f"{where}.path")
        return items, parent.value, last


def _index(nodes: list[Node], index: str | None) -> list[Node]:
    if index is None:
        return nodes
    position = int(index)
    return nodes[position : position + 1]


def _choice_key(value: dict[str, Any], name: str) -> str | None:
    for key in value:
        if key.startswith(name) and len(key) > len(name) and key[len(name)].isupper():
            return key
    return None


def _criteria_hold(value: Any, criteria: str, where: str) -> bool:
    try:
        result = fhirpath_evaluate(value, criteria)
    except Exception as exc:
        raise BadRequest(f"Cannot evaluate where({criteria}): {exc}", f"{where}.path") from None
    return result == [True]


def _parts(operation: dict[str, Any], where: str) -> dict[str, Any]:
    """An operation's parts by name; ``value`` is kept as the value[x] it carries (or its parts)."""
    parts: dict[str, Any] = {}
    for part in operation.get("part") or []:
        if not isinstance(part, dict) or not isinstance(part.get("name"), str):
            raise BadRequest("Each part of a patch operation needs a name", f"{where}.part")
        name = part["name"]
        if name == "value":
            parts["value"] = part
            continue
        parts[name] = next((v for k, v in part.items() if k.startswith("value")), None)
    return parts


def _value(parts: dict[str, Any], where: str) -> tuple[Any, str]:
    """The operation's value and the type suffix of its value[x] (``Quantity``; "" for a value given as parts)."""
    part = parts.get("value")
    if part is None:
        raise BadRequest("This patch operation needs a value", f"{where}.value")
    return _part_value(part, where)


def _part_value(part: dict[str, Any], where: str) -> tuple[Any, str]:
    for key, value in part.items():
        if key.startswith("value") and len(key) > len("value"):
            return copy.deepcopy(value), key[len("value") :]
    children = part.get("part")
    if children:
        built: dict[str, Any] = {}
        for child in children:
            if not isinstance(child, dict) or "name" not in child:
                raise BadRequest("Each part of a complex patch value needs a name", f"{where}.value")
            value, _ = _part_value(child, where)
            name = child["name"]
            if name in built:
                built[name] = [*built[name], value] if isinstance(built[name], list) else [built[name], value]
            else:
                built[name] = value
        return built, ""
    raise BadRequest("The value part has no value[x] and no parts", f"{where}.value")


def _int_part(parts: dict[str, Any], name: str, where: str) -> int:
    value = parts.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRequest(f"'{name}' must be a whole number of 0 or more", f"{where}.{name}")
    return value
