"""PATCH bodies applied to a resource: JSON Patch (RFC 6902) and FHIRPath Patch (https://hl7.org/fhir/R4/fhirpatch.html).

Pure: ``apply_json_patch`` and ``FhirPathPatcher.apply`` return a new resource and leave their input alone. A patch
document that cannot be read is a ``BadRequest`` (400); one that reads but cannot be applied to this resource (a
path that matches nothing or too much, a failed ``test``) is ``Unprocessable`` (422). The result is validated by the
caller like any update.

Bounded (``PatchLimits``): the number of operations and the size of the result (413); what JSON Patch ``copy``
operations duplicate, counted as each one runs (413, so that growth stops early); the length of a FHIRPath Patch path
and the time and items its ``where()`` criteria may take (422 ``too-costly``, see ``fhirpath_budget``).

FHIRPath Patch paths are evaluated over the JSON with the element definitions at hand (to know which elements
repeat). Supported steps: the resource type, element names (choice elements by their name, e.g. ``value``), an index
``[n]``, ``where(criteria)`` (criteria evaluated by fhirpathpy on each candidate), ``first()`` and ``last()``. Errors
name the part at fault: ``Parameters.parameter[0].part[1]``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fhirpathpy
import jsonpatch
import jsonpointer
import orjson

from fhir_imaging.fhir.fhirpath_budget import BudgetExceeded, FhirPathLimits, budget, current_budget
from fhir_imaging.fhir.fhirpath_text import split_top_level
from fhir_imaging.fhir.outcome import BadRequest, FhirError, Issue, PayloadTooLarge, Unprocessable
from fhir_imaging.fhir.resource import MAX_JSON_DEPTH, json_depth_exceeds, without_bom
from fhir_imaging.validation.schema import COMPLEX, RESOURCE, Prop, Schema, Structure

OPERATION_TYPES = ("add", "insert", "delete", "replace", "move")
FUNCTIONS = ("where", "first", "last")
MAX_INDEX_DIGITS = 9


@dataclass(frozen=True, slots=True)
class PatchLimits:
    max_operations: int  # operations in one patch
    max_size: int  # bytes: the patched resource, and what the copy operations of a JSON Patch may duplicate
    fhirpath: FhirPathLimits


def too_costly(diagnostics: str, *expression: str) -> FhirError:
    """422 ``too-costly``: the request reads well but would take more than the server allows."""
    return FhirError(issues=[Issue("error", "too-costly", diagnostics, expression)], status=422)


def parse_patch_document(body: bytes, *expression: str) -> Any:
    """A patch body (JSON Patch array or Parameters) as JSON; 400 when it is not JSON or nests too deeply."""
    try:
        document = orjson.loads(without_bom(body))
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The patch is not valid JSON: {exc}", *expression) from None
    if json_depth_exceeds(document):
        raise BadRequest(f"The patch nests deeper than {MAX_JSON_DEPTH} levels", *expression)
    return document


def check_result(patched: dict[str, Any], limits: PatchLimits, *expression: str) -> None:
    """The patched resource nests no deeper than any resource may, and is no larger than ``limits.max_size``."""
    if json_depth_exceeds(patched):
        raise Unprocessable(f"The patched resource would nest deeper than {MAX_JSON_DEPTH} levels", *expression)
    try:
        size = len(orjson.dumps(patched))
    except orjson.JSONEncodeError as exc:
        raise Unprocessable(f"The patched resource cannot be written as JSON: {exc}", *expression) from None
    if size > limits.max_size:
        raise PayloadTooLarge(
            f"The patched resource would be {size} bytes; the limit is {limits.max_size}", *expression
        )


# -- JSON Patch ----------------------------------------------------------------------------------------------------


def apply_json_patch(
    resource: dict[str, Any], operations: Any, limits: PatchLimits, where: str | None = None
) -> dict[str, Any]:
    """``operations`` applied one at a time to a copy of ``resource``. Errors name the operation by its JSON Pointer
    in the patch (``/3``), or ``where`` when given (the Binary of a Bundle entry)."""
    whole = (where,) if where else (resource.get("resourceType", "Resource"),)
    if not isinstance(operations, list):
        raise BadRequest("A JSON Patch document is a JSON array of operations (RFC 6902)", *whole)
    if len(operations) > limits.max_operations:
        raise PayloadTooLarge(
            f"The JSON Patch has {len(operations)} operations; the limit is {limits.max_operations}", *whole
        )
    patched: Any = copy.deepcopy(resource)
    copied = 0
    for number, operation in enumerate(operations):
        at = where or f"/{number}"
        if isinstance(operation, dict) and operation.get("op") == "copy":
            value = _copied_value(patched, operation, number, at)
            copied += len(value)
            if copied > limits.max_size:
                raise PayloadTooLarge(
                    f"JSON Patch operation {number}: the copy operations would duplicate more than "
                    f"{limits.max_size} bytes",
                    at,
                )
            patched = _add(patched, operation.get("path"), orjson.loads(value), number, at)
        else:
            patched = _apply_operation(patched, operation, number, at)
    if not isinstance(patched, dict):
        raise Unprocessable("The JSON Patch replaced the whole resource with something that is not a resource", *whole)
    check_result(patched, limits, *whole)
    return patched


def _copied_value(document: Any, operation: dict[str, Any], number: int, at: str) -> bytes:
    """What a ``copy`` operation copies, as JSON: copied through JSON (in C, not ``copy.deepcopy``), and measured
    before it is added."""
    source = operation.get("from")
    if not isinstance(source, str):
        raise BadRequest(f"JSON Patch operation {number}: a copy needs a 'from' JSON Pointer", at)
    try:
        value = jsonpointer.resolve_pointer(document, source)
    except (jsonpointer.JsonPointerException, LookupError, TypeError, ValueError) as exc:
        raise Unprocessable(f"JSON Patch operation {number} cannot be applied: {exc}", at) from None
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        raise Unprocessable(f"JSON Patch operation {number}: the value at {source} nests too deeply", at) from None


def _add(document: Any, path: Any, value: Any, number: int, at: str) -> Any:
    """RFC 6902 ``add`` of a value that is already a copy (jsonpatch would deep-copy it once more)."""
    if not isinstance(path, str):
        raise BadRequest(f"JSON Patch operation {number} needs a 'path' JSON Pointer", at)
    try:
        pointer = jsonpointer.JsonPointer(path)
        parent, part = pointer.to_last(document)
    except (jsonpointer.JsonPointerException, LookupError, TypeError, ValueError) as exc:
        raise Unprocessable(f"JSON Patch operation {number} cannot be applied: {exc}", at) from None
    if part is None:
        return value  # the whole document
    if isinstance(parent, list) and part == "-":
        parent.append(value)
    elif isinstance(parent, list) and isinstance(part, int) and 0 <= part <= len(parent):
        parent.insert(part, value)
    elif isinstance(parent, dict):
        parent[part] = value
    else:
        raise Unprocessable(f"JSON Patch operation {number} cannot be applied: no place for a value at {path}", at)
    return document


def _apply_operation(document: Any, operation: Any, number: int, at: str) -> Any:
    try:
        return jsonpatch.JsonPatch([operation]).apply(document, in_place=True)
    except (jsonpatch.InvalidJsonPatch, TypeError, ValueError, AttributeError) as exc:
        raise BadRequest(f"JSON Patch operation {number} is invalid: {exc}", at) from None
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, LookupError) as exc:
        raise Unprocessable(f"JSON Patch operation {number} cannot be applied: {exc}", at) from None


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


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a patch path: an element name or a function (``argument`` not None), and an optional index."""

    name: str
    argument: str | None
    index: int | None


