"""Compile the common shape of R4 invariants into Python: boolean logic over element paths of the focus.

Spec: https://hl7.org/fhirpath/N1/#boolean-logic (three-valued ``and``, ``or``, ``xor``, ``implies``, ``not()``),
https://hl7.org/fhirpath/N1/#existence (``exists()``, ``empty()``), https://hl7.org/fhir/R4/fhirpath.html#functions
(``hasValue()``), https://hl7.org/fhirpath/N1/#equality (``=``, ``!=`` against a string literal, ``in`` a union of
literals).

The grammar compiled (anything else raises ``Unsupported`` and the caller uses fhirpathpy)::

    expr    := term (('and' | 'or' | 'xor' | 'implies') term)*      (FHIRPath precedence: and > xor/or > implies)
    term    := '(' expr ')' ['.not()'] | path '.' ('exists()' | 'empty()' | 'hasValue()') ['.not()']
             | path ('=' | '!=') literal ['.not()'] | path 'in' '(' literal ('|' literal)* ')'
             | path ('<' | '>' | '<=' | '>=') integer | path '.all(' expr ')' ['.not()']
             | path '.' ('matches' | 'contains' | 'startsWith') '(' 'string' ')' ['.not()']
             | path '.count()' ('+' path '.count()')* ('=' | '!=' | '<' | '>' | '<=' | '>=') integer
    path    := ['%resource' '.'] name ('.' name)*                    (element names of the focus's structure)
    literal := 'string' | 'true' | 'false' | '%ucum'

Element names are resolved against the focus's ``Structure`` when compiling (``value`` → ``valueString``,
``valueQuantity``…; a primitive also exists through its ``_x`` extension object), so a compiled check walks JSON
keys only. Results are True, False or None (empty), as FHIRPath would give them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_imaging import linear_regex
from fhir_imaging.validation.schema import EXTENSION_OF, PRIMITIVE, RESOURCE, Schema, Structure

Value = Callable[[Any, Any], "bool | None"]  # (focus, scope) → result


class Unsupported(Exception):
    """The expression is outside the compiled subset."""


TOKEN = linear_regex.compile(r"\s*(?:'(?:[^'\\]|\\.)*'|%?[A-Za-z_][A-Za-z0-9_]*|\d+|!=|<=|>=|[().=|+<>])")
COMPARE = {"<": -1, ">": 1}
OPERATORS = ("implies", "or", "xor", "and")  # lowest precedence first (or and xor share a level)


def _tokens(expression: str) -> list[str]:
    tokens, position = [], 0
    for match in TOKEN.finditer(expression):
        if match.start() != position:
            raise Unsupported(expression[position:])
        tokens.append(match.group().strip())
        position = match.end()
    if expression[position:].strip():
        raise Unsupported(expression[position:])
    return tokens


Path = tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]  # per step: (value keys, extension-only keys)
STRING_FUNCTIONS = ("matches", "contains", "startsWith")
LITERALS = {"true": True, "false": False}
VARIABLES = {"%ucum": "http://unitsofmeasure.org"}  # fhirpath.html#variables


class _Compiler:
    def __init__(self, expression: str, struct: Structure, schema: Schema) -> None:
        self.tokens = _tokens(expression)
        self.position = 0
        self.struct = struct
        self.schema = schema

    def peek(self, ahead: int = 0) -> str | None:
        at = self.position + ahead
        return self.tokens[at] if at < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise Unsupported(f"expected {expected!r}, got {token!r}")
        self.position += 1
        return token

    def compile(self) -> Value:
        value = self.expr(0, self.struct)
        if self.peek() is not None:
            raise Unsupported(f"trailing {self.peek()!r}")
        return value

    def expr(self, level: int, struct: Structure) -> Value:
        if level == len(OPERATORS):
            return self.term(struct)
        if OPERATORS[level] == "xor":
            return self.expr(level + 1, struct)
        names = ("or", "xor") if OPERATORS[level] == "or" else (OPERATORS[level],)
        left = self.expr(level + 1, struct)
        while self.peek() in names:
            operator = self.take()
            left = _logic(operator, left, self.expr(level + 1, struct))
        return left

    def term(self, struct: Structure) -> Value:
        if self.peek() == "(":
            self.take("(")
            inner = self.expr(0, struct)
            self.take(")")
            return self.negation(inner)
        rooted = self.peek() == "%resource"
        if rooted:
            self.take()
            self.take(".")
        path, last = self.path(None if rooted else struct)
        if rooted:
            path = (((), ()), *path)  # step 0 of a rooted path: the resource itself (see _values)
        token = self.take()
        if token in ("=", "!="):
            literal = self.literal()
            return self.negation(_equals(path, literal, token == "!="))
        if token in ("<", ">", "<=", ">="):
            number = self.take()
            if not number.isdigit():
                raise Unsupported(number)
            return _number_compare(path, token, int(number))
        if token == "in":
            self.take("(")
            literals = {self.literal()}
            while self.peek() == "|":
                self.take("|")
                literals.add(self.literal())
            self.take(")")
            return _member(path, frozenset(literals))
        if token != ".":
            raise Unsupported(token)
        function = self.take()
        self.take("(")
        if function == "all":
            if last is None:
                raise Unsupported("all() on an element of no single structure")
            inner = self.expr(0, last)
            self.take(")")
            return self.negation(_all(path, inner))
        if function in STRING_FUNCTIONS:
            argument = self.literal()
            self.take(")")
            if not isinstance(argument, str):
                raise Unsupported(function)
            return self.negation(_string_function(path, function, argument))
        self.take(")")
        if function == "count":
            return self.counts(struct, [path])
        if function == "exists":
            value = _exists(path)
        elif function == "empty":
            value = _not(_exists(path))
        elif function == "hasValue":
            value = _has_value(path)
        else:
            raise Unsupported(function)
        return self.negation(value)

    def counts(self, struct: Structure, paths: list[Path]) -> Value:
        """``a.count() + b.count() … <op> n``."""
        while self.peek() == "+":
            self.take("+")
            path, _ = self.path(struct)
            for expected in (".", "count", "(", ")"):
                self.take(expected)
            paths.append(path)
        operator = self.take()
        number = self.take()
        if not number.isdigit() or operator not in ("=", "!=", "<", ">", "<=", ">="):
            raise Unsupported(operator)
        return _count_compare(tuple(paths), operator, int(number))

    def negation(self, value: Value) -> Value:
        if self.peek() == "." and self.peek(1) == "not" and self.peek(2) == "(":
            for expected in (".", "not", "(", ")"):
                self.take(expected)
            return _not(value)
        return value

    def literal(self) -> str | bool:
        token = self.take()
        if token in LITERALS:
            return LITERALS[token]
        if token in VARIABLES:
            return VARIABLES[token]
        if not token.startswith("'") or "\\" in token:
            raise Unsupported(token)
        return token[1:-1]

    def path(self, struct: Structure | None) -> tuple[Path, Structure | None]:
        """The steps of an element path, and the structure of its last step (when it has exactly one)."""
        steps: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
        last: Structure | None = None
        while True:
            name = self.take()
            if not name[:1].isalpha() or name in OPERATORS or name in LITERALS:
                raise Unsupported(name)
            if struct is None:  # below %resource: any resource type (keys as written; no choice elements)
                steps.append(((name,), ("_" + name,)))
                last = None
            else:
                props = [
                    p
                    for p in struct.props.values()
                    if p.kind != EXTENSION_OF and (p.key == name or p.choice == name + "[x]")
                ]
                if not props:
                    raise Unsupported(name)
                steps.append((tuple(p.key for p in props), tuple("_" + p.key for p in props if p.kind == PRIMITIVE)))
                single = props[0] if len(props) == 1 and props[0].kind not in (PRIMITIVE, RESOURCE) else None
                last = self.schema.resolve(single) if single is not None else None
            if not (self.peek() == "." and self.peek(1) not in ("exists", "empty", "hasValue", "not", "all", "count")):
                return tuple(steps), last
            if self.peek(1) in STRING_FUNCTIONS:
                return tuple(steps), last
            if last is None and struct is not None:
                raise Unsupported(f"{name}: a primitive, a resource or a choice has no compiled children")
            self.take(".")
            struct = last


def _values(path: Path, focus: Any, scope: Any, with_extensions: bool) -> list[Any]:
    items = [focus]
    last = len(path) - 1
    for index, (keys, extension_keys) in enumerate(path):
        if not keys:  # %resource
            items = [scope.resource]
            continue
        found: list[Any] = []
        for item in items:
            if type(item) is not dict:
                continue
            for key in keys + (extension_keys if with_extensions and index == last else ()):
                value = item.get(key)
                if type(value) is list:
                    found.extend(one for one in value if one is not None)
                elif value is not None:
                    found.append(value)
        items = found
    return items


def _exists(path: Path) -> Value:
    return lambda focus, scope: bool(_values(path, focus, scope, True))


def _has_value(path: Path) -> Value:
    def value(focus: Any, scope: Any) -> bool:
        found = _values(path, focus, scope, False)
        return len(found) == 1 and type(found[0]) not in (dict, list)

    return value


def _equals(path: Path, literal: str | bool, negate: bool) -> Value:
    def value(focus: Any, scope: Any) -> bool | None:
        found = _values(path, focus, scope, False)
        if not found:
            return None
        same = len(found) == 1 and type(found[0]) is type(literal) and found[0] == literal
        return not same if negate else same

    return value


def _member(path: Path, literals: frozenset[str | bool]) -> Value:
    def value(focus: Any, scope: Any) -> bool | None:
        found = _values(path, focus, scope, False)
        if len(found) != 1:
            return None  # empty, or an error in FHIRPath ('in' takes one item on its left): not reported
        return type(found[0]) is str and found[0] in literals

    return value


def _all(path: Path, inner: Value) -> Value:
    def value(focus: Any, scope: Any) -> bool:
        return all(inner(item, scope) is True for item in _values(path, focus, scope, False))

    return value


def _string_function(path: Path, function: str, argument: str) -> Value:
    if function == "matches":
        pattern = linear_regex.compile(argument)
        test: Callable[[str], bool] = lambda text: any(True for _ in pattern.finditer(text))  # noqa: E731
    elif function == "contains":
        test = lambda text: argument in text  # noqa: E731
    else:
        test = lambda text: text.startswith(argument)  # noqa: E731

    def value(focus: Any, scope: Any) -> bool | None:
        found = _values(path, focus, scope, False)
        if len(found) != 1 or type(found[0]) is not str:
            return None
        return test(found[0])

    return value


def _count_compare(paths: tuple[Path, ...], operator: str, number: int) -> Value:
    def value(focus: Any, scope: Any) -> bool:
        total = sum(len(_values(path, focus, scope, True)) for path in paths)
        if operator in ("=", "!="):
            return (total == number) == (operator == "=")
        order = (total > number) - (total < number)
        return order == COMPARE[operator] if len(operator) == 1 else order in (0, COMPARE[operator[0]])

    return value


def _number_compare(path: Path, operator: str, number: int) -> Value:
    def value(focus: Any, scope: Any) -> bool | None:
        found = _values(path, focus, scope, False)
        if len(found) != 1 or type(found[0]) not in (int, float):
            return None
        order = (found[0] > number) - (found[0] < number)
        return order == COMPARE[operator] if len(operator) == 1 else order in (0, COMPARE[operator[0]])

    return value


def _not(inner: Value) -> Value:
    def value(focus: Any, scope: Any) -> bool | None:
        result = inner(focus, scope)
        return None if result is None else not result

    return value


def _logic(operator: str, left: Value, right: Value) -> Value:
    def value(focus: Any, scope: Any) -> bool | None:
        a, b = left(focus, scope), right(focus, scope)
        if operator == "and":
            return False if a is False or b is False else None if a is None or b is None else True
        if operator == "or":
            return True if a is True or b is True else None if a is None or b is None else False
        if operator == "xor":
            return None if a is None or b is None else a != b
        # implies
        return True if a is False or b is True else None if a is None or b is None else False

    return value


def compile_subset(expression: str, struct: Structure, schema: Schema) -> Value:
    """A Python function of the focus object for ``expression``; ``Unsupported`` when outside the subset."""
    return _Compiler(expression, struct, schema).compile()
