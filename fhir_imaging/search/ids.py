"""Resolving id/oid search values (ImagingStudy ``series=``, ``instance=``) before a search is planned.

Their index keeps a 64-bit hash of each value, not its text (search/index.py ``ID_TABLE``). A hash names
candidates; each candidate's stored body is read and the parameter's expression run on it, and only the resources
that hold the value itself are kept (``IdMatch``, which the planner compiles to the hash and those rids). So two
values that share a hash never return each other's resources, and a search's answer is the same as if the text were
indexed. The cost is one body parsed a matching resource (a UID names one study, or the few that repeat it); a
candidate whose body does not hold the value's JSON string at all (a collision) is dropped without parsing it.
Spec: https://hl7.org/fhir/R4/search.html#token
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson

from fhir_imaging.search import sql
from fhir_imaging.search.index import ID_HASH_TABLE, ID_TABLE, compile_extractor, id_hash
from fhir_imaging.search.query import AnyOf, Chain, Clause, Filter, Has
from fhir_imaging.search.types.token import IdMatch, TokenValue
from fhir_imaging.storage.bodies import unpack


def resolve_ids(run: Any, filters: tuple[Filter, ...]) -> tuple[Filter, ...]:
    """``filters`` with every id/oid value resolved to an ``IdMatch`` (at any depth: chains, ``_has``, ``AnyOf``);
    ``run(select)`` runs a statement and returns its rows."""
    return tuple(_resolve(run, item) for item in filters)


def _resolve(run: Any, item: Filter) -> Filter:
    if isinstance(item, Clause):
        return resolve_clause(run, item) if item.table == ID_TABLE and item.missing is None else item
    if isinstance(item, (Chain, Has)):
        return replace(item, inner=_resolve(run, item.inner))
    if isinstance(item, AnyOf):
        branches = tuple(replace(branch, filters=resolve_ids(run, branch.filters)) for branch in item.alternatives)
        return replace(item, alternatives=branches)
    return item


def _resolvable(value: Any) -> bool:
    """A code with no system or with ``|``: the only form an id/oid value can match (compile_id_token)."""
    return isinstance(value, TokenValue) and value.code is not None and value.system in (None, "")


def _plain(code: str) -> bool:
    """Whether JSON writers spell ``code`` one way (printable ASCII, none of the characters some writers escape):
    then a body that does not contain it as a JSON string cannot hold it."""
    return code.isascii() and code.isprintable() and not any(char in code for char in "\"\\/<>&'")


def resolve_clause(run: Any, clause: Clause) -> Clause:
    hashes = {value.code: id_hash(clause.key, value.code) for value in clause.values if _resolvable(value)}
    if not hashes:
        return clause
    x, r = "x", "r"
    candidates = sql.Select(
        ((sql.Column(r, "rid"), None), (sql.Column(r, "type"), None), (sql.Column(r, "body"), None)),
        ((ID_HASH_TABLE, x), ("resource", r)),
        sql.and_(
            sql.InValues(sql.Column(x, "h"), tuple(sorted(set(hashes.values())))),
            sql.eq(sql.Column(r, "rid"), sql.Column(x, "rid")),
            sql.eq(sql.Column(r, "deleted"), 0),
        ),
    )
    expressions = dict(clause.expressions)
    holders: dict[str, dict[int, None]] = {code: {} for code in hashes}
    checked: set[int] = set()
    for rid, resource_type, body in run(candidates):
        expression = expressions.get(resource_type)
        if rid in checked or expression is None:
            continue
        checked.add(rid)
        document = unpack(body)
        present = [code for code in holders if not _plain(code) or orjson.dumps(code) in document]
        if not present:
            continue
        extract = compile_extractor(expression, resource_type, "token")
        held = {columns[1] for _, _, columns in extract(orjson.loads(document))}
        for code in present:
            if code in held:
                holders[code][rid] = None
    values = tuple(
        IdMatch(value.code, hashes[value.code], tuple(sorted(holders[value.code]))) if _resolvable(value) else value
        for value in clause.values
    )
    return replace(clause, values=values)
