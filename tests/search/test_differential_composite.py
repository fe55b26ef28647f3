"""Differential tests of composite parameters (search/composite.py): on generated Observations — several codes,
components with codes and quantities in several units, values of every kind — the SQL search returns exactly what
the oracle (search/match.py) returns, on SQLite and on PostgreSQL, in every planning mode (``check``).

Spec: https://hl7.org/fhir/R4/search.html#composite
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from fhir_imaging.storage.base import Store
from tests.search.test_differential import EXAMPLES, TAG_SYSTEM, check, date_text, full_datetime, store

__all__ = ["store"]  # the two-backend fixture of the differential tests

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CODES = ("8480-6", "8462-4", "85354-9", "29463-7")
COUNTER = itertools.count()

CODING = st.fixed_dictionaries(
    {"code": st.sampled_from(CODES)},
    optional={"system": st.sampled_from([LOINC, "urn:other"]), "display": st.sampled_from(["Systolic", "Weight"])},
)
CONCEPT = st.fixed_dictionaries({"coding": st.lists(CODING, min_size=1, max_size=2)})
# Components mostly share two codes, so that a component with the code asked for and another with the value asked
# for (the match that must not be) are frequent.
COMPONENT_CODING = st.fixed_dictionaries({"code": st.sampled_from(CODES[:2])}, optional={"system": st.just(LOINC)})
COMPONENT_CONCEPT = st.fixed_dictionaries({"coding": st.lists(COMPONENT_CODING, min_size=1, max_size=2)})
ANSWER = st.fixed_dictionaries({"coding": st.lists(st.fixed_dictionaries({"code": st.sampled_from(["LA1", "LA2"])},
                                optional={"system": st.just(LOINC)}), min_size=1, max_size=2)})  # fmt: skip


@st.composite
def quantity(draw: st.DrawFn) -> dict[str, Any]:
    unit = draw(st.sampled_from([("mm[Hg]", "mmHg"), ("mm[Hg]", "mmHg"), ("kg", "kg"), ("g", "g"), (None, "mmHg")]))
    value: dict[str, Any] = {"value": draw(st.sampled_from([0.5, 5.4, 80, 99.6, 100, 100.4, 120])), "unit": unit[1]}
    if unit[0]:
        value |= {"system": UCUM, "code": unit[0]}
    return value


@st.composite
def value_x(draw: st.DrawFn, component: bool = False) -> dict[str, Any]:
    kinds = ["Quantity", "Quantity", "Quantity", "CodeableConcept", "none"] if component else [
        "Quantity", "Quantity", "CodeableConcept", "String", "DateTime", "Period", "none"]  # fmt: skip
    kind = draw(st.sampled_from(kinds))
    if kind == "Quantity":
        return {"valueQuantity": draw(quantity())}
    if kind == "CodeableConcept":
        return {"valueCodeableConcept": draw(ANSWER)}
    if kind == "String":
        return {"valueString": draw(st.sampled_from(["High", "high tide", "Low", "Ärger"]))}
    if kind == "DateTime":
        return {"valueDateTime": full_datetime(draw)}
    if kind == "Period":
        return {"valuePeriod": {"start": full_datetime(draw)}}
    return {}


@st.composite
def observations(draw: st.DrawFn) -> list[dict[str, Any]]:
    ns = f"c{next(COUNTER)}-"
    tag = {"system": TAG_SYSTEM, "code": ns}
    resources = []
    for index in range(draw(st.integers(1, 6))):
        observation: dict[str, Any] = {
            "resourceType": "Observation",
            "id": f"{ns}o{index}",
            "meta": {"tag": [tag]},
            "status": draw(st.sampled_from(["final", "amended"])),
            "code": draw(CONCEPT),
            **draw(value_x()),
        }
        components = [{"code": draw(COMPONENT_CONCEPT), **draw(value_x(True))} for _ in range(draw(st.integers(0, 4)))]
        if components:
            observation["component"] = components
        resources.append(observation)
    return resources


@st.composite
def composite_query(draw: st.DrawFn) -> list[tuple[str, str]]:
    # hypothesis draws the first of a list most often: the parameters with component elements come first
    name = draw(st.sampled_from(["component-code-value-quantity", "combo-code-value-quantity", "code-value-quantity",
                                 "component-code-value-concept", "combo-code-value-concept", "code-value-concept",
                                 "code-value-string", "code-value-date"]))  # fmt: skip
    if draw(st.sampled_from(["value"] * 9 + ["missing"])) == "missing":
        return [(f"{name}:missing", draw(st.sampled_from(["true", "false"])))]
    values = []
    for _ in range(draw(st.integers(1, 2))):
        code = draw(st.sampled_from((*CODES[:2], *CODES)))
        token = draw(st.sampled_from([code, f"{LOINC}|{code}", f"|{code}", "urn:other|"]))
        if name.endswith("quantity"):
            unit = draw(st.sampled_from(["", "", "", f"|{UCUM}|mm[Hg]", "||mmHg", "||kg", "|urn:x|g"]))
            number = draw(st.sampled_from(["100", "5.4", "1e2", "80", "100"]))
            second = draw(st.sampled_from(["", "gt", "lt", "gt", "lt", "ge", "le", "ne", "ap"])) + number + unit
        elif name.endswith("concept"):
            second = draw(st.sampled_from(["LA1", f"{LOINC}|LA2", "|LA1", f"{LOINC}|"]))
        elif name.endswith("string"):
            second = draw(st.sampled_from(["high", "Low", "arg", "x"]))
        else:
            second = draw(st.sampled_from(["", "ge", "lt", "eq", "sa", "eb", "ap"])) + draw(date_text())
        values.append(f"{token}${second}")
    query = [(name, ",".join(values))]
    if draw(st.booleans()):
        query.append(("status", "final"))
    return query


@given(observations(), composite_query())
@EXAMPLES
def test_composite(store: Store, resources: list[dict[str, Any]], query: list[tuple[str, str]]) -> None:
    check(store, resources, "Observation", query)


def test_components_matching_different_elements_do_not_match(store: Store) -> None:
    """One component has the systolic code, another a value over 100: no single component is systolic over 100."""
    ns = f"c{next(COUNTER)}-"
    tag = {"system": TAG_SYSTEM, "code": ns}

    def component(code: str, value: float) -> dict[str, Any]:
        return {
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "valueQuantity": {"value": value, "unit": "mmHg"},
        }

    split = {
        "resourceType": "Observation",
        "id": f"{ns}split",
        "meta": {"tag": [tag]},
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
        "component": [component("8480-6", 90), component("8462-4", 130)],
    }
    same = {**split, "id": f"{ns}same", "component": [component("8480-6", 130), component("8462-4", 90)]}
    resources = [split, same]
    for name in ("component-code-value-quantity", "combo-code-value-quantity"):
        check(store, resources, "Observation", [(name, f"{LOINC}|8480-6$gt100")])
        found = _ids(store, resources, [(name, f"{LOINC}|8480-6$gt100")])
        assert found == [f"{ns}same"]
        assert _ids(store, resources, [(name, "8462-4$gt100")]) == [f"{ns}split"]
    # the Observation's own code with a component's value is no element either
    assert _ids(store, resources, [("code-value-quantity", "85354-9$gt100")]) == []


def _ids(store: Store, resources: list[dict[str, Any]], query: list[tuple[str, str]]) -> list[str]:
    from fhir_imaging.fhir.registry import load_registry
    from fhir_imaging.search.execute import run_search
    from fhir_imaging.search.query import parse_search

    ns = resources[0]["meta"]["tag"][0]["code"]
    request = parse_search(load_registry(), ("Observation",), [("_tag", f"{TAG_SYSTEM}|{ns}"), *query])
    return [hit.id for hit in run_search(store, request, ("",)).matches]
