"""Typed evaluation of SearchParameter expressions (FHIRPath) over resources as parsed JSON.

Most R4 search expressions use a small subset of FHIRPath: paths (``ImagingStudy.series.modality``), unions (``|``),
``as``/``ofType`` on choice elements, ``where(resolve() is Patient)``, ``where(system='email')`` (also on a path:
``where(type.coding.code='ACSN')``), ``[0]`` and ``first()``. That subset is compiled here into plain Python
closures that walk the JSON and know each value's FHIR type (from fhirpathpy's R4 model tables). Anything outside
the subset falls back to fhirpathpy itself, pre-compiled once, with ``resolve()`` supplied as a user function that
types a node from its reference (``Patient/123`` → Patient).

Plain element paths compile to list comprehensions over the raw JSON (no typed node built, see ``Plan``), an order
of magnitude faster than fhirpathpy on imaging studies (bench/README.md, "Figures behind design choices").

Spec: https://hl7.org/fhir/R4/fhirpath.html, https://hl7.org/fhirpath/N1/
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from fhirpathpy.models import models

from fhir_imaging import linear_regex
from fhir_imaging.fhir.references import TYPE_AND_ID

MODEL = models["r4"]
PATH_TYPES: dict[str, str] = MODEL["path2Type"]
CHOICES: dict[str, list[str]] = MODEL["choiceTypePaths"]
ELSEWHERE: dict[str, str] = MODEL["pathsDefinedElsewhere"]
BACKBONE = frozenset({"BackboneElement", "Element"})
# Backbone elements (ImagingStudy.series) are not in path2Type: they are the paths that only prefix others.
BACKBONE_PATHS = frozenset(
    prefix
    for path in PATH_TYPES
    for prefix in (path.rsplit(".", 1)[0],)
    if "." in prefix and prefix not in PATH_TYPES and prefix not in CHOICES
)
# The target a reference names, for ``resolve()`` and the search index: built on the same type and id as
# fhir.references.RELATIVE_REFERENCE, but it differs in meaning. That one checks the form of a relative literal
# reference; this one only finds the target, so it also reads an absolute reference (its base is a group, for the
# index) and takes whatever follows /_history/ (the version is never read here).
REFERENCE_PATTERN = linear_regex.compile(rf"(?:(?P<base>[a-z][a-z0-9+.\-]*://.*?)/)?{TYPE_AND_ID}(?:/_history/[^/]+)?")


@dataclass(frozen=True, slots=True)
class Node:
    """One value found by an expression: its FHIR type name (``dateTime``, ``Coding``…) and its JSON value."""

    type: str
    value: Any
    path: str = ""  # the element path used to type its children ("ImagingStudy.series" or a datatype name)


class Unsupported(Exception):
    """The expression is outside the compiled subset (fhirpathpy evaluates it instead)."""


def _type_name(name: str) -> str:
    """``System.String`` → ``string``; a choice suffix ``DateTime`` → ``dateTime``; datatypes stay as they are."""
    if name.startswith("System."):
        name = name[len("System.") :]
        return {"String": "string", "Boolean": "boolean", "Integer": "integer", "Decimal": "decimal"}.get(
            name, name[0].lower() + name[1:]
        )
    lowered = name[0].lower() + name[1:]
    return lowered if lowered in PRIMITIVES else name


PRIMITIVES = frozenset(value for value in PATH_TYPES.values() if value[:1].islower())


@lru_cache(maxsize=16384)
def reference_target(reference: str) -> tuple[str, str, str] | None:
    """``[base/]Type/id[/_history/v]`` → (base or '', Type, id); None for anything else (urn:, #contained…)."""
    match = REFERENCE_PATTERN.fullmatch(reference)
    if match is None:
        return None
    return match.group("base") or "", match.group("type"), match.group("id")


def resolved_type_of(value: Any) -> str | None:
    """The resource type ``resolve()`` would give a Reference (or canonical) value, without fetching anything."""
    if isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str):
            target = reference_target(reference)
            if target:
                return target[1]
        kind = value.get("type")
        return kind if isinstance(kind, str) else None
    if isinstance(value, str):
        target = reference_target(value.split("|", 1)[0])
        return target[1] if target else None
    return None


@cache
def child_entries(path: str, name: str) -> tuple[tuple[str, str, str], ...]:
    """(JSON key, FHIR type, element path of the children) for the child ``name`` of an element at ``path``:
    one entry, one per type of a choice element (``value[x]``), or none for an unknown element."""
    full = f"{path}.{name}"
    full = ELSEWHERE.get(full, full)
    choices = CHOICES.get(full)
    if choices is not None:
        return tuple((name + choice, _type_name(choice), full) for choice in choices)
    declared = PATH_TYPES.get(full)
    if declared is None:
        return ((name, "BackboneElement", full),) if full in BACKBONE_PATHS else ()
    kind = _type_name(declared)
    return ((name, kind, full if declared in BACKBONE else kind),)


