"""Resolving id/oid search values (ImagingStudy ``series=``, ``instance=``) before a search is planned.

Their search index keeps a 64-bit hash of each value, not its text (search/index.py ``ID_TABLE``). A hash names
candidates; each candidate's list of its values under the parameter (stored sorted and compressed in its row of
``ID_TABLE``, search/idlist.py) is read, and only the resources that hold the value itself are kept (``IdMatch``,
which the planner compiles to the hash and those rids). So two values that share a hash never return each other's
resources, and a search's answer is the same as if the text were indexed. The cost is one short list decompressed
a candidate (a UID names one study, or the few that repeat it), not its body.
Spec: https://hl7.org/fhir/R4/search.html#token
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fhir_imaging.search import sql
from fhir_imaging.search.idlist import holds, unpack_codes
from fhir_imaging.search.index import ID_HASH_TABLE, ID_TABLE, id_hash
from fhir_imaging.search.query import AnyOf, Chain, Clause, Filter, Has
from fhir_imaging.search.types.token import IdMatch, TokenValue


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


def resolve_clause(run: Any, clause: Clause) -> Clause:
    hashes = {value.code: id_hash(clause.key, value.code) for value in clause.values if _resolvable(value)}
    if not hashes:
        return clause
    x, t = "x", "t"
    candidates = sql.Select(
        ((sql.Column(t, "rid"), None), (sql.Column(t, "type"), None), (sql.Column(t, "codes"), None)),
        ((ID_HASH_TABLE, x), (ID_TABLE, t)),
        sql.and_(
            sql.InValues(sql.Column(x, "h"), tuple(sorted(set(hashes.values())))),
            sql.eq(sql.Column(t, "rid"), sql.Column(x, "rid")),
            sql.eq(sql.Column(t, "param"), clause.key),
        ),
    )
    types = {resource_type for resource_type, _ in clause.expressions}
    holders: dict[str, dict[int, None]] = {code: {} for code in hashes}
    checked: set[int] = set()
    for rid, resource_type, packed in run(candidates):
        if rid in checked or resource_type not in types or packed is None:
            continue
        checked.add(rid)
        codes = unpack_codes(packed)
        for code, found in holders.items():
            if holds(codes, code):
                found[rid] = None
    values = tuple(
        IdMatch(value.code, hashes[value.code], tuple(sorted(holders[value.code]))) if _resolvable(value) else value
        for value in clause.values
    )
    return replace(clause, values=values)
