"""Differential tests: for random imaging corpora and random queries, the SQL search (through the store) returns
exactly what the in-Python oracle (search/match.py) returns, in the same order, across every page — both as the
store plans it by default and with tiny broad-filter thresholds, which turn filters into ``EXISTS`` (all, or only
those matching more than a few rows; search/execute.py).

One hypothesis test per parameter type, each run on SQLite and on PostgreSQL (FHIR_IMAGING_TEST_POSTGRES: without
it the PostgreSQL runs fail). Each example writes its resources with ids and a ``_tag`` of its own into one store
per backend, and every query carries that ``_tag``, so examples do not see each other.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.search.execute import WALK_ROWS, run_search
from fhir_imaging.search.match import Corpus
from fhir_imaging.search.match import search as oracle_search
from fhir_imaging.search.query import Alternative, AnyOf, Filter, parse_search
from fhir_imaging.storage.base import Store
from fhir_imaging.storage.postgres import PostgresStore
from fhir_imaging.storage.sqlite import SQLiteStore
from tests.conftest import POSTGRES_URL, fresh_postgres_database

REGISTRY = load_registry()
OURS = "http://testserver/baseR4"
BASES = ("", OURS)
TAG_SYSTEM = "urn:example"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
EXAMPLES = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
COUNTER = itertools.count()
# Probe thresholds (search/execute.py): the store's default (IN everywhere at these sizes), every filter with a
# match broad, and a mix (this example's few resources narrow, the filters matching across examples broad).
# (probe threshold, walk window) for run_search: the default; every filter broad, walks unbounded in this small data;
# a mix of IN and EXISTS; every filter broad with windows smaller than a page (always falls back to IN) and
# near one (some pages come from the window, some fall back).
SEARCH_MODES = ((None, WALK_ROWS), (1, WALK_ROWS), (8, WALK_ROWS), (1, 2), (1, 5))


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("differential") / "search.db"
        opened: Store = SQLiteStore(f"sqlite:///{path}", REGISTRY, synchronous="off")
        yield opened
        opened.close()
        return
    if not POSTGRES_URL:
        pytest.fail("FHIR_IMAGING_TEST_POSTGRES is not set: these tests run on PostgreSQL too (scripts/test sets it)")
    with fresh_postgres_database() as url:
        opened = PostgresStore(url, REGISTRY, pool_size=2)
        yield opened
        opened.close()


# -- corpora -------------------------------------------------------------------------------------------------------

YEARS = st.integers(2019, 2025)
ZONES = st.sampled_from(["", "Z", "+02:00", "-05:30"])


@st.composite
def date_text(draw: st.DrawFn, with_time: bool = True) -> str:
    year, month, day = draw(YEARS), draw(st.integers(1, 12)), draw(st.integers(1, 28))
    precision = draw(st.integers(0, 5 if with_time else 2))
    text = f"{year:04d}" + (f"-{month:02d}" if precision >= 1 else "") + (f"-{day:02d}" if precision >= 2 else "")
    if precision >= 3:
        text += f"T{draw(st.integers(0, 23)):02d}:{draw(st.sampled_from([0, 30, 59])):02d}"
        if precision >= 4:
            text += f":{draw(st.sampled_from([0, 15, 59])):02d}"
        if precision >= 5:
            text += "." + draw(st.sampled_from(["5", "25", "123"]))
        text += draw(ZONES)
    return text


def full_datetime(draw: st.DrawFn) -> str:
    """A FHIR dateTime (seconds, and a zone whenever there is a time, as FHIR requires of resources)."""
    text = draw(date_text())
    if "T" in text:
        if text.count(":") == 1 or (text.count(":") == 2 and text[-6] in "+-"):
            head, zone = (text[:-6], text[-6:]) if text[-6] in "+-" else (text.rstrip("Z"), "Z")
            text = head + ":00" + zone
        elif not (text.endswith("Z") or text[-6] in "+-"):
            text += "Z"
    return text


CODINGS = st.fixed_dictionaries(
    {"code": st.sampled_from(["CT", "MR", "US", "DX"])},
    optional={"system": st.sampled_from([DCM, "urn:other"]), "display": st.sampled_from(["Computed", "Magnetic"])},
)
IDENTIFIERS = st.fixed_dictionaries(
    {"value": st.sampled_from(["1", "12", "ACC1", "acc1"])},
    optional={
        "system": st.sampled_from(["urn:a", "urn:b"]),
        "type": st.just({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}),
    },
)
DESCRIPTIONS = st.sampled_from(["CT Chest", "ct chest with contrast", "MR Knee", "Thorax (CT)", "Ärztlicher Befund"])
FAMILIES = st.sampled_from(["Smith", "Smyth", "Müller", "muller", "Lee", "Le", "O'Brien"])
PROFILES = st.sampled_from(["http://a.org/fhir/x", "http://a.org/fhir/x/y", "http://b.org/p"])


def reference(draw: st.DrawFn, ns: str, kind: str, count: int) -> dict[str, Any]:
    target = f"{kind}/{ns}{kind[0].lower()}{draw(st.integers(0, count))}"
    style = draw(st.sampled_from(["relative", "relative", "ours", "foreign"]))
    if style == "ours":
        return {"reference": f"{OURS}/{target}"}
    if style == "foreign":
        return {"reference": f"http://elsewhere.org/fhir/{target}"}
    return {"reference": target}


@st.composite
def corpus(draw: st.DrawFn) -> list[dict[str, Any]]:
    ns = f"e{next(COUNTER)}-"
    tag = {"system": TAG_SYSTEM, "code": ns}
    resources: list[dict[str, Any]] = []
    for index in range(draw(st.integers(1, 4))):
        patient: dict[str, Any] = {"resourceType": "Patient", "id": f"{ns}p{index}", "meta": {"tag": [tag]}}
        if draw(st.booleans()):
            patient["name"] = [{"family": draw(FAMILIES), "given": draw(st.lists(FAMILIES, max_size=2))}]
        patient["identifier"] = draw(st.lists(IDENTIFIERS, max_size=2))
        if draw(st.booleans()):
            patient["birthDate"] = draw(date_text(with_time=False))
        resources.append(patient)
    for index in range(draw(st.integers(1, 6))):
        study: dict[str, Any] = {
            "resourceType": "ImagingStudy",
            "id": f"{ns}s{index}",
            "meta": {"tag": [tag], **({"profile": [draw(PROFILES)]} if draw(st.booleans()) else {})},
            "status": draw(st.sampled_from(["available", "registered", "cancelled"])),
            "subject": reference(draw, ns, "Patient", 4),
            "modality": draw(st.lists(CODINGS, max_size=2)),
            "identifier": draw(st.lists(IDENTIFIERS, max_size=2)),
        }
        if draw(st.booleans()):
            study["started"] = full_datetime(draw)
        if draw(st.booleans()):
            study["description"] = draw(DESCRIPTIONS)
        series = []
        for number in range(draw(st.integers(0, 2))):
            item: dict[str, Any] = {"uid": f"1.2.{index}.{number}", "modality": draw(CODINGS)}
            item["instance"] = [{"uid": f"1.2.{index}.{number}.{i}", "sopClass": {"code": "1.2.840"}} for i in range(2)]
            series.append(item)
        if series:
            study["series"] = series
        resources.append(study)
    for index in range(draw(st.integers(1, 4))):
        observation: dict[str, Any] = {
            "resourceType": "Observation",
            "id": f"{ns}o{index}",
            "meta": {"tag": [tag]},
            "status": "final",
            "code": {"coding": [draw(CODINGS)]},
            "subject": reference(draw, ns, "Patient", 4),
        }
        unit = draw(st.sampled_from([("mg", "mg"), ("g", "g"), ("mg", None)]))
        value = draw(st.sampled_from([0.5, 1, 1.0, 5.4, 99.6, 100, 100.4, 250]))
        quantity = {
            "value": value,
            "unit": unit[0],
            **({"system": "http://unitsofmeasure.org", "code": unit[1]} if unit[1] else {}),
        }
        observation["valueQuantity"] = quantity
        if draw(st.booleans()):
            observation["effectiveDateTime"] = full_datetime(draw)
        elif draw(st.booleans()):
            period = {}
            if draw(st.booleans()):
                period["start"] = full_datetime(draw)
            if draw(st.booleans()):
                period["end"] = "2030-01-01"
            observation["effectivePeriod"] = period
        resources.append(observation)
    for index in range(draw(st.integers(1, 3))):
        prediction = (
            {"probabilityDecimal": draw(st.sampled_from([0.1, 0.15, 0.5, 0.55, 1, 2.5]))}
            if draw(st.booleans())
            else {"probabilityRange": {"low": {"value": 0.2}, "high": {"value": draw(st.sampled_from([0.4, 0.6]))}}}
        )
        resources.append(
            {
                "resourceType": "RiskAssessment",
                "id": f"{ns}r{index}",
                "meta": {"tag": [tag]},
                "status": "final",
                "subject": {"reference": f"Patient/{ns}p0"},
                "prediction": [prediction],
            }
        )
    return resources


# -- running both sides --------------------------------------------------------------------------------------------


def check(
    store: Store,
    resources: list[dict[str, Any]],
    resource_type: str,
    query: list[tuple[str, str]],
    extra: tuple[Filter, ...] = (),
) -> None:
    stored = []
    for resource in resources:
        result = store.update(resource["resourceType"], resource["id"], resource)
        stored.append(orjson.loads(result.version.body or b"{}"))
    ns = resources[0]["meta"]["tag"][0]["code"]
    items = [("_tag", f"{TAG_SYSTEM}|{ns}"), *query, ("_count", "3")]
    request = parse_search(REGISTRY, (resource_type,), items, extra=extra)
    expected = [resource["id"] for resource in oracle_search(Corpus(REGISTRY, stored, BASES), request)]
    for broad_rows, walk_rows in SEARCH_MODES:
        got: list[str] = []
        cursor = None
        for _ in range(50):
            page = run_search(
                store,
                parse_search(
                    REGISTRY, (resource_type,), items + ([("_cursor", cursor)] if cursor else []), extra=extra
                ),
                BASES,
                broad_rows,
                walk_rows,
            )
            got += [hit.id for hit in page.matches]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert got == expected, (query, broad_rows, walk_rows, got, expected)


PREFIX = st.sampled_from(["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"])


@st.composite
def token_query(draw: st.DrawFn) -> list[tuple[str, str]]:
    code = draw(st.sampled_from(["CT", "MR", "US", "XA"]))
    name = draw(st.sampled_from(["status", "modality", "identifier", "modality:not", "identifier:of-type",
                                 "modality:text", "modality:missing", "identifier:missing", "accession",
                                 "accession:missing"]))  # fmt: skip
    if name == "status":
        return [
            (
                name,
                ",".join(
                    draw(st.lists(st.sampled_from(["available", "registered", "cancelled"]), min_size=1, max_size=2))
                ),
            )
        ]
    if name.endswith(":missing"):
        return [(name, draw(st.sampled_from(["true", "false"])))]
    if name == "modality:text":
        return [(name, draw(st.sampled_from(["comp", "MAGNETIC", "x"])))]
    if name == "identifier:of-type":
        return [(name, f"http://terminology.hl7.org/CodeSystem/v2-0203|ACSN|{draw(st.sampled_from(['1', 'ACC1']))}")]
    if name in ("identifier", "accession"):
        value = draw(st.sampled_from(["1", "12", "ACC1"]))
        form = draw(st.sampled_from(["{v}", "urn:a|{v}", "|{v}", "urn:b|"]))
        return [(name, form.format(v=value))]
    form = draw(st.sampled_from(["{c}", f"{DCM}|{{c}}", "|{c}", "urn:other|", "{c},MR"]))
    return [(name, form.format(c=code))]


@given(corpus(), token_query())
@EXAMPLES
def test_token(store: Store, resources: list[dict[str, Any]], query: list[tuple[str, str]]) -> None:
    check(store, resources, "ImagingStudy", query)


@given(corpus(), st.sampled_from(["series", "instance", "series:not", "instance:missing", "series:missing"]),
       st.lists(st.sampled_from(["1.2.0.0", "1.2.1.1", "1.2.0.0.1", "1.2.2.1.0", "1.2.0", "1.2.9.9.9"]),
                min_size=1, max_size=3),
       st.sampled_from(["{v}", "|{v}", "urn:x|{v}"]), st.sampled_from(["", "series", "-instance"]))  # fmt: skip
@EXAMPLES
def test_uids(
    store: Store, resources: list[dict[str, Any]], name: str, values: list[str], form: str, sort: str
) -> None:
    """ImagingStudy's series and instance UIDs (kept as hashes, checked against the bodies): every form and sort."""
    value = ",".join(form.format(v=v) for v in values) if not name.endswith(":missing") else "true"
    check(store, resources, "ImagingStudy", [(name, value)] + ([("_sort", sort)] if sort else []))