def children(node: Node, name: str) -> list[Node]:
    """The child elements ``name`` of a node, typed (choice elements ``value[x]`` give one node per present type)."""
    value = node.value
    if not isinstance(value, dict):
        return []
    out: list[Node] = []
    for key, kind, path in child_entries(node.path, name):
        raw = value.get(key)
        if raw is not None:
            out += _items(raw, kind, path)
    return out


def _items(raw: Any, kind: str, path: str) -> list[Node]:
    items = raw if isinstance(raw, list) else (raw,)
    if kind != "Resource":
        return [Node(kind, item, path) for item in items if item is not None]
    return [
        Node(item["resourceType"], item, item["resourceType"])
        if isinstance(item, dict) and isinstance(item.get("resourceType"), str)
        else Node(kind, item, path)
        for item in items
        if item is not None
    ]


# -- the compiled subset -------------------------------------------------------------------------------------------
# An expression compiles to a Plan: a function from the input values (the resource) to the values found. While
# every value found has one type known when compiling (plain element paths), the plan passes raw JSON values and
# no Node is built; choice elements, contained resources and the fhirpathpy fallback pass typed Nodes instead.

Run = Callable[[list[Any]], list[Any]]
Step = Callable[[list[Node]], list[Node]]
Possible = frozenset[tuple[str, str]] | None  # the (type, path) pairs a dynamic plan's nodes can have; None: unknown


@dataclass(frozen=True, slots=True)
class Plan:
    """``run`` maps the input values to the values found: raw JSON values all of type ``kind`` at element path
    ``path`` (static), or, when ``kind`` is None, Nodes (dynamic) whose (type, path) is in ``possible`` if known."""

    run: Run
    kind: str | None
    path: str = ""
    possible: Possible = None

    def nodes(self, values: list[Any]) -> list[Node]:
        found = self.run(values)
        if self.kind is None:
            return found
        return [Node(self.kind, value, self.path) for value in found]


def _identity(values: list[Any]) -> list[Any]:
    return values


def _empty(values: list[Any]) -> list[Any]:
    return []


EMPTY = Plan(_empty, "", "")


def _then(plan: Plan, step: Run, kind: str | None, path: str = "", possible: Possible = None) -> Plan:
    first = plan.run
    if first is _identity:
        return Plan(step, kind, path, possible)
    if first is _empty:
        return EMPTY
    return Plan(lambda values: step(first(values)), kind, path, possible)


PLAIN = frozenset({dict, str, int, float, bool})  # JSON value classes that are not lists (a fast first test)


def _getter(key: str) -> Run:
    def step(values: list[Any]) -> list[Any]:
        found = [
            raw
            for value in values
            if (value.__class__ is dict or isinstance(value, dict)) and (raw := value.get(key)) is not None
        ]
        for raw in found:
            if raw.__class__ not in PLAIN and isinstance(raw, list):
                break
        else:
            return found
        out: list[Any] = []
        for raw in found:
            if isinstance(raw, list):
                out += [item for item in raw if item is not None]
            else:
                out.append(raw)
        return out

    return step


def _child(plan: Plan, name: str) -> Plan:
    if plan.kind is None:
        return _then(plan, lambda nodes: [child for node in nodes for child in children(node, name)], None)
    entries = child_entries(plan.path, name)
    if not entries:
        return EMPTY
    if len(entries) == 1 and entries[0][1] != "Resource":
        key, kind, path = entries[0]
        return _then(plan, _getter(key), kind, path)
    parent, parent_path = plan.kind, plan.path  # a choice element, or contained resources: typed nodes from here
    resource = any(kind == "Resource" for _, kind, _ in entries)
    return _then(
        plan,
        lambda values: [child for value in values for child in children(Node(parent, value, parent_path), name)],
        None,
        "",
        None if resource else frozenset((kind, path) for _, kind, path in entries),
    )


def _of_type(plan: Plan, name: str) -> Plan:
    wanted = _type_name(name)
    if plan.kind is not None:
        return plan if plan.kind == wanted else EMPTY
    if plan.possible is not None:
        paths = {path for kind, path in plan.possible if kind == wanted}
        if not paths:
            return EMPTY
        if len(paths) == 1:
            return _then(plan, lambda nodes: [node.value for node in nodes if node.type == wanted], wanted, paths.pop())
    possible = None if plan.possible is None else frozenset(pair for pair in plan.possible if pair[0] == wanted)
    return _then(plan, lambda nodes: [node for node in nodes if node.type == wanted], None, "", possible)


