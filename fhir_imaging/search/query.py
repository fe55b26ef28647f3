"""Query string → typed search (``SearchRequest``): parameters, modifiers, prefixes, chains, ``_has``, result control.

Pure. Errors are ``BadRequest`` whose issue names the parameter at fault (``expression`` = the parameter name).
Unknown parameters are left out (and listed in ``unknown``) unless ``strict``, which makes them a 400.
Spec: https://hl7.org/fhir/R4/search.html
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fhir_imaging.config import Settings
from fhir_imaging.fhir.cardinality import single_point
from fhir_imaging.fhir.outcome import BadRequest, error
from fhir_imaging.fhir.registry import Registry, SearchParam, expression_for_base
from fhir_imaging.fhir.resource import is_ascii_digits, parse_whole_number
from fhir_imaging.search.composite import parse_composite
from fhir_imaging.search.index import ID_TABLE, param_table
from fhir_imaging.search.paging import CURSOR
from fhir_imaging.search.types import TYPES
from fhir_imaging.search.types.base import InvalidValue, NotSupportedModifier, split_escaped
from fhir_imaging.search.types.token import TokenValue, parse_token

PASSIVE = frozenset({"_format", "_pretty"})  # shape the response, not the search
TOTALS = ("none", "estimate", "accurate")
SUMMARIES = ("true", "false", "text", "data", "count")
UNSUPPORTED_CONTROL = frozenset({"_contained", "_containedType", "_text", "_content", "_query", "_list", "_filter"})


@dataclass(frozen=True, slots=True)
class Clause:
    """One parameter with its OR-ed values (the values of one occurrence, comma-separated)."""

    code: str
    kind: str  # the parameter type
    modifier: str | None
    values: tuple[Any, ...]
    table: str  # the index table the values are compared in
    key: str  # the param column value there ("identifier", "identifier:of-type", "patient:identifier")
    missing: bool | None = None  # :missing=true|false
    single: bool = False  # a date parameter with at most one value per resource, a point in time (fhir/cardinality.py)
    # id/oid parameters (index.py ID_TABLE): (resource type, expression) per type (a hash's candidates of these types)
    expressions: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Chain:
    """``code[:Type].rest``: resources whose reference ``code`` points at a target matching ``inner``."""

    code: str
    target_types: tuple[str, ...]
    inner: Filter


@dataclass(frozen=True, slots=True)
class Has:
    """``_has:Source:code:rest``: resources that some ``Source`` matching ``inner`` points at through ``code``."""

    source: str
    code: str
    inner: Filter


@dataclass(frozen=True, slots=True)
class Compartment:
    """Resources in the compartment of Patient/``patient_id`` (through any of ``codes``)."""

    codes: tuple[str, ...]
    patient_id: str


@dataclass(frozen=True, slots=True)
class Alternative:
    """One branch of ``AnyOf``: resources of ``types`` matching every filter of ``filters`` (none: all of them)."""

    types: tuple[str, ...]
    filters: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    """Resources that match at least one of ``alternatives`` (none: no resource). Never parsed from a query string:
    the server builds it, e.g. from the search criteria of granular SMART scopes (``patient/Observation.rs?…``),
    each scope one alternative, so that a search is narrowed in SQL (totals and paging stay right)."""

    alternatives: tuple[Alternative, ...]


Filter = Clause | Chain | Has | Compartment | AnyOf


@dataclass(frozen=True, slots=True)
class SortKey:
    code: str
    kind: str  # parameter type, or "_id" / "_lastUpdated" for resource columns
    descending: bool
    table: str = ""  # the index table of its rows ('' for resource columns)


@dataclass(frozen=True, slots=True)
class Include:
    source: str  # resource type holding the reference (or '*')
    code: str | None  # reference parameter (None: every reference parameter, from "*")
    target: str | None
    iterate: bool
    reverse: bool


@dataclass(frozen=True)
class SearchRequest:
    types: tuple[str, ...]
    filters: tuple[Filter, ...] = ()
    sort: tuple[SortKey, ...] = ()
    count: int = 20
    total: str | None = None
    summary: str | None = None
    elements: tuple[str, ...] | None = None
    includes: tuple[Include, ...] = ()
    cursor: str | None = None
    performed: tuple[tuple[str, str], ...] = ()  # the parameters as applied (for the self link)
    unknown: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SearchLimits:
    """How big a search may be (settings ``max_search_parameters``, ``max_search_values``, ``max_sort_keys``,
    ``max_chain_depth``, ``max_has_depth``). Past them the search is a 400 naming the parameter, before any SQL is
    built: each value is a term of the SQL, and databases take long over (or refuse) statements too large or deep."""

    parameters: int  # parameters in one search (each occurrence counts, _include and _sort too)
    values: int  # values in one search, every parameter's comma-separated values together
    sort_keys: int  # keys of _sort (each is a correlated lookup for every match)
    chain_depth: int  # links of a chain (subject.organization.name is 2)
    has_depth: int  # _has nested in _has

    @classmethod
    def of(cls, settings: Settings) -> SearchLimits:
        return cls(
            parameters=settings.max_search_parameters,
            values=settings.max_search_values,
            sort_keys=settings.max_sort_keys,
            chain_depth=settings.max_chain_depth,
            has_depth=settings.max_has_depth,
        )


DEFAULT_LIMITS = SearchLimits.of(Settings())


def id_clause(ids: Iterable[str]) -> Clause:
    """``_id=a,b,…`` built directly (no limit on the number of ids: the server, not a client, lists them)."""
    values = tuple(TokenValue(None, resource_id) for resource_id in ids)
    return Clause("_id", "token", None, values, TYPES["token"].table, "_id")


def bad(name: str, message: str, code: str = "invalid") -> BadRequest:
    return BadRequest(issues=[error(code, f"{name}: {message}", name)])


def common_param(registry: Registry, types: Iterable[str], code: str) -> SearchParam | None:
    """The parameter ``code`` if every type has it with one parameter type (system search needs that)."""
    found = [registry.params_for(name).get(code) for name in types]
    if not found or any(param is None for param in found):
        return None
    if len({(param.type, param_table(param)) for param in found if param}) != 1:
        return None
    return found[0]


def _searchable(param: SearchParam | None) -> bool:
    return param is not None and param.searchable


class _Parser:
    def __init__(self, registry: Registry, strict: bool) -> None:
        self.registry = registry
        self.strict = strict
        self.unknown: list[str] = []

    def unknown_param(self, name: str, why: str) -> None:
        if self.strict:
            raise bad(name, why, "not-supported")
        self.unknown.append(name)

    def filter(self, types: tuple[str, ...], name: str, spec: str, value: str) -> Filter | None:
        """Parse ``spec`` (the name, or what is left of it inside a chain) against ``types``."""
        if spec.startswith("_has:"):
            return self.has(types, name, spec, value)
        head, dot, rest = spec.partition(".")
        code, colon, modifier_text = head.partition(":")
        modifier = modifier_text if colon else None
        param = common_param(self.registry, types, code)
        if not _searchable(param):
            self.unknown_param(name, f"unknown or unsupported search parameter '{code}' for {', '.join(types)}")
            return None
        assert param is not None
        if dot:
            return self.chain(types, name, param, modifier, rest, value)
        return self.clause(types, name, param, modifier, value)

    def clause(
        self, types: tuple[str, ...], name: str, param: SearchParam, modifier: str | None, value: str
    ) -> Clause | None:
        if modifier == "missing":
            if value not in ("true", "false"):
                raise bad(name, f":missing takes true or false, not '{value}'")
            return Clause(param.code, param.type, modifier, (), param_table(param), param.code, value == "true")
        if param.type == "composite":
            return self.composite(name, param, modifier, value)
        kind = TYPES[param.type]
        if modifier is not None and modifier not in kind.modifiers and not self.type_modifier(param, modifier):
            raise bad(name, f"unknown modifier ':{modifier}' for a {param.type} parameter")
        table, key = param_table(param), param.code
        parse: Callable[[str, str | None, SearchParam], Any] = kind.parse_value
        if modifier == "of-type":
            key = f"{param.code}:of-type"
        if modifier == "identifier":
            table, key = TYPES["token"].table, f"{param.code}:identifier"
            parse = lambda text, _modifier, _param: parse_token(text)  # noqa: E731
        values = parse_values(name, value, lambda text: parse(text, modifier, param))
        if not values:
            return None
        single = param.type == "date" and table == kind.table and self.single_point(types, param.code)
        expressions = self.expressions(types, param.code) if table == ID_TABLE else ()
        return Clause(
            param.code, param.type, modifier, tuple(values), table, key, single=single, expressions=expressions
        )

    def expressions(self, types: tuple[str, ...], code: str) -> tuple[tuple[str, str], ...]:
        """(type, the expression of ``code`` there) for each of ``types``."""
        return tuple((name, self.registry.params_for(name)[code].expression or "") for name in types)

    def composite(self, name: str, param: SearchParam, modifier: str | None, value: str) -> Clause | None:
        """``a$b,c$d``: each comma-separated value one value per component (search/composite.py)."""
        if modifier is not None:
            raise bad(name, f"unknown modifier ':{modifier}' for a composite parameter (it takes :missing only)")
        values = parse_values(name, value, lambda text: parse_composite(text, param))
        if not values:
            return None
        return Clause(param.code, param.type, None, tuple(values), param_table(param), param.code)

    def single_point(self, types: tuple[str, ...], code: str) -> bool:
        """Whether ``code`` gives each resource of every one of ``types`` at most one value, a point in time."""
        for name in types:
            param = self.registry.params_for(name).get(code)
            if param is None or not single_point(name, expression_for_base(param.expression, name)):
                return False
        return True

    def type_modifier(self, param: SearchParam, modifier: str) -> bool:
        return param.type == "reference" and self.registry.is_resource_type(modifier)

    def chain(
        self, types: tuple[str, ...], name: str, param: SearchParam, modifier: str | None, rest: str, value: str
    ) -> Filter | None:
        if param.type != "reference":
            raise bad(name, f"'{param.code}' is a {param.type} parameter: only reference parameters chain")
        if modifier is not None and not self.type_modifier(param, modifier):
            raise bad(name, f"a chained reference takes a resource type modifier (:{modifier} is not one)")
        targets = (modifier,) if modifier else param.targets or tuple(sorted(self.registry.resource_types))
        inner_code = rest.partition(".")[0].partition(":")[0]
        usable = tuple(
            target
            for target in targets
            if inner_code == "_has" or _searchable(self.registry.params_for(target).get(inner_code))
        )
        kinds = {self.registry.params_for(target)[inner_code].type for target in usable if inner_code != "_has"}
        if not usable:
            self.unknown_param(name, f"no target of '{param.code}' has a search parameter '{inner_code}'")
            return None
        if len(kinds) > 1:
            raise bad(name, f"'{inner_code}' differs in type between targets: name one with :{usable[0]}")
        inner = self.filter(usable, name, rest, value)
        return Chain(param.code, usable, inner) if inner is not None else None

    def has(self, types: tuple[str, ...], name: str, spec: str, value: str) -> Filter | None:
        parts = spec.split(":", 3)
        if len(parts) < 4 or not parts[3]:
            raise bad(name, "_has takes _has:Type:reference-parameter:parameter=value")
        _, source, code, rest = parts
        if not self.registry.is_resource_type(source):
            raise bad(name, f"'{source}' is not a resource type")
        param = self.registry.params_for(source).get(code)
        if param is None or param.type != "reference" or not _searchable(param):
            raise bad(name, f"'{code}' is not a reference parameter of {source}")
        inner = self.filter((source,), name, rest, value)
        return Has(source, code, inner) if inner is not None else None


def check_size(name: str, value: str, limits: SearchLimits) -> int:
    """One parameter within ``limits``, judged from its text before it is parsed: the links of a chain
    (``subject:Patient.organization.name`` has 2: its dots) and the nesting of ``_has``; its number of values."""
    if name.count(".") > limits.chain_depth:
        raise bad(name, f"a chain may have {limits.chain_depth} links at most", "too-costly")
    if name.count("_has:") > limits.has_depth:
        raise bad(name, f"_has may be nested {limits.has_depth} deep at most", "too-costly")
    return value.count(",") + 1


def parse_count(value: str, maximum: int) -> int:
    """``_count``: a whole number of 0 or more; anything over ``maximum`` (however long) is reduced to it."""
    if not is_ascii_digits(value):
        raise bad("_count", f"_count must be a whole number of 0 or more, not '{value[:40]}'")
    number = parse_whole_number(value, maximum)
    return maximum if number is None else number  # None: more than the maximum


def parse_sort(registry: Registry, types: tuple[str, ...], value: str) -> tuple[SortKey, ...]:
    keys = []
    for item in value.split(","):
        item = item.strip()
        descending = item.startswith("-")
        code = item.lstrip("-")
        if code in ("_id", "_lastUpdated"):
            keys.append(SortKey(code, code, descending))
            continue
        param = common_param(registry, types, code)
        if not _searchable(param) or code == "_has":
            raise bad("_sort", f"cannot sort by '{code}': not a search parameter of {', '.join(types)}")
        assert param is not None
        if param.type == "composite":
            raise bad("_sort", f"cannot sort by '{code}': a composite parameter has no order")
        keys.append(SortKey(code, param.type, descending, param_table(param)))
    return tuple(keys)


def parse_include(registry: Registry, name: str, value: str) -> Include:
    iterate = name.endswith((":iterate", ":recurse"))
    reverse = name.startswith("_revinclude")
    if value == "*":
        return Include("*", None, None, iterate, reverse)
    parts = value.split(":")
    if len(parts) not in (2, 3) or not registry.is_resource_type(parts[0]):
        raise bad(name, f"'{value}' is not Type:parameter[:TargetType]")
    source, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if code == "*":
        return Include(source, None, target, iterate, reverse)
    param = registry.params_for(source).get(code)
    if param is None or param.type != "reference" or not _searchable(param):
        raise bad(name, f"'{code}' is not a reference parameter of {source}")
    if target is not None and not registry.is_resource_type(target):
        raise bad(name, f"'{target}' is not a resource type")
    return Include(source, code, target, iterate, reverse)


def parse_search(
    registry: Registry,
    types: tuple[str, ...],
    items: Iterable[tuple[str, str]],
    *,
    strict: bool = False,
    default_count: int = 20,
    max_count: int = 1000,
    extra: tuple[Filter, ...] = (),
    limits: SearchLimits = DEFAULT_LIMITS,
) -> SearchRequest:
    """Parse the (name, value) pairs of a search over ``types`` (one type, or several for a system search)."""
    parser = _Parser(registry, strict)
    filters: list[Filter] = list(extra)
    performed: list[tuple[str, str]] = []
    control: dict[str, Any] = {"count": default_count}
    includes: list[Include] = []
    items = list(items)
    if len(items) > limits.parameters:
        raise bad(
            items[limits.parameters][0], f"a search may have {limits.parameters} parameters at most", "too-costly"
        )
    values = 0
    for name, value in items:
        values += check_size(name, value, limits)
        if values > limits.values:
            raise bad(
                name, f"a search may have {limits.values} values at most, all its parameters together", "too-costly"
            )
        if name in PASSIVE or name == "_type":
            continue
        if name == CURSOR:
            control["cursor"] = value
            continue
        if name == "_count":
            control["count"] = parse_count(value, max_count)
        elif name == "_sort":
            control["sort"] = parse_sort(registry, types, value) if value else ()
            if len(control["sort"]) > limits.sort_keys:
                raise bad(name, f"_sort takes {limits.sort_keys} keys at most", "too-costly")
        elif name == "_total":
            if value not in TOTALS:
                raise bad(name, f"_total takes {', '.join(TOTALS)}, not '{value}'")
            control["total"] = value
        elif name == "_summary":
            if value not in SUMMARIES:
                raise bad(name, f"_summary takes {', '.join(SUMMARIES)}, not '{value}'")
            control["summary"] = None if value == "false" else value
        elif name == "_elements":
            control["elements"] = tuple(item.strip() for item in value.split(",") if item.strip())
        elif name.partition(":")[0] in ("_include", "_revinclude"):
            if name.partition(":")[2] not in ("", "iterate", "recurse"):
                raise bad(name, f"unknown modifier on {name.partition(':')[0]}")
            includes.append(parse_include(registry, name, value))
        elif name in UNSUPPORTED_CONTROL or (
            name.startswith("_")
            and not name.startswith("_has:")
            and common_param(registry, types, name.partition(":")[0].partition(".")[0]) is None
        ):
            parser.unknown_param(name, f"'{name}' is not supported by this server")
            continue
        else:
            found = parser.filter(types, name, name, value)
            if found is None:
                continue
            filters.append(found)
        performed.append((name, value))
    return SearchRequest(
        types=types,
        filters=tuple(filters),
        sort=control.get("sort", ()),
        count=control["count"],
        total=control.get("total"),
        summary=control.get("summary"),
        elements=control.get("elements"),
        includes=tuple(includes),
        cursor=control.get("cursor"),
        performed=tuple(performed),
        unknown=tuple(parser.unknown),
    )


def parse_values(name: str, value: str, parse: Callable[[str], Any]) -> list[Any]:
    """Each non-empty comma-separated value of parameter ``name`` parsed (an OR of them); a value ``parse`` refuses is
    a 400 naming the parameter."""
    values = []
    for text in split_escaped(value, ","):
        if text == "":
            continue
        try:
            values.append(parse(text))
        except NotSupportedModifier as exc:
            raise bad(name, str(exc), "not-supported") from None
        except InvalidValue as exc:
            raise bad(name, str(exc)) from None
    return values