@given(corpus(), st.sampled_from(["name", "family", "given", "name:exact", "family:contains", "name:contains"]),
       st.sampled_from(["sm", "Smith", "smith", "mu", "Müller", "le", "o'b", "y"]))  # fmt: skip
@EXAMPLES
def test_string(store: Store, resources: list[dict[str, Any]], name: str, value: str) -> None:
    check(store, resources, "Patient", [(name, value)])


@given(corpus(), st.sampled_from([("ImagingStudy", "started"), ("Patient", "birthdate"), ("Observation", "date")]),
       PREFIX, date_text(), st.booleans())  # fmt: skip
@EXAMPLES
def test_date(
    store: Store, resources: list[dict[str, Any]], target: tuple[str, str], prefix: str, value: str, sort: bool
) -> None:
    query = [(target[1], prefix + value)] + ([("_sort", f"-{target[1]}")] if sort else [])
    check(store, resources, target[0], query)


@given(corpus(),
       st.sampled_from([("ImagingStudy", "started"), ("Patient", "birthdate"), ("Observation", "date"),
                        ("ImagingStudy", "_lastUpdated")]),
       st.sampled_from(["ge", "gt", "sa"]), st.sampled_from(["le", "lt", "eb"]), date_text(), date_text(),
       st.booleans(), st.booleans())  # fmt: skip