def _filter(plan: Plan, keep: Callable[[Any], bool]) -> Plan:
    if plan.kind is not None:
        return _then(plan, lambda values: [value for value in values if keep(value)], plan.kind, plan.path)
    return _then(plan, lambda nodes: [node for node in nodes if keep(node)], None, "", plan.possible)


def _has_descendant_equal(plan: Plan, names: list[str], text: str) -> Callable[[Any], bool]:
    """``where(a.b.c = 'x')``: a value is kept when any element at the path below it equals ``text``."""
    if len(names) == 1:
        return _has_child_equal(plan, names[0], text)

    def keep(value: Any) -> bool:
        nodes = [value] if isinstance(value, Node) else [Node(plan.kind or "", value, plan.path)]
        for name in names:
            nodes = [child for node in nodes for child in children(node, name)]
        return any(node.value == text for node in nodes)

    return keep


def _has_child_equal(plan: Plan, name: str, text: str) -> Callable[[Any], bool]:
    if plan.kind is None:
        return lambda node: any(child.value == text for child in children(node, name))
    keys = [key for key, _, _ in child_entries(plan.path, name)]

    def keep(value: Any) -> bool:
        if not isinstance(value, dict):
            return False
        for key in keys:
            raw = value.get(key)
            if any(item == text for item in (raw if isinstance(raw, list) else (raw,)) if item is not None):
                return True
        return False

    return keep


def _union(plans: list[Plan]) -> Plan:
    plans = [plan for plan in plans if plan.run is not _empty]
    if not plans:
        return EMPTY
    if len(plans) == 1:
        return plans[0]
    runs = [plan.run for plan in plans]
    first = plans[0]
    if first.kind is not None and all((plan.kind, plan.path) == (first.kind, first.path) for plan in plans):
        return Plan(lambda values: [found for run in runs for found in run(values)], first.kind, first.path)
    possible: Possible = None
    if all(plan.kind is not None or plan.possible is not None for plan in plans):
        possible = frozenset(
            pair
            for plan in plans
            for pair in ([(plan.kind, plan.path)] if plan.kind is not None else plan.possible or ())
        )
    nodes = [plan.nodes for plan in plans]
    return Plan(lambda values: [node for run in nodes for node in run(values)], None, "", possible)


def _index(plan: Plan, index: int) -> Plan:
    return _then(plan, lambda values: values[index : index + 1], plan.kind, plan.path, plan.possible)


TOKEN = linear_regex.compile(
    r"\s*(?:(?P<string>'(?:[^'\\]|\\.)*')|(?P<number>\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>[().|\[\]=]))"
)


def _tokens(expression: str) -> list[str]:
    tokens, position = [], 0
    expression = expression.strip()
    for match in TOKEN.finditer(expression):  # one pass: the tokens must follow one another with nothing between
        if match.start() != position:
            break
        tokens.append(match.group().strip())
        position = match.end()
    if position < len(expression):
        raise Unsupported(expression[position:])
    return [token for token in tokens if token]


class _Parser:
    def __init__(self, expression: str, root: str, context: Plan | None = None) -> None:
        self.tokens = _tokens(expression)
        self.position = 0
        self.root = root
        self.context = context  # the element a relative expression starts from (composite components)

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise Unsupported(f"expected {expected!r}, got {token!r}")
        self.position += 1
        return token

    def parse(self) -> Plan:
        plan = self.union()
        if self.peek() is not None:
            raise Unsupported(f"trailing {self.peek()!r}")
        return plan

    def union(self) -> Plan:
        terms = [self.term()]
        while self.peek() == "|":
            self.take("|")
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else _union(terms)

    def term(self) -> Plan:
        token = self.take()
        if token == "(":
            plan = self.union()
            if self.peek() == "as":
                self.take("as")
                plan = _of_type(plan, self.take())
            self.take(")")
        elif token[:1].isupper():
            if token not in (self.root, "Resource", "DomainResource"):
                raise Unsupported(f"expression for {token}, not {self.root}")
            plan = Plan(_identity, self.root, self.root)
        elif self.context is not None and (token[:1].isalpha() or token[:1] == "_") and self.peek() != "(":
            plan = _child(self.context, token)
        else:
            raise Unsupported(token)
        while self.peek() in (".", "["):
            if self.take() == "[":
                index = int(self.take())
                self.take("]")
                plan = _index(plan, index)
            else:
                plan = self.invocation(plan)
        return plan

    def invocation(self, plan: Plan) -> Plan:
        name = self.take()
        if self.peek() != "(":
            return _child(plan, name)
        self.take("(")
        if name in ("as", "ofType"):
            plan = _of_type(plan, self.take())
        elif name == "first":
            plan = _index(plan, 0)
        elif name == "where":
            plan = self.condition(plan)
        else:
            raise Unsupported(name)
        self.take(")")
        return plan

    def condition(self, plan: Plan) -> Plan:
        head = self.take()
        if head == "resolve":
            self.take("(")
            self.take(")")
            self.take("is")
            target = self.take()
            if plan.kind is None:
                return _filter(plan, lambda node: resolved_type_of(node.value) == target)
            return _filter(plan, lambda value: resolved_type_of(value) == target)
        names = [head]
        while self.peek() == ".":
            self.take(".")
            names.append(self.take())
        self.take("=")
        literal = self.take()
        if not literal.startswith("'"):
            raise Unsupported(literal)
        return _filter(plan, _has_descendant_equal(plan, names, literal[1:-1]))