@dataclass
class Operation:
    """One ``operation`` parameter: its parts by name, and where each part sits in the request."""

    where: str  # Parameters.parameter[0]
    parts: dict[str, Any] = field(default_factory=dict)  # name → value[x] (for ``value``: the part itself)
    places: dict[str, str] = field(default_factory=dict)  # name → Parameters.parameter[0].part[1]

    def at(self, name: str) -> str:
        """The part named ``name``, or the operation's parts when it is missing."""
        return self.places.get(name, f"{self.where}.part")


def split_path(path: str) -> list[str]:
    """Split a FHIRPath on its top-level dots (not inside parentheses or quotes)."""
    return split_top_level(path, ".")


def is_name(text: str) -> bool:
    """An element name: an ASCII letter or ``_``, then letters, digits or ``_``."""
    return bool(text) and text.isascii() and (text[0].isalpha() or text[0] == "_") and text.replace("_", "a").isalnum()


def parse_step(text: str) -> Step | None:
    """``name``, ``name[2]``, ``where(criteria)``, ``first()``, ``last()[0]``… (None: not a supported step).
    Plain string code: linear in the step's length."""
    body, index = text, None
    if text.endswith("]"):
        opening = text.rfind("[")
        digits = text[opening + 1 : -1]
        if opening < 0 or not (digits.isascii() and digits.isdigit()) or len(digits) > MAX_INDEX_DIGITS:
            return None
        body, index = text[:opening], int(digits)
    name, parenthesis, rest = body.partition("(")
    if parenthesis:
        return Step(name, rest[:-1], index) if name in FUNCTIONS and rest.endswith(")") else None
    return Step(body, None, index) if is_name(body) else None


