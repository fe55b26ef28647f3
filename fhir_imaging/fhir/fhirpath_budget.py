"""Bounds on fhirpathpy when it evaluates an expression a client sent (the ``where()`` criteria of a FHIRPath Patch).

fhirpathpy cannot be interrupted from outside, but it dispatches every step of an evaluation through two tables:
``evaluators`` (navigation, literals, operators) and ``invocation_registry`` (every function and operator). When this
module is first imported (once per process, at start-up), each entry of both tables is wrapped. While a ``Budget`` is
active in the current context, every step first checks the budget's deadline, and the items each function takes in
and gives back are counted against the budget (a string given back counts one item per ``STRING_CHARS_PER_ITEM``
characters). The steps whose output can outgrow their input are charged before they run (``replace``, ``join``,
``toChars``, ``split``) or replaced by linear versions charged as they go (member navigation, ``repeat``,
``descendants``, and ``matches``/``replaceMatches`` on RE2). Past a bound, ``BudgetExceeded`` is raised, and it stays
raised: every later step raises again. Numbers outside FHIRPath's range (integers over 64 bits, decimals of 10^64 and
more) are refused: Python would compute with them for minutes.

Outside a budget (the shipped SearchParameter expressions of ``search/fhirpath.py``) the wrappers only look the
budget up and call fhirpathpy's own functions.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal
from functools import reduce
from typing import Any, cast

import re2
from fhirpathpy.engine import do_eval, util
from fhirpathpy.engine.evaluators import create_reduce_member_invocation, evaluators
from fhirpathpy.engine.invocations import invocation_registry, navigation
from fhirpathpy.engine.invocations.strings import ensure_string_singleton
from fhirpathpy.engine.nodes import ResourceNode

STRING_CHARS_PER_ITEM = 100  # a string produced counts one item more per this many characters
MAX_INTEGER_BITS = 64
MAX_DECIMAL_EXPONENT = 64
DOLLAR_GROUP = "$"


@dataclass(frozen=True, slots=True)
class FhirPathLimits:
    max_length: int  # characters of an expression
    max_items: int  # items all the steps of the evaluations under one budget may take in and give back
    timeout: float  # seconds all the evaluations under one budget may take


class BudgetExceeded(Exception):
    """An evaluation went past a bound of its budget (the message says which)."""


class Budget:
    """The time and items left to the evaluations of one request."""

    __slots__ = ("deadline", "exceeded", "items", "limits")

    def __init__(self, limits: FhirPathLimits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.timeout
        self.items = 0
        self.exceeded: str | None = None

    def check_time(self) -> None:
        if self.exceeded is None and time.monotonic() > self.deadline:
            self.exceeded = f"the FHIRPath evaluation took more than {self.limits.timeout:g} s"
        if self.exceeded is not None:
            raise BudgetExceeded(self.exceeded)

    def charge(self, items: int) -> None:
        self.items += items
        if self.exceeded is None and self.items > self.limits.max_items:
            self.exceeded = f"the FHIRPath evaluation went over {self.limits.max_items} items"
        self.check_time()


_CURRENT: ContextVar[Budget | None] = ContextVar("fhirpath_budget", default=None)


@contextmanager
def budget(limits: FhirPathLimits) -> Iterator[Budget]:
    """Every fhirpathpy evaluation in this context (and thread) runs under one new budget."""
    active = Budget(limits)
    token = _CURRENT.set(active)
    try:
        yield active
    finally:
        _CURRENT.reset(token)


def current_budget() -> Budget | None:
    return _CURRENT.get()


# -- weighing ------------------------------------------------------------------------------------------------------


def _data(item: Any) -> Any:
    return item.data if isinstance(item, ResourceNode) else item


def _check_number(data: Any) -> None:
    if isinstance(data, bool):
        return
    if isinstance(data, int) and data.bit_length() > MAX_INTEGER_BITS:
        raise BudgetExceeded(f"an integer of more than {MAX_INTEGER_BITS} bits is out of FHIRPath's range")
    if isinstance(data, Decimal) and data.is_finite() and data and data.adjusted() >= MAX_DECIMAL_EXPONENT:
        raise BudgetExceeded(f"a decimal of 10^{MAX_DECIMAL_EXPONENT} or more is out of FHIRPath's range")


def input_weight(value: Any) -> int:
    """An argument's cost: one per item (numbers out of range refused)."""
    if isinstance(value, list):
        for item in value:
            _check_number(_data(item))
        return len(value)
    _check_number(_data(value))
    return 0 if callable(value) else 1