@EXAMPLES
def test_date_range(
    store: Store,
    resources: list[dict[str, Any]],
    target: tuple[str, str],
    lower: str,
    upper: str,
    low: str,
    high: str,
    upper_first: bool,
    sort: bool,
) -> None:
    """A lower and an upper bound on one date parameter: planned as one range where the parameter has one value
    per resource (planner.py ``combine_ranges``), as two filters elsewhere; the same matches either way."""
    code = target[1]
    if code == "_lastUpdated":  # the stored resources were all written just now
        low, high = (low, "2100") if upper_first else ("2000", high)
    bounds = [(code, lower + low), (code, upper + high)]
    query = (bounds[::-1] if upper_first else bounds) + ([("_sort", f"-{code}")] if sort else [])
    check(store, resources, target[0], query)


@given(corpus(), st.sampled_from(["description", "description:contains", "description:exact"]),
       st.sampled_from(["ct", "CT Chest", "chest", "knee", "arzt", "(CT)", "with"]),
       st.sampled_from(["", "description", "-description", "accession", "-accession,_id"]))  # fmt: skip
@EXAMPLES
def test_study_description_and_accession_sort(
    store: Store, resources: list[dict[str, Any]], name: str, value: str, sort: str
) -> None:
    check(store, resources, "ImagingStudy", [(name, value)] + ([("_sort", sort)] if sort else []))