class FhirPathPatcher:
    def __init__(self, schema: Schema, limits: PatchLimits) -> None:
        self.schema = schema
        self.limits = limits

    def apply(self, resource: dict[str, Any], parameters: Any, root: str = "Parameters") -> dict[str, Any]:
        """``parameters`` applied to a copy of ``resource``; errors name the part at fault under ``root`` (the
        Parameters resource: ``Parameters``, or ``Bundle.entry[2].resource`` in a Bundle)."""
        if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
            raise BadRequest("A FHIRPath Patch is a Parameters resource", f"{root}.resourceType")
        operations = _operations(parameters, root, self.limits.max_operations)
        patched = copy.deepcopy(resource)
        with budget(self.limits.fhirpath):
            for operation in operations:
                self._apply_one(patched, operation)
        check_result(patched, self.limits, root)
        return patched

    # -- evaluation ---------------------------------------------------------------------------------------------

    def _root(self, resource: dict[str, Any]) -> Node:
        return Node(resource, None, None, self.schema.resource(resource.get("resourceType", "")))

    def evaluate(self, resource: dict[str, Any], path: str, at: str) -> list[Node]:
        steps = split_path(path)
        nodes = [self._root(resource)]
        if steps and steps[0] == resource.get("resourceType"):
            steps = steps[1:]
        for step in steps:
            nodes = self._step(nodes, step, at)
        return nodes

    def _step(self, nodes: list[Node], text: str, at: str) -> list[Node]:
        active = current_budget()
        if active is not None:
            active.check_time()
        step = parse_step(text)
        if step is None:
            raise BadRequest(f"Unsupported FHIRPath step '{text}' in a patch path", at)
        if step.argument is None:
            found: list[Node] = []
            for node in nodes:
                if isinstance(node.value, dict):
                    found.extend(self._children(node, step.name))
            return _index(found, step.index)
        argument = step.argument.strip()
        if step.name == "where":
            holds = _criteria(argument, at)
            kept = [node for node in nodes if holds(node.value)]
        elif argument:
            raise BadRequest(f"{step.name}() takes no argument", at)
        else:
            kept = nodes[:1] if step.name == "first" else nodes[-1:]
        return _index(kept, step.index)

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

    def _apply_one(self, resource: dict[str, Any], operation: Operation) -> None:
        kind = operation.parts.get("type")
        if not isinstance(kind, str) or kind not in OPERATION_TYPES:
            raise BadRequest(
                f"Operation type must be one of {', '.join(OPERATION_TYPES)}, not {kind!r}", operation.at("type")
            )
        path = operation.parts.get("path")
        if not isinstance(path, str) or not path:
            raise BadRequest("Every FHIRPath Patch operation needs a path", operation.at("path"))
        limit = self.limits.fhirpath.max_length
        if len(path) > limit:
            raise too_costly(f"The path is {len(path)} characters long; the limit is {limit}", operation.at("path"))
        try:
            self._run(resource, kind, path, operation)
        except BudgetExceeded as exc:
            raise too_costly(
                f"The path cannot be evaluated within the server's limits: {exc}", operation.at("path")
            ) from None

    def _run(self, resource: dict[str, Any], kind: str, path: str, operation: Operation) -> None:
        at = operation.at("path")
        if kind == "delete":
            self._delete(resource, path, at)
        elif kind == "replace":
            target = self._single(resource, path, at)
            if target.container is None:
                raise Unprocessable("The resource itself cannot be replaced by a patch", at)
            target.container[target.key] = _value(operation)[0]
        elif kind == "add":
            self._add(resource, path, operation)
        elif kind == "insert":
            items, owner, key = self._list(resource, path, at)
            index = _int_part(operation, "index")
            if index > len(items):
                raise Unprocessable(
                    f"index {index} is past the end of {path} ({len(items)} elements)", operation.at("index")
                )
            items.insert(index, _value(operation)[0])
            owner[key] = items
        else:
            items, owner, key = self._list(resource, path, at)
            source, destination = _int_part(operation, "source"), _int_part(operation, "destination")
            if source >= len(items) or destination >= len(items):
                raise Unprocessable(
                    f"move {source} → {destination} is outside {path} ({len(items)} elements)", operation.where
                )
            items.insert(destination, items.pop(source))

    def _single(self, resource: dict[str, Any], path: str, at: str) -> Node:
        nodes = self.evaluate(resource, path, at)
        if len(nodes) != 1:
            raise Unprocessable(f"The path {path} must match exactly one element; it matches {len(nodes)}", at)
        return nodes[0]

    def _delete(self, resource: dict[str, Any], path: str, at: str) -> None:
        nodes = self.evaluate(resource, path, at)
        if len(nodes) > 1:
            raise Unprocessable(f"delete removes a single element; {path} matches {len(nodes)}", at)
        if not nodes:
            return
        node = nodes[0]
        if node.container is None:
            raise Unprocessable("The resource itself cannot be deleted by a patch", at)
        del node.container[node.key]
        if isinstance(node.container, list) and not node.container and node.owner is not None:
            del node.owner[node.owner_key]  # FHIR JSON has no empty arrays

    def _add(self, resource: dict[str, Any], path: str, operation: Operation) -> None:
        at = operation.at("path")
        target = self._single(resource, path, at)
        name = operation.parts.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest("add needs the name of the element to add", operation.at("name"))
        if not isinstance(target.value, dict):
            raise Unprocessable(f"{path} is not an element that can hold {name}", at)
        value, value_type = _value(operation)
        key = name
        if target.struct is not None and name not in target.struct.props and value_type:
            key = name + value_type  # a choice element: value + Quantity → valueQuantity
        prop = target.struct.props.get(key) if target.struct else None
        existing = target.value.get(key)
        if isinstance(existing, list):
            existing.append(value)
        elif prop is not None and prop.array and existing is None:
            target.value[key] = [value]
        elif existing is not None:
            raise Unprocessable(f"{path}.{name} already exists and does not repeat: use replace", operation.at("name"))
        else:
            target.value[key] = value

    def _list(self, resource: dict[str, Any], path: str, at: str) -> tuple[list[Any], dict[str, Any], str]:
        """The list a path names (``Patient.identifier``), with the object holding it and its key."""
        steps = split_path(path)
        if not steps:
            raise BadRequest(f"{path} must end with the name of a repeating element", at)
        parent_path, last = ".".join(steps[:-1]), steps[-1]
        if not is_name(last):
            raise BadRequest(f"{path} must end with the name of a repeating element", at)
        parent = self._single(resource, parent_path, at) if parent_path else self._root(resource)
        if not isinstance(parent.value, dict):
            raise Unprocessable(f"{parent_path} is not an element", at)
        items = parent.value.get(last, [])
        if not isinstance(items, list):
            raise Unprocessable(f"{path} does not repeat", at)
        return items, parent.value, last