# -- fhirpathpy fallback -------------------------------------------------------------------------------------------


def _resolve_function(inputs: list[Any]) -> list[Any]:
    """``resolve()`` without a database: a node of the type the reference names (enough for ``is Patient``)."""
    from fhirpathpy.engine.nodes import ResourceNode

    out = []
    for item in inputs:
        kind = resolved_type_of(item)
        if kind:
            out.append(ResourceNode.create_node({"resourceType": kind}))
    return out


def _fallback(expression: str, root: str) -> Step:
    import fhirpathpy

    options = {"userInvocationTable": {"resolve": {"fn": _resolve_function, "arity": {0: []}}}, "returnRawData": True}
    compiled = fhirpathpy.compile(expression, MODEL, options)

    def step(nodes: list[Node]) -> list[Node]:
        return [_typed(item) for node in nodes for item in compiled(node.value, {}) if item is not None]

    return step


def _typed(item: Any) -> Node:
    """A value fhirpathpy found, as a Node typed from its element path (or guessed from its JSON value)."""
    from fhirpathpy.engine.nodes import ResourceNode

    if isinstance(item, ResourceNode):
        path = item.path or ""
        declared = PATH_TYPES.get(ELSEWHERE.get(path, path), path if "." not in path else "")
        kind = _type_name(declared) if declared else _guess(item.data)
        return Node(kind, item.data, path if declared in BACKBONE else kind)
    return Node(_guess(item), item)


def _guess(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "decimal"
    return "string"


@cache
def compile_plan(expression: str, root: str) -> tuple[Plan, bool]:
    """The Plan of ``expression`` over a ``root`` resource, and whether it is the compiled subset (not fhirpathpy)."""
    try:
        return _Parser(expression, root).parse(), True
    except (Unsupported, ValueError):
        step = _fallback(expression, root)
        return Plan(lambda values: step([Node(root, value, root) for value in values]), None), False


RESOURCE_VARIABLE = "%resource."


@cache
def compile_relative(expression: str, root: str, kind: str, path: str) -> tuple[Plan, str]:
    """The Plan of an expression relative to an element (a composite's component, search.html#composite): the
    element has FHIR type ``kind`` at element path ``path`` (``Observation.component``, or ``Observation`` for the
    resource itself) in a ``root`` resource. What the plan runs on (the second item): ``element``, the element's
    JSON value; ``resource``, the resource (``%resource.referenceSeq.chromosome``); ``pair``, (element, resource)
    tuples — outside the compiled subset, fhirpathpy evaluates it on a node typed with ``path``, ``%resource``
    bound to the resource."""
    if expression.startswith(RESOURCE_VARIABLE):
        plan, _ = compile_plan(root + "." + expression[len(RESOURCE_VARIABLE) :], root)
        return plan, "resource"
    try:
        return _Parser(expression, root, Plan(_identity, kind, path)).parse(), "element"
    except (Unsupported, ValueError):
        return Plan(_relative_fallback(expression, path), None), "pair"


def _relative_fallback(expression: str, path: str) -> Run:
    import fhirpathpy
    from fhirpathpy.engine.nodes import ResourceNode

    options = {"userInvocationTable": {"resolve": {"fn": _resolve_function, "arity": {0: []}}}, "returnRawData": True}
    compiled = fhirpathpy.compile(expression, MODEL, options)

    def run(pairs: list[Any]) -> list[Any]:
        out: list[Node] = []
        for element, resource in pairs:
            found = compiled(ResourceNode.create_node(element, path), {"resource": resource})
            out += [_typed(item) for item in found if item is not None]
        return out

    return run


def evaluate(resource: dict[str, Any], expression: str) -> list[Node]:
    """The typed values ``expression`` selects in ``resource``."""
    return compile_plan(expression, resource["resourceType"])[0].nodes([resource])