@given(corpus(), PREFIX, st.sampled_from(["0.5", "0.55", "1", "0.2", "1e0", "2.50", "0.3"]))
@EXAMPLES
def test_number(store: Store, resources: list[dict[str, Any]], prefix: str, value: str) -> None:
    check(store, resources, "RiskAssessment", [("probability", prefix + value), ("_sort", "probability")])


@given(corpus(), PREFIX, st.sampled_from(["100", "1", "5.4", "1e2", "250.0"]),
       st.sampled_from(["", "|http://unitsofmeasure.org|mg", "||mg", "||g", "|urn:x|mg"]))  # fmt: skip
@EXAMPLES
def test_quantity(store: Store, resources: list[dict[str, Any]], prefix: str, number: str, unit: str) -> None:
    check(store, resources, "Observation", [("value-quantity", prefix + number + unit), ("_sort", "-value-quantity")])


URIS = st.sampled_from(["http://a.org/fhir/x", "http://a.org/fhir", "http://a.org/fhir/x/y/z", "http://b.org/p"])


@given(corpus(), st.sampled_from(["_profile", "_profile:below", "_profile:above", "_profile:missing"]), URIS)
@EXAMPLES
def test_uri(store: Store, resources: list[dict[str, Any]], name: str, value: str) -> None:
    check(store, resources, "ImagingStudy", [(name, "true" if name.endswith("missing") else value)])