def _operations(parameters: dict[str, Any], root: str, limit: int) -> list[Operation]:
    items = parameters.get("parameter")
    if not isinstance(items, list) or not items:
        raise BadRequest("The FHIRPath Patch has no operation: parameter is a list of operations", f"{root}.parameter")
    if len(items) > limit:
        raise PayloadTooLarge(
            f"The FHIRPath Patch has {len(items)} operations; the limit is {limit}", f"{root}.parameter"
        )
    return [_operation(item, f"{root}.parameter[{number}]") for number, item in enumerate(items)]


def _operation(item: Any, where: str) -> Operation:
    """An operation's parts by name; ``value`` is kept as the part itself (its value[x] or its parts)."""
    if not isinstance(item, dict):
        raise BadRequest("Each parameter of a FHIRPath Patch is an object", where)
    if item.get("name") != "operation":
        raise BadRequest("Each parameter of a FHIRPath Patch is named 'operation'", f"{where}.name")
    parts = item.get("part")
    if not isinstance(parts, list):
        raise BadRequest("A FHIRPath Patch operation lists its parts in 'part'", f"{where}.part")
    operation = Operation(where)
    for number, part in enumerate(parts):
        place = f"{where}.part[{number}]"
        if not isinstance(part, dict) or not isinstance(part.get("name"), str):
            raise BadRequest("Each part of a patch operation needs a name", f"{place}.name")
        name = part["name"]
        operation.places[name] = place
        if name == "value":
            operation.parts[name] = part
        else:
            operation.parts[name] = next((v for k, v in part.items() if k.startswith("value")), None)
    return operation