def output_weight(value: Any) -> int:
    """A result's cost: one per item, and one more per ``STRING_CHARS_PER_ITEM`` characters of a string."""
    total = 0
    for item in value if isinstance(value, list) else [value]:
        data = _data(item)
        _check_number(data)
        total += 1 + (len(data) // STRING_CHARS_PER_ITEM if isinstance(data, str) else 0)
    return total


def _chars(length: int) -> int:
    return 1 + length // STRING_CHARS_PER_ITEM


# -- what the steps whose output can outgrow their input cost before they run --------------------------------------


def _string_of(coll: Any) -> str | None:
    try:
        value = ensure_string_singleton(coll)
    except Exception:  # fhirpathpy raises a plain Exception for a non-string: the function itself reports it
        return None
    return value if isinstance(value, str) else None


def _replace_cost(args: tuple[Any, ...]) -> int:
    string, pattern, substitution = _string_of(args[0]), args[1], args[2]
    if string is None or not isinstance(pattern, str) or not isinstance(substitution, str):
        return 0
    matches = len(string) + 1 if pattern == "" else string.count(pattern)
    return _chars(len(string) + matches * len(substitution))


def _join_cost(args: tuple[Any, ...]) -> int:
    items = args[0] if isinstance(args[0], list) else []
    separator = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
    texts = [_data(item) for item in items]
    length = sum(len(text) for text in texts if isinstance(text, str)) + len(separator) * len(texts)
    return _chars(length)


def _chars_cost(args: tuple[Any, ...]) -> int:
    string = _string_of(args[0])
    return 0 if string is None else len(string)


def _split_cost(args: tuple[Any, ...]) -> int:
    string = _string_of(args[0])
    return 0 if string is None else len(string) + 1


UPFRONT: dict[str, Callable[[tuple[Any, ...]], int]] = {
    "replace": _replace_cost,
    "join": _join_cost,
    "toChars": _chars_cost,
    "split": _split_cost,
}


# -- steps rewritten to be charged as they go ----------------------------------------------------------------------


def _repeat(ctx: dict[str, Any], data: Any, expr: Callable[[Any], list[Any]]) -> list[Any]:
    """fhirpathpy's ``repeat`` (same result), in linear time and charged item by item."""
    if not isinstance(data, list):
        return []
    active = current_budget()
    found: list[Any] = []
    seen: set[Any] = set()
    pending = deque(data)
    while pending:
        fresh = [item for item in expr(pending.popleft()) if item not in seen]
        if active is not None:
            active.charge(output_weight(fresh))
        seen.update(fresh)
        found.extend(fresh)
        pending.extend(fresh)
    return found


def _descendants(ctx: dict[str, Any], coll: list[Any]) -> list[Any]:
    """fhirpathpy's ``descendants`` (same result), charged level by level."""
    active = current_budget()
    found: list[Any] = []
    level: list[Any] = reduce(navigation.create_reduce_children(ctx, False), coll, [])
    while level:
        if active is not None:
            active.charge(len(level))
        found.extend(level)
        level = reduce(navigation.create_reduce_children(ctx, False), level, [])
    return found


def _expand(template: str, match: Any) -> str:
    """``$1`` in a replaceMatches substitution → the match's group 1 (``$0``: the whole match)."""
    pieces, position = [], 0
    while (dollar := template.find(DOLLAR_GROUP, position)) >= 0:
        end = dollar + 1
        while end < len(template) and template[end].isdigit() and end - dollar <= 2:
            end += 1
        pieces.append(template[position:dollar])
        if end > dollar + 1 and int(template[dollar + 1 : end]) <= match.re.groups:
            pieces.append(match.group(int(template[dollar + 1 : end])) or "")
        else:
            pieces.append(template[dollar:end])
        position = end
    pieces.append(template[position:])
    return "".join(pieces)


def _regex(pattern: str, dot_all: bool) -> Any:
    options = re2.Options()
    options.dot_nl = dot_all
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


def _matches(ctx: dict[str, Any], coll: list[Any], regex: Any) -> Any:
    if not regex or not coll:
        return []
    return _regex(regex, dot_all=True).search(ensure_string_singleton(coll)) is not None


def _replace_matches(ctx: dict[str, Any], coll: list[Any], regex: Any, substitution: Any) -> Any:
    string = ensure_string_singleton(coll)
    if not isinstance(regex, str) or not isinstance(substitution, str):
        return []
    active = current_budget()
    pieces, position = [], 0
    for match in _regex(regex, dot_all=False).finditer(string):
        piece = string[position : match.start()] + _expand(substitution, match)
        if active is not None:
            active.charge(_chars(len(piece)))
        pieces.append(piece)
        position = match.end()
    pieces.append(string[position:])
    return "".join(pieces)


REWRITTEN: dict[str, Callable[..., Any]] = {
    "repeat": _repeat,
    "descendants": _descendants,
    "matches": _matches,
    "replaceMatches": _replace_matches,
}


# -- the wrappers --------------------------------------------------------------------------------------------------


def _budgeted_invocation(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    upfront = UPFRONT.get(name)
    bounded = REWRITTEN.get(name, function)

    @functools.wraps(function)
    def invoke(ctx: Any, *args: Any) -> Any:
        active = _CURRENT.get()
        if active is None:
            return function(ctx, *args)
        active.charge(sum(input_weight(arg) for arg in args) + (upfront(args) if upfront else 0))
        result = bounded(ctx, *args)
        active.charge(output_weight(result))
        return result

    invoke.__dict__["budgeted"] = True
    return invoke


def _member_invocation(ctx: dict[str, Any], parent: Any, node: dict[str, Any]) -> list[Any]:
    """fhirpathpy's member navigation (``.name``, same result), in linear time and charged item by item."""
    key = do_eval(ctx, parent, node["children"][0])[0].replace("`", "")
    if not isinstance(parent, list):
        return []
    if util.is_capitalized(key):
        try:
            return [ResourceNode.create_node(item, key) for item in parent if item["resourceType"] == key]
        except TypeError:
            pass
    step = create_reduce_member_invocation(ctx["model"], key)
    active = current_budget()
    found: list[Any] = []
    for item in parent:
        children = step([], item)
        if active is not None:
            active.charge(len(children))
        found.extend(children)
    return found


REWRITTEN_EVALUATORS: dict[str, Callable[..., Any]] = {"MemberInvocation": _member_invocation}


def _budgeted_evaluator(kind: str, evaluator: Callable[..., Any]) -> Callable[..., Any]:
    bounded = REWRITTEN_EVALUATORS.get(kind, evaluator)

    @functools.wraps(evaluator)
    def evaluate(ctx: Any, parent: Any, node: Any) -> Any:
        active = _CURRENT.get()
        if active is None:
            return evaluator(ctx, parent, node)
        active.check_time()
        return bounded(ctx, parent, node)

    evaluate.__dict__["budgeted"] = True
    return evaluate


def install() -> None:
    """Wrap every entry of fhirpathpy's dispatch tables (once: a second call changes nothing)."""
    registry = cast(dict[str, dict[str, Any]], invocation_registry)  # name → {"fn": …, "arity": …}
    for name, invocation in registry.items():
        function = invocation.get("fn")
        if function is not None and not getattr(function, "budgeted", False):
            invocation["fn"] = _budgeted_invocation(name, function)
    for kind, evaluator in list(evaluators.items()):
        if not getattr(evaluator, "budgeted", False):
            evaluators[kind] = _budgeted_evaluator(kind, evaluator)


install()
