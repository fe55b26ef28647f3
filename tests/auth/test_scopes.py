"""SMART scopes read into grants (pure), and granular grants' queries read into search filters."""

from __future__ import annotations

import dataclasses

import pytest

from fhir_imaging.auth.scopes import Access, Grant, parse_scope, parse_scopes
from fhir_imaging.config import Settings
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.search.query import AnyOf, Chain, SearchLimits, parse_search
from fhir_imaging.service.caller import Caller
from fhir_imaging.service.granular import GrantQueries, narrowing


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("patient/ImagingStudy.rs", Grant("patient", "ImagingStudy", frozenset("rs"))),
        ("user/*.cruds", Grant("user", "*", frozenset("cruds"))),
        ("system/*.rs", Grant("system", "*", frozenset("rs"))),
        ("system/Patient.c", Grant("system", "Patient", frozenset("c"))),
        ("patient/*.read", Grant("patient", "*", frozenset("rs"))),
        ("user/*.write", Grant("user", "*", frozenset("cud"))),
        ("user/*.*", Grant("user", "*", frozenset("cruds"))),
        ("system/Observation.*", Grant("system", "Observation", frozenset("cruds"))),
        (
            "patient/Observation.rs?category=laboratory",
            Grant("patient", "Observation", frozenset("rs"), "category=laboratory"),
        ),
        ("openid", None),
        ("fhirUser", None),
        ("launch/patient", None),
        ("user/*.sr", None),  # v2 letters out of order
        ("user/*.rr", None),
        ("user/*.x", None),
        ("user/*.", None),
        ("admin/*.read", None),
        ("user/Im-aging.rs", None),
        ("*.*", None),
    ],
)
def test_scopes_read_into_grants(scope: str, expected: Grant | None) -> None:
    assert parse_scope(scope) == expected


def test_access_allows_by_interaction_and_type() -> None:
    access = Access(parse_scopes("openid system/ImagingStudy.rs user/Patient.cud"))
    assert access.allows("r", "ImagingStudy") and access.allows("s", "ImagingStudy")
    assert not access.allows("c", "ImagingStudy") and not access.allows("r", "Patient")
    assert access.allows("c", "Patient") and access.allows("d", "Patient")
    assert not access.allows("r", "*")  # a grant on one type is not a grant on every type
    assert Access(parse_scopes("system/*.rs")).allows("r", "*")


def test_patient_grants_need_a_patient_and_confine_to_it() -> None:
    assert not Access(parse_scopes("patient/*.cruds")).allows("r", "ImagingStudy")  # no patient in context
    confined = Access(parse_scopes("patient/*.rs user/Practitioner.rs"), patient="p1")
    assert confined.allows("r", "ImagingStudy") and confined.confined_to("r", "ImagingStudy") == "p1"
    assert confined.allows("r", "Practitioner") and confined.confined_to("r", "Practitioner") is None
    assert not confined.allows("c", "ImagingStudy")


def test_granular_grants_allow_their_queries_combined_with_or() -> None:
    access = Access(parse_scopes("user/Observation.rs?category=laboratory user/Observation.r?category=vital-signs"))
    assert access.allows("r", "Observation") and access.allows("s", "Observation")
    assert access.queries("r", "Observation") == ("category=laboratory", "category=vital-signs")
    assert access.queries("s", "Observation") == ("category=laboratory",)
    assert access.queries("c", "Observation") == ()  # no grant covers it
    assert not access.allows("c", "Observation")


def test_a_grant_without_a_query_lifts_the_restriction() -> None:
    access = Access(parse_scopes("user/Observation.rs?category=laboratory system/Observation.r"))
    assert access.queries("r", "Observation") is None
    assert access.queries("s", "Observation") == ("category=laboratory",)
    assert Access(parse_scopes("user/*.rs user/Observation.rs?code=x")).queries("s", "Observation") is None
    assert Access(parse_scopes("user/*.rs?_tag=a|b")).queries("s", "Observation") == ("_tag=a|b",)


def test_granular_patient_grants_need_a_patient_and_stay_confined() -> None:
    scopes = "patient/Observation.rs?category=laboratory"
    assert Access(parse_scopes(scopes)).queries("r", "Observation") == ()
    confined = Access(parse_scopes(scopes), patient="p1")
    assert confined.queries("r", "Observation") == ("category=laboratory",)
    assert confined.confined_to("r", "Observation") == "p1"
    # A user/ grant with a query does not lift the confinement of a patient/ one: narrower than the union, never wider.
    mixed = Access(parse_scopes(f"{scopes} user/Observation.rs?category=vital-signs"), patient="p1")
    assert mixed.confined_to("r", "Observation") == "p1"
    assert mixed.queries("r", "Observation") == ("category=laboratory", "category=vital-signs")


# -- the queries read for a type (service/granular.py) --------------------------------------------------------------

LAB = "category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"


@pytest.fixture(scope="module")
def grant_queries() -> GrantQueries:
    registry = load_registry()
    return GrantQueries(registry, SearchLimits.of(Settings()))