def _index(nodes: list[Node], index: int | None) -> list[Node]:
    if index is None:
        return nodes
    return nodes[index : index + 1]


def _choice_key(value: dict[str, Any], name: str) -> str | None:
    for key in value:
        if key.startswith(name) and len(key) > len(name) and key[len(name)].isupper():
            return key
    return None


def _criteria(criteria: str, at: str) -> Callable[[Any], bool]:
    """``where()`` criteria, parsed once: a test of one candidate (evaluated under the request's budget)."""
    try:
        compiled = fhirpathpy.compile(criteria)
    except Exception as exc:  # fhirpathpy's parser raises plain Exceptions (and RecursionError on deep nesting)
        raise BadRequest(f"Cannot read where({criteria}): {exc}", at) from None

    def holds(value: Any) -> bool:
        try:
            result = compiled(value, {})
        except BudgetExceeded:
            raise
        except Exception as exc:  # fhirpathpy raises plain Exceptions for type errors and the like
            raise BadRequest(f"Cannot evaluate where({criteria}): {exc}", at) from None
        return result == [True]

    return holds


def _value(operation: Operation) -> tuple[Any, str]:
    """The operation's value and the type suffix of its value[x] (``Quantity``; "" for a value given as parts)."""
    part = operation.parts.get("value")
    if part is None:
        raise BadRequest("This patch operation needs a value", operation.at("value"))
    return _part_value(part, operation.at("value"))


def _part_value(part: dict[str, Any], at: str) -> tuple[Any, str]:
    for key, value in part.items():
        if key.startswith("value") and len(key) > len("value"):
            return copy.deepcopy(value), key[len("value") :]
    children = part.get("part")
    if children is not None and not isinstance(children, list):
        raise BadRequest("The parts of a complex patch value are a list", f"{at}.part")
    if children:
        built: dict[str, Any] = {}
        for number, child in enumerate(children):
            place = f"{at}.part[{number}]"
            if not isinstance(child, dict) or not isinstance(child.get("name"), str):
                raise BadRequest("Each part of a complex patch value needs a name", f"{place}.name")
            value, _ = _part_value(child, place)
            name = child["name"]
            if name in built:
                built[name] = [*built[name], value] if isinstance(built[name], list) else [built[name], value]
            else:
                built[name] = value
        return built, ""
    raise BadRequest("The value part has no value[x] and no parts", at)


def _int_part(operation: Operation, name: str) -> int:
    value = operation.parts.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRequest(f"'{name}' must be a whole number of 0 or more", operation.at(name))
    return value