@st.composite
def reference_query(draw: st.DrawFn, ns_hint: str = "") -> tuple[str, list[tuple[str, str]]]:
    kind = draw(st.sampled_from(["plain", "chain", "has", "sort"]))
    number = draw(st.integers(0, 4))
    if kind == "plain":
        name = draw(st.sampled_from(["patient", "subject", "subject:Patient", "patient:missing"]))
        form = draw(st.sampled_from(["Patient/{ns}p{n}", "{ns}p{n}", f"{OURS}/Patient/{{ns}}p{{n}}",
                                     "http://elsewhere.org/fhir/Patient/{ns}p{n}"]))  # fmt: skip
        return "ImagingStudy", [(name, "true" if name.endswith("missing") else form.format(ns="{ns}", n=number))]
    if kind == "chain":
        name = draw(
            st.sampled_from(["patient.family", "subject:Patient.name", "patient.identifier", "patient.birthdate"])
        )
        value = {"patient.identifier": "urn:a|1", "patient.birthdate": "ge2022"}.get(
            name, draw(st.sampled_from(["sm", "mu"]))
        )
        return draw(st.sampled_from(["ImagingStudy", "Observation"])), [(name, value)]
    if kind == "has":
        name = draw(st.sampled_from(["_has:ImagingStudy:patient:modality", "_has:Observation:subject:code"]))
        return "Patient", [(name, draw(st.sampled_from(["CT", "MR"])))]
    return "ImagingStudy", [
        ("_sort", draw(st.sampled_from(["patient", "-subject,_id", "status,-_id", "-_lastUpdated"])))
    ]


@given(corpus(), reference_query())
@EXAMPLES
def test_reference_chain_has_and_sort(
    store: Store, resources: list[dict[str, Any]], target: tuple[str, list[tuple[str, str]]]
) -> None:
    ns = resources[0]["meta"]["tag"][0]["code"]
    resource_type, query = target
    check(store, resources, resource_type, [(name, value.replace("{ns}", ns)) for name, value in query])


@given(corpus(), st.lists(st.one_of(token_query(), reference_query()), min_size=1, max_size=3), token_query())
@EXAMPLES
def test_any_of(
    store: Store,
    resources: list[dict[str, Any]],
    alternatives: list[Any],
    query: list[tuple[str, str]],
) -> None:
    """``AnyOf`` (what granular scopes add to a search): an OR of filter groups, each group AND-ed."""
    ns = resources[0]["meta"]["tag"][0]["code"]
    branches = []
    for alternative in alternatives:
        resource_type, items = alternative if isinstance(alternative, tuple) else ("ImagingStudy", alternative)
        items = [(name, value.replace("{ns}", ns)) for name, value in items if name != "_sort"]
        filters = parse_search(REGISTRY, (resource_type,), items).filters
        branches.append(Alternative((resource_type,), filters))
    for resource_type in ("ImagingStudy", "Patient"):
        check(
            store, resources, resource_type, query if resource_type == "ImagingStudy" else [], (AnyOf(tuple(branches)),)
        )
