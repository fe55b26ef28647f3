"""The service layer on both backends, without HTTP: units of work over explicit transactions, and the conditional
and patch semantics that REST requests and Bundle entries share."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import orjson
import pytest

from fhir_imaging.config import Settings
from fhir_imaging.fhir.outcome import NotFound, PreconditionFailed
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.search.execute import run_search
from fhir_imaging.search.query import SearchLimits, parse_search
from fhir_imaging.service import ANONYMOUS, Bases, FhirService
from fhir_imaging.service.bundle import run_bundle
from fhir_imaging.service.core import PatchDocument
from fhir_imaging.storage import open_store
from fhir_imaging.storage.base import Store, Transaction
from fhir_imaging.validation import Validator

T = TypeVar("T")
REGISTRY = load_registry()
VALIDATOR = Validator.load()
BASES = Bases.of("http://example.org/baseR4")
PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:test", "value": "p1"}],
    "gender": "male",
}


@pytest.fixture
def service(database: str) -> Iterator[FhirService]:
    settings = Settings(database=database, sqlite_synchronous="normal", pool_size=4)
    store = open_store(settings, REGISTRY)
    try:
        yield FhirService(settings, REGISTRY, store, VALIDATOR)
    finally:
        store.close()


def _patient(**changes: Any) -> dict[str, Any]:
    resource = copy.deepcopy(PATIENT)
    resource.update(changes)
    return resource


def test_a_transaction_reads_and_searches_its_own_writes_through_itself(service: FhirService) -> None:
    """No hidden "current connection": what a unit of work wrote is visible through its Transaction object (reads
    and searches), and to nobody else until it commits."""
    limits = SearchLimits.of(service.settings)
    search = parse_search(REGISTRY, ("Patient",), [("identifier", "urn:test|p1")], limits=limits)
    seen: dict[str, Any] = {}

    def work(tx: Transaction) -> None:
        tx.create("Patient", "inside", _patient())
        seen["read"] = tx.read("Patient", "inside")
        seen["search"] = [hit.id for hit in run_search(tx, search, BASES.matching).matches]
        seen["outside"] = service.store.reading(lambda reader: reader.read("Patient", "inside"))

    service.store.transact(work)
    assert seen["read"] is not None and seen["read"].version == 1
    assert seen["search"] == ["inside"]
    assert seen["outside"] is None  # another connection does not see the open transaction
    assert service.store.read("Patient", "inside") is not None


def test_conditional_create_update_and_delete_share_one_finder(service: FhirService) -> None:
    first = service.create(ANONYMOUS, _patient(), BASES, "identifier=urn:test|p1")
    again = service.create(ANONYMOUS, _patient(), BASES, "identifier=urn:test|p1")
    assert first.created and not again.created and again.matched and again.version.id == first.version.id
    updated = service.conditional_update(ANONYMOUS, [("identifier", "urn:test|p1")], _patient(gender="female"), BASES)
    assert updated.version.id == first.version.id and updated.version.version == 2
    deleted = service.conditional_delete(ANONYMOUS, "Patient", [("identifier", "urn:test|p1")], BASES)
    assert [version.id for version in deleted] == [first.version.id]


class _Interfering:
    """A store whose first write transaction is preceded by another writer's update of ``target`` (a race
    between a patch's read and its write, made to happen every time)."""

    def __init__(self, store: Store, target: tuple[str, str], resource: dict[str, Any]) -> None:
        self._store = store
        self._target = target
        self._resource = resource
        self.interfered = 0

    def transact(self, work: Callable[[Transaction], T]) -> T:
        if not self.interfered:
            self.interfered += 1
            self._store.update(*self._target, self._resource)
        return self._store.transact(work)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.mark.parametrize("by_criteria", [False, True])
def test_a_patch_that_loses_a_race_is_applied_again_to_the_newer_version(
    service: FhirService, by_criteria: bool
) -> None:
    """REST patch and conditional patch: the version read changed before the write, so the patch is applied again
    to the newer version (its change is kept, and so is the other writer's)."""
    created = service.store.create("Patient", "raced", _patient(id="raced"))
    other = _patient(id="raced", birthDate="1970-01-01")
    service.store = _Interfering(service.store, ("Patient", "raced"), other)  # type: ignore[assignment]
    patch = PatchDocument([{"op": "replace", "path": "/gender", "value": "female"}], json_patch=True)
    target: Any = [("identifier", "urn:test|p1")] if by_criteria else "raced"
    written = service.patch(ANONYMOUS, "Patient", target, patch, BASES)
    body = orjson.loads(written.version.body or b"{}")
    assert written.version.version == created.version.version + 2
    assert body["gender"] == "female" and body["birthDate"] == "1970-01-01"


def test_a_pinned_patch_that_loses_a_race_is_refused(service: FhirService) -> None:
    service.store.create("Patient", "pinned", _patient(id="pinned"))
    service.store = _Interfering(  # type: ignore[assignment]
        service.store, ("Patient", "pinned"), _patient(id="pinned", birthDate="1970-01-01")
    )
    patch = PatchDocument([{"op": "replace", "path": "/gender", "value": "female"}], json_patch=True)
    with pytest.raises(PreconditionFailed):
        service.patch(ANONYMOUS, "Patient", "pinned", patch, BASES, if_match=1)


def test_a_conditional_patch_with_no_match_is_not_found(service: FhirService) -> None:
    patch = PatchDocument([{"op": "replace", "path": "/gender", "value": "female"}], json_patch=True)
    with pytest.raises(NotFound):
        service.patch(ANONYMOUS, "Patient", [("identifier", "urn:test|none")], patch, BASES)


def test_a_bundle_runs_through_the_same_service(service: FhirService) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:0b4a3b55-6c3b-4a5e-9d1c-1a2b3c4d5e6f",
                "resource": _patient(),
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:test|p1"},
            },
            {
                "resource": {
                    "resourceType": "Parameters",
                    "parameter": [
                        {
                            "name": "operation",
                            "part": [
                                {"name": "type", "valueCode": "replace"},
                                {"name": "path", "valueString": "Patient.gender"},
                                {"name": "value", "valueCode": "other"},
                            ],
                        }
                    ],
                },
                "request": {"method": "PATCH", "url": "Patient?identifier=urn:test|p1"},
            },
        ],
    }
    existing = service.create(ANONYMOUS, _patient(), BASES)
    response = run_bundle(service, ANONYMOUS, bundle, "representation", BASES, strict=False)
    statuses = [entry["response"]["status"] for entry in response["entry"]]
    assert statuses == ["200 OK", "200 OK"]  # the conditional create matched; the conditional patch patched it
    assert service.read(ANONYMOUS, "Patient", existing.version.id, BASES).version == 2