def _caller(scopes: str, queries: GrantQueries, patient: str | None = None) -> Caller:
    return Caller("client", access=Access(parse_scopes(scopes), patient), queries=queries)


def test_a_grant_query_reads_as_the_filters_a_search_would(grant_queries: GrantQueries) -> None:
    (group,) = grant_queries.groups((LAB,), "Observation")
    expected = parse_search(load_registry(), ("Observation",), [("category", LAB.partition("=")[2])], strict=True)
    assert group == expected.filters
    (encoded,) = grant_queries.groups((LAB.replace("|", "%7C").replace(":", "%3A"),), "Observation")
    assert encoded == group  # a scope may percent-encode its query
    (both,) = grant_queries.groups(("status=final&code=1234-5",), "Observation")
    assert [item.code for item in both] == ["status", "code"]  # type: ignore[union-attr]
    (chained,) = grant_queries.groups(("subject:Patient.gender=female",), "Observation")
    assert isinstance(chained[0], Chain)


@pytest.mark.parametrize(
    "query",
    [
        "nonsense=1",  # unknown parameter (strict: it would otherwise widen the grant)
        "date=notadate",  # bad value
        "category=",  # no value
        "_count=5",  # result control, not criteria
        "category=laboratory&_sort=date",
        "_include=Observation:subject",
        "_format=json",
        "_type=Patient",
        "category:unknownmodifier=x",
        "&",
        "=",
        "%ZZ=%",
        "category=laboratory&" * 200,  # more parameters than a search may have
        "value-quantity=ap1x",
        "_has:Observation:subject:" * 5 + "code=1",  # deeper than a search may go
    ],
)
def test_a_query_that_does_not_parse_grants_nothing(grant_queries: GrantQueries, query: str) -> None:
    assert grant_queries.groups((query,), "Observation") == ()
    caller = _caller(f"user/Observation.rs?{query.replace(' ', '')}", grant_queries)
    assert not caller.may("r", "Observation") and not caller.may("s", "Observation")
    assert caller.granted("s", "Observation") == ()


def test_a_malformed_query_leaves_the_other_grants_alone(grant_queries: GrantQueries) -> None:
    caller = _caller(f"user/Observation.rs?nonsense=1 user/Observation.rs?{LAB}", grant_queries)
    assert caller.may("s", "Observation")
    assert caller.granted("s", "Observation") == grant_queries.groups((LAB,), "Observation")


def test_a_wildcard_grant_reads_its_query_per_type(grant_queries: GrantQueries) -> None:
    caller = _caller("user/*.rs?_tag=urn:t|x user/*.s?category=laboratory", grant_queries)
    assert len(caller.granted("s", "Observation") or ()) == 2
    assert len(caller.granted("s", "Patient") or ()) == 1  # Patient has no category: that grant is not Patient's
    assert not caller.may("r", "*")  # criteria cannot be read for "every type"


def test_queries_are_parsed_once_per_query_and_type(grant_queries: GrantQueries) -> None:
    first = grant_queries.groups(("status=final",), "Observation")
    assert grant_queries.groups(("status=final",), "Observation")[0] is first[0]


def test_the_groups_of_one_type_hold_one_searchs_worth_of_filters() -> None:
    queries = GrantQueries(load_registry(), dataclasses.replace(SearchLimits.of(Settings()), parameters=3))
    found = queries.groups(("status=final&code=1", "status=amended", "code=2", "code=3"), "Observation")
    assert [len(group) for group in found] == [2, 1]  # further grants are left out: narrower, never wider


def test_narrowing_is_the_grant_itself_for_one_grant_and_an_or_for_several(grant_queries: GrantQueries) -> None:
    one = _caller("user/ImagingStudy.rs?modality=CT", grant_queries)
    assert narrowing(one, "s", ("ImagingStudy",)) == grant_queries.groups(("modality=CT",), "ImagingStudy")[0]
    unrestricted = _caller("user/ImagingStudy.rs", grant_queries)
    assert narrowing(unrestricted, "s", ("ImagingStudy",)) == ()
    several = _caller("user/ImagingStudy.rs?modality=CT user/ImagingStudy.rs?status=available", grant_queries)
    (any_of,) = narrowing(several, "s", ("ImagingStudy",))
    assert isinstance(any_of, AnyOf) and len(any_of.alternatives) == 2
    mixed = _caller("user/ImagingStudy.rs?modality=CT user/Patient.rs user/Endpoint.rs", grant_queries)
    (system,) = narrowing(mixed, "s", ("ImagingStudy", "Patient", "Endpoint"))
    assert isinstance(system, AnyOf)
    assert {branch.types: len(branch.filters) for branch in system.alternatives} == {
        ("ImagingStudy",): 1,
        ("Patient", "Endpoint"): 0,  # the unrestricted types share one alternative
    }


def test_without_a_query_reader_granular_grants_allow_nothing() -> None:
    caller = Caller("client", access=Access(parse_scopes("user/Observation.rs?status=final user/Patient.rs")))
    assert not caller.may("s", "Observation") and caller.granted("s", "Observation") == ()
    assert caller.may("s", "Patient") and caller.granted("s", "Patient") is None
