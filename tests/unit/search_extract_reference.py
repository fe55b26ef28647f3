"""A frozen copy of the index extraction as it was before it was compiled into closures (the reference).

``test_search_extract_equivalence.py`` checks that ``fhir_imaging.search.index.Indexer.statements`` returns exactly what
this returns. Only the value parsers shared with the query side (``normalize``, ``parse_interval``,
``strip_reference``) are imported; the FHIRPath subset, the typing of nodes and every type's ``extract`` are copied
(the date and string generators condensed, same rows in the same order). No tests here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fhirpathpy.models import models

from fhir_imaging.fhir.registry import SearchParam, load_registry
from fhir_imaging.search.idlist import pack_codes
from fhir_imaging.search.index import ID_HASH_TABLE, ID_TABLE, id_hash, param_table
from fhir_imaging.search.types import TYPES
from fhir_imaging.search.types.base import InvalidValue, normalize
from fhir_imaging.search.types.date import parse_interval
from fhir_imaging.search.types.reference import strip_reference

MODEL = models["r4"]
PATH_TYPES: dict[str, str] = MODEL["path2Type"]
CHOICES: dict[str, list[str]] = MODEL["choiceTypePaths"]
ELSEWHERE: dict[str, str] = MODEL["pathsDefinedElsewhere"]
BACKBONE = frozenset({"BackboneElement", "Element"})
BACKBONE_PATHS = frozenset(
    prefix
    for path in PATH_TYPES
    for prefix in (path.rsplit(".", 1)[0],)
    if "." in prefix and prefix not in PATH_TYPES and prefix not in CHOICES
)
REFERENCE_PATTERN = re.compile(
    r"^(?:(?P<base>[a-z][a-z0-9+.\-]*://.*?)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/[^/]+)?$"
)
Row = tuple[str, str, tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Node:
    type: str
    value: Any
    path: str = ""


class Unsupported(Exception):
    pass


def _type_name(name: str) -> str:
    if name.startswith("System."):
        name = name[len("System.") :]
        return {"String": "string", "Boolean": "boolean", "Integer": "integer", "Decimal": "decimal"}.get(
            name, name[0].lower() + name[1:]
        )
    lowered = name[0].lower() + name[1:]
    return lowered if lowered in PRIMITIVES else name


PRIMITIVES = frozenset(value for value in PATH_TYPES.values() if value[:1].islower())


def reference_target(reference: str) -> tuple[str, str, str] | None:
    match = REFERENCE_PATTERN.match(reference)
    if match is None:
        return None
    return match.group("base") or "", match.group("type"), match.group("id")


def resolved_type(node: Node) -> str | None:
    value = node.value
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


def children(node: Node, name: str) -> Iterator[Node]:
    value = node.value
    if not isinstance(value, dict):
        return
    path = f"{node.path}.{name}"
    path = ELSEWHERE.get(path, path)
    choices = CHOICES.get(path)
    if choices is not None:
        for choice in choices:
            yield from _items(value.get(name + choice), _type_name(choice), path)
        return
    declared = PATH_TYPES.get(path)
    if declared is None:
        if path in BACKBONE_PATHS:
            yield from _items(value.get(name), "BackboneElement", path)
        return
    kind = _type_name(declared)
    yield from _items(value.get(name), kind, path if declared in BACKBONE else kind)


def _items(raw: Any, kind: str, path: str) -> Iterator[Node]:
    if raw is None:
        return
    for item in raw if isinstance(raw, list) else (raw,):
        if item is None:
            continue
        if kind == "Resource" and isinstance(item, dict) and isinstance(item.get("resourceType"), str):
            yield Node(item["resourceType"], item, item["resourceType"])
        else:
            yield Node(kind, item, path)


Step = Callable[[list[Node]], list[Node]]
TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^'\\]|\\.)*')|(?P<number>\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>[().|\[\]=]))"
)


def _tokens(expression: str) -> list[str]:
    tokens, position = [], 0
    expression = expression.strip()
    while position < len(expression):
        match = TOKEN.match(expression, position)
        if match is None or match.end() == position:
            raise Unsupported(expression[position:])
        tokens.append(match.group().strip())
        position = match.end()
    return [token for token in tokens if token]


class _Parser:
    def __init__(self, expression: str, root: str) -> None:
        self.tokens = _tokens(expression)
        self.position = 0
        self.root = root

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise Unsupported(f"expected {expected!r}, got {token!r}")
        self.position += 1
        return token

    def parse(self) -> Step:
        step = self.union()
        if self.peek() is not None:
            raise Unsupported(f"trailing {self.peek()!r}")
        return step

    def union(self) -> Step:
        terms = [self.term()]
        while self.peek() == "|":
            self.take("|")
            terms.append(self.term())
        if len(terms) == 1:
            return terms[0]
        return lambda nodes: [found for term in terms for found in term(nodes)]

    def term(self) -> Step:
        token = self.take()
        if token == "(":
            inner = self.union()
            if self.peek() == "as":
                self.take("as")
                inner = _compose(inner, _of_type(self.take()))
            self.take(")")
            step = inner
        elif token[:1].isupper():
            step = _root(token, self.root)
        else:
            raise Unsupported(token)
        while self.peek() in (".", "["):
            if self.take() == "[":
                index = int(self.take())
                self.take("]")
                step = _compose(step, lambda nodes, i=index: nodes[i : i + 1])
            else:
                step = _compose(step, self.invocation())
        return step

    def invocation(self) -> Step:
        name = self.take()
        if self.peek() != "(":
            return lambda nodes: [child for node in nodes for child in children(node, name)]
        self.take("(")
        if name in ("as", "ofType"):
            step = _of_type(self.take())
        elif name == "first":
            step = lambda nodes: nodes[:1]  # noqa: E731
        elif name == "where":
            step = self.condition()
        else:
            raise Unsupported(name)
        self.take(")")
        return step

    def condition(self) -> Step:
        head = self.take()
        if head == "resolve":
            self.take("(")
            self.take(")")
            self.take("is")
            target = self.take()
            return lambda nodes: [node for node in nodes if resolved_type(node) == target]
        self.take("=")
        literal = self.take()
        if not literal.startswith("'"):
            raise Unsupported(literal)
        text = literal[1:-1]
        return lambda nodes: [node for node in nodes if any(child.value == text for child in children(node, head))]


def _compose(first: Step, second: Step) -> Step:
    return lambda nodes: second(first(nodes))


def _of_type(name: str) -> Step:
    wanted = _type_name(name)
    return lambda nodes: [node for node in nodes if node.type == wanted]


def _root(name: str, root: str) -> Step:
    if name not in (root, "Resource", "DomainResource"):
        raise Unsupported(f"expression for {name}, not {root}")
    return lambda nodes: nodes


def _resolve_function(inputs: list[Any]) -> list[Any]:
    from fhirpathpy.engine.nodes import ResourceNode

    out = []
    for item in inputs:
        kind = resolved_type(Node("Reference", item))
        if kind:
            out.append(ResourceNode.create_node({"resourceType": kind}))
    return out


def _fallback(expression: str) -> Step:
    import fhirpathpy
    from fhirpathpy.engine.nodes import ResourceNode

    options = {"userInvocationTable": {"resolve": {"fn": _resolve_function, "arity": {0: []}}}, "returnRawData": True}
    compiled = fhirpathpy.compile(expression, MODEL, options)

    def step(nodes: list[Node]) -> list[Node]:
        out = []
        for node in nodes:
            for item in compiled(node.value, {}):
                if isinstance(item, ResourceNode):
                    path = item.path or ""
                    declared = PATH_TYPES.get(ELSEWHERE.get(path, path), path if "." not in path else "")
                    kind = _type_name(declared) if declared else _guess(item.data)
                    out.append(Node(kind, item.data, path if declared in BACKBONE else kind))
                elif item is not None:
                    out.append(Node(_guess(item), item))
        return out

    return step


def _guess(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "decimal"
    return "string"


STEPS: dict[tuple[str, str], Step] = {}


def compile_expression(expression: str, root: str) -> Step:
    key = (expression, root)
    if key not in STEPS:
        try:
            STEPS[key] = _Parser(expression, root).parse()
        except (Unsupported, ValueError):
            STEPS[key] = _fallback(expression)
    return STEPS[key]


# -- the types' extract, as they were ----------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return normalize(value) if isinstance(value, str) and value else None


def _coding_row(coding: Any, text: str | None) -> Row | None:
    if not isinstance(coding, dict):
        return None
    code, system = coding.get("code"), coding.get("system")
    display = _text(coding.get("display")) or text
    if not isinstance(code, str) and display is None:
        return None
    return ("token", "", (system if isinstance(system, str) else "", code if isinstance(code, str) else None, display))


def token_rows(node: Node) -> Iterator[Row]:
    value, kind = node.value, node.type
    if kind == "Coding":
        row = _coding_row(value, None)
        if row:
            yield row
    elif kind == "CodeableConcept" and isinstance(value, dict):
        text = _text(value.get("text"))
        for coding in value.get("coding") or ():
            row = _coding_row(coding, None)
            if row:
                yield row
        if text:
            yield ("token", "", ("", None, text))
    elif kind == "Identifier" and isinstance(value, dict):
        identifier, system = value.get("value"), value.get("system")
        system = system if isinstance(system, str) else ""
        kind_of = value.get("type") if isinstance(value.get("type"), dict) else {}
        text = _text(kind_of.get("text"))
        if isinstance(identifier, str):
            yield ("token", "", (system, identifier, text))
            for coding in kind_of.get("coding") or ():
                if isinstance(coding, dict) and coding.get("code"):
                    type_system = f"{coding.get('system') or ''}|{coding['code']}"
                    yield ("token", "of-type", (type_system, identifier, None))
        elif text:
            yield ("token", "", (system, None, text))
    elif kind == "ContactPoint" and isinstance(value, dict):
        if isinstance(value.get("value"), str):
            system = value.get("system")
            yield ("token", "", (system if isinstance(system, str) else "", value["value"], None))
    elif kind == "boolean" and isinstance(value, bool):
        yield ("token", "", ("", "true" if value else "false", None))
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        yield ("token", "", ("", str(value), None))
    elif isinstance(value, bool):
        yield ("token", "", ("", "true" if value else "false", None))


def reference_row(reference: str) -> tuple[Any, ...]:
    url = strip_reference(reference)
    target = reference_target(url)
    if target is None:
        return (None, None, None, url)
    base, kind, identity = target
    return (kind, identity, base, url)


def reference_rows(node: Node) -> Iterator[Row]:
    value = node.value
    if isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str) and reference and not reference.startswith("#"):
            yield ("reference", "", reference_row(reference))
        identifier = value.get("identifier")
        if isinstance(identifier, dict):
            for _, _, row in token_rows(Node("Identifier", identifier)):
                yield ("token", "identifier", row)
    elif isinstance(value, str) and value and not value.startswith("#"):
        yield ("reference", "", reference_row(value))


def _point(value: Any) -> tuple[int, int] | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_interval(value)
    except InvalidValue:
        return None


def _period(value: Any) -> tuple[int, int] | None:
    if not isinstance(value, dict):
        return None
    start, end = _point(value.get("start")), _point(value.get("end"))
    if start is None and end is None:
        return None
    return (start[0] if start else -(2**62), end[1] if end else 2**62)


def date_rows(node: Node) -> Iterator[Row]:
    value = node.value
    intervals: list[tuple[int, int] | None] = []
    if node.type in ("date", "dateTime", "instant") or (isinstance(value, str) and node.type == "string"):
        intervals.append(_point(value))
    elif node.type == "Period":
        intervals.append(_period(value))
    elif node.type == "Timing" and isinstance(value, dict):
        intervals.extend(_point(event) for event in value.get("event") or ())
        repeat = value.get("repeat")
        if isinstance(repeat, dict):
            intervals.append(_period(repeat.get("boundsPeriod")))
    for interval in intervals:
        if interval:
            yield ("date", "", interval)


def string_rows(node: Node) -> Iterator[Row]:
    value = node.value
    texts: list[Any] = []
    if isinstance(value, str):
        texts.append(value)
    elif isinstance(value, dict):
        name_parts = ("family", "given", "prefix", "suffix", "text")
        address_parts = ("line", "city", "district", "state", "postalCode", "country", "text")
        parts = name_parts if node.type == "HumanName" else address_parts if node.type == "Address" else ()
        for part in parts:
            item = value.get(part)
            texts.extend(
                text for text in (item if isinstance(item, list) else (item,)) if isinstance(text, str) and text
            )
    for text in texts:
        yield ("string", "", (normalize(text), text))


def number_of(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def number_rows(node: Node) -> Iterator[Row]:
    number = number_of(node.value)
    if number is not None:
        yield ("number", "", (number, number))
    elif node.type == "Range" and isinstance(node.value, dict):
        low, high = node.value.get("low") or {}, node.value.get("high") or {}
        lo, hi = number_of(low.get("value")), number_of(high.get("value"))
        if lo is not None or hi is not None:
            yield ("number", "", (lo if lo is not None else -1e308, hi if hi is not None else 1e308))


def _unit(quantity: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    def text(key: str) -> str | None:
        item = quantity.get(key)
        return item if isinstance(item, str) else None

    return text("system"), text("code"), text("unit")


def quantity_rows(node: Node) -> Iterator[Row]:
    value = node.value
    if not isinstance(value, dict):
        return
    if node.type == "Range":
        low, high = value.get("low") or {}, value.get("high") or {}
        lo, hi = number_of(low.get("value")), number_of(high.get("value"))
        if lo is None and hi is None:
            return
        unit = low if lo is not None else high
        yield ("quantity", "", (*_unit(unit), lo if lo is not None else -1e308, hi if hi is not None else 1e308))
    elif node.type == "SampledData":
        origin = value.get("origin") or {}
        number = number_of(origin.get("value"))
        if number is not None:
            yield ("quantity", "", (*_unit(origin), number, number))
    else:
        number = number_of(value.get("value"))
        if number is not None:
            if node.type == "Money":
                currency = value.get("currency") if isinstance(value.get("currency"), str) else None
                yield ("quantity", "", ("urn:iso:std:iso:4217", currency, currency, number, number))
            else:
                yield ("quantity", "", (*_unit(value), number, number))


def uri_rows(node: Node) -> Iterator[Row]:
    if isinstance(node.value, str) and node.value:
        yield ("uri", "", (node.value,))


EXTRACT: dict[str, Callable[[Node], Iterator[Row]]] = {
    "token": token_rows,
    "reference": reference_rows,
    "date": date_rows,
    "string": string_rows,
    "number": number_rows,
    "quantity": quantity_rows,
    "uri": uri_rows,
}


# -- index.py, as it was -----------------------------------------------------------------------------------------


def extract_values(resource: dict[str, Any], param: SearchParam) -> list[Row]:
    assert param.expression is not None
    root = resource["resourceType"]
    step = compile_expression(param.expression, root)
    rows: dict[Row, None] = {}
    for node in step([Node(root, resource, root)]):
        for row in EXTRACT[param.type](node):
            rows[row] = None
    return list(rows)


def index_statements(rid: int, resource: dict[str, Any], placeholder: str = "?") -> list[tuple[str, list[Any]]]:
    resource_type = resource["resourceType"]
    registry = load_registry()
    by_table: dict[str, list[tuple[Any, ...]]] = {}
    for param in registry.searchable_params(resource_type):
        if param.type not in TYPES:
            continue
        ids = param_table(param) == ID_TABLE  # id/oid values: their hashes; least, greatest and all per param
        codes = []
        for kind, sub, columns in extract_values(resource, param):
            key = param.code if not sub else f"{param.code}:{sub}"
            if ids:
                codes.append(columns[1])
                continue
            by_table.setdefault(TYPES[kind].table, []).append((rid, resource_type, key, *columns))
        if codes:
            row = (rid, resource_type, param.code, min(codes), max(codes), pack_codes(codes))
            by_table.setdefault(ID_TABLE, []).append(row)
            hashes = list(dict.fromkeys(id_hash(param.code, code) for code in codes))
            by_table.setdefault(ID_HASH_TABLE, []).extend((h, rid) for h in hashes)
    out = []
    for table, rows in by_table.items():
        if table == ID_TABLE:
            values = ", ".join(placeholder for _ in range(6))
            out.append((f"INSERT INTO {ID_TABLE} (rid, type, param, lo, hi, codes) VALUES ({values})", rows))
            continue
        if table == ID_HASH_TABLE:
            pair = f"{placeholder}, {placeholder}"
            out.append((f"INSERT INTO {table} (h, rid) VALUES ({pair}) ON CONFLICT DO NOTHING", rows))
            continue
        kind = next(kind for kind in TYPES.values() if kind.table == table)
        names = ("rid", "type", "param", *(column.name for column in kind.value_columns))
        sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(placeholder for _ in names)})"
        out.append((sql, rows))
    return out
