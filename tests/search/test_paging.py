"""Paging while others write: following ``next`` to the end returns every match exactly once."""

from __future__ import annotations

import copy
import threading
from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient

from tests.conftest import SEED_STUDY


def _study(study_id: str, started: str) -> dict[str, object]:
    study = copy.deepcopy(SEED_STUDY)
    study.update(id=study_id, started=started)
    return study


@pytest.mark.parametrize("sort", ["", "&_sort=-started", "&_sort=status,started,-_id", "&_sort=_lastUpdated"])
def test_following_next_returns_every_match_once_while_others_write(client: TestClient, sort: str) -> None:
    for index in range(40):
        day = 1 + index % 28  # repeated sort keys: ties are broken by the resource's rid
        response = client.put(f"/ImagingStudy/old-{index}", json=_study(f"old-{index}", f"2024-03-{day:02d}T10:00:00Z"))
        assert response.status_code == 201
    stop = threading.Event()
    written: list[str] = []

    def writer() -> None:
        number = 0
        while not stop.is_set() and number < 200:
            study_id = f"new-{number}"
            client.put(f"/ImagingStudy/{study_id}", json=_study(study_id, f"2024-0{1 + number % 9}-15T00:00:00Z"))
            written.append(study_id)
            number += 1

    thread = threading.Thread(target=writer)
    thread.start()
    seen: list[str] = []
    url: str | None = f"/ImagingStudy?modality=CT&_count=3{sort}"
    try:
        while url:
            bundle = client.get(url).json()
            seen += [entry["resource"]["id"] for entry in bundle.get("entry", [])]
            links = {link["relation"]: link["url"] for link in bundle["link"]}
            url = None
            if "next" in links:
                parts = urlsplit(links["next"])
                url = parts.path.removeprefix("/baseR4") + "?" + parts.query
    finally:
        stop.set()
        thread.join()
    assert len(seen) == len(set(seen)), "a resource came twice"
    assert {f"old-{index}" for index in range(40)} <= set(seen), "a resource that matched all along was missed"
    assert set(seen) - {f"old-{index}" for index in range(40)} <= set(written)
