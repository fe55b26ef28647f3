"""The study browser at /app/, driven in Debian's chromium by Playwright against a real server process.

Every list the page shows is checked against the FHIR API's answer to the very search the page sent (caught as it
left the browser), so the rows are the server's, in the server's order. One server and one browser serve the whole
module; each test has a fresh browser context (its own storage), in the Europe/Paris time zone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydicom.uid import UID

from tests.e2e.browser_data import MARKUP_NAME, VIEWER, WADO_ROOT, BrowserData, load_browser_data
from tests.e2e.server import running_server

playwright_api = pytest.importorskip("playwright.sync_api")
Browser = playwright_api.Browser
Page = playwright_api.Page

pytestmark = pytest.mark.e2e
CHROMIUM = Path("/usr/bin/chromium")
ZONE = "Europe/Paris"


@dataclass(frozen=True)
class Site:
    base: str  # the FHIR base
    app: str  # the page
    data: BrowserData


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("browser")
    with running_server(f"sqlite:///{workdir / 'browser.db'}", extra=("--viewer-url", VIEWER)) as server:
        data = load_browser_data(server.base, workdir)
        yield Site(server.base, server.base.removesuffix("/baseR4") + "/app/", data)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing (scripts/test installs Debian's chromium)")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        launched.close()


def _new_page(browser: Any, width: int = 1280, height: int = 800) -> tuple[Any, list[str]]:
    context = browser.new_context(viewport={"width": width, "height": height}, timezone_id=ZONE, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page, errors


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    page, errors = _new_page(browser)
    yield page
    page.context.close()
    assert errors == []


# -- helpers ---------------------------------------------------------------------------------------------------------


def is_page_search(url: str) -> bool:
    query = dict(parse_qsl(urlsplit(url).query))
    return "/baseR4/ImagingStudy?" in url and query.get("_include") == "ImagingStudy:patient"


def row_ids(page: Any, table: str = "table.worklist") -> list[str]:
    ids: list[str] = page.locator(f"{table} tbody tr.row").evaluate_all("rows => rows.map(r => r.dataset.id)")
    return ids


def search(page: Any, action: Callable[[], Any]) -> tuple[list[str], str]:
    """Do ``action``; the worklist rows it leads to and the URL of the search the page sent."""
    with page.expect_response(lambda response: is_page_search(response.url)) as answer:
        action()
    page.wait_for_selector(".results table, .results .empty, .results .error")
    return row_ids(page), answer.value.url


def api_ids(url: str) -> list[str]:
    bundle = httpx.get(url, timeout=30).json()
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def api_bundle(site: Site, path: str, params: list[tuple[str, str]]) -> dict[str, Any]:
    answer = httpx.get(f"{site.base}/{path}", params=params, timeout=30)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def params_of(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query)


def open_worklist(page: Any, site: Site, hash_: str = "#/") -> tuple[list[str], str]:
    return search(page, lambda: page.goto(site.app + hash_))


def column(page: Any, label: str) -> list[str]:
    cells: list[str] = page.locator(f'table.worklist tbody td[data-label="{label}"]').all_inner_texts()
    return cells


# -- the worklist ----------------------------------------------------------------------------------------------------


def test_first_page_is_the_api_answer_newest_first_with_the_total(page: Any, site: Site) -> None:
    ids, url = open_worklist(page, site)
    assert len(ids) == 25
    assert ids == api_ids(url)
    sent = params_of(url)
    assert ("_sort", "-started") in sent and ("_count", "25") in sent and ("_summary", "true") in sent
    total = api_bundle(site, "ImagingStudy", [("_summary", "count")])["total"]
    assert total > 100
    assert page.locator(".total").inner_text() == f"{total:,} studies"
    header = page.locator("table.worklist thead").inner_text()
    assert f"({ZONE})" in header
    assert page.locator("table.worklist tbody tr").first.locator("td").count() == 12  # with the viewer column
    assert ids[0] in site.data.recent_studies


def _fill(page: Any, fields: dict[str, str]) -> None:
    for name, value in fields.items():
        page.fill(f'form.filters [name="{name}"]', value)


@pytest.mark.parametrize(
    ("fields", "expected_param"),
    [
        ({"name": "SEN"}, ("patient.name:contains", "SEN")),
        ({"description": "knee"}, ("description:contains", "knee")),
        ({"from": "2024-03-01", "to": "2024-06-30"}, ("started", "ge2024-03-01T00:00:00+01:00")),
        ({"status": "cancelled"}, ("status", "cancelled")),
    ],
)
def test_each_text_filter_gives_the_api_answer(
    page: Any, site: Site, fields: dict[str, str], expected_param: tuple[str, str]
) -> None:
    open_worklist(page, site)
    for name, value in fields.items():
        if name == "status":
            page.select_option('form.filters [name="status"]', value)
        else:
            page.fill(f'form.filters [name="{name}"]', value)
    ids, url = search(page, lambda: page.click("form.filters button[type=submit]"))
    assert expected_param in params_of(url)
    assert ids, "the data set has matches for every filter"
    assert ids == api_ids(url)
    if "to" in fields:
        assert ("started", "lt2024-07-01T00:00:00+02:00") in params_of(url)  # local midnight, summer time
    if "name" in fields:
        assert all("sen" in name.lower() for name in column(page, "Patient"))
    if "description" in fields:
        assert all("knee" in text.lower() for text in column(page, "Description"))
    if "status" in fields:
        assert set(column(page, "Status")) == {"cancelled"}
    for name, value in fields.items():  # the state is in the address bar
        assert f"{name}={value}" in page.url


def test_mrn_and_accession_filters(page: Any, site: Site) -> None:
    patient = api_bundle(site, f"Patient/{site.data.featured_patient}", [])
    mrn = patient["identifier"][0]["value"]
    open_worklist(page, site)
    _fill(page, {"mrn": mrn})
    ids, url = search(page, lambda: page.press('form.filters [name="mrn"]', "Enter"))
    assert ("patient.identifier", mrn) in params_of(url)
    assert ids == api_ids(url) and site.data.featured_study in ids
    assert set(column(page, "MRN")) == {mrn}
    study = api_bundle(site, f"ImagingStudy/{site.data.featured_study}", [])
    accession = next(i["value"] for i in study["identifier"] if i.get("type"))
    ids, url = open_worklist(page, site, f"#/?accession={accession}")
    assert ("accession", accession) in params_of(url)
    assert ids == [site.data.featured_study] == api_ids(url)
    assert page.locator('form.filters [name="accession"]').input_value() == accession


def test_modality_multi_select(page: Any, site: Site) -> None:
    open_worklist(page, site)
    page.check('form.filters input[name="modality"][value="MR"]')
    page.check('form.filters input[name="modality"][value="NM"]')
    ids, url = search(page, lambda: page.click("form.filters button[type=submit]"))
    assert ("modality", "MR,NM") in params_of(url)
    assert ids and ids == api_ids(url)
    assert all({"MR", "NM"} & set(cell.split(", ")) for cell in column(page, "Modalities"))
    assert "modality=MR%2CNM" in page.url


def test_date_quick_picks_are_local_days(page: Any, site: Site) -> None:
    open_worklist(page, site)
    ids, url = search(page, lambda: page.click("text=7 days"))
    assert sorted(ids) == sorted(site.data.recent_studies) and ids == api_ids(url)
    ids, url = search(page, lambda: page.click("text=Today"))
    assert ids == [site.data.recent_studies[0]] == api_ids(url)
    started = [value for name, value in params_of(url) if name == "started"]
    assert all(re.fullmatch(r"(ge|lt)\d{4}-\d\d-\d\dT00:00:00\+0[12]:00", value) for value in started)


def test_sorting_is_done_by_the_server(page: Any, site: Site) -> None:
    open_worklist(page, site)
    ids, url = search(page, lambda: page.click("th button.sort:has-text('Accession')"))
    assert ("_sort", "accession") in params_of(url) and ids == api_ids(url)
    accessions = column(page, "Accession")
    assert accessions == sorted(accessions)
    ids, url = search(page, lambda: page.click("th button.sort:has-text('Accession')"))
    assert ("_sort", "-accession") in params_of(url) and ids == api_ids(url)
    assert column(page, "Accession") == sorted(column(page, "Accession"), reverse=True)
    ids, url = search(page, lambda: page.select_option('select[name="sort"]', "status"))
    assert ("_sort", "status") in params_of(url) and ids == api_ids(url)
    assert column(page, "Status") == sorted(column(page, "Status"))
    ids, url = search(page, lambda: page.select_option('select[name="sort"]', "started"))
    assert ids == api_ids(url)
    assert "sort=started" in page.url


def test_paging_follows_the_bundle_links(page: Any, site: Site) -> None:
    first, url = open_worklist(page, site, "#/?status=available")
    bundle = httpx.get(url).json()
    pages = [first]
    for _ in range(2):
        next_url = next(link["url"] for link in bundle["link"] if link["relation"] == "next")
        ids, sent = search(page, lambda: page.click("button[rel=next]"))
        assert ids == api_ids(next_url) == api_ids(sent)
        assert params_of(sent)[-1] == ("_cursor", dict(params_of(next_url))["_cursor"])
        assert not set(ids) & {i for seen in pages for i in seen}
        pages.append(ids)
        bundle = httpx.get(sent).json()
    ids, _ = search(page, lambda: page.click("button[rel=prev]"))
    assert ids == pages[1]
    ids, _ = search(page, lambda: page.go_back())  # the address bar holds the page: Back is the page before
    assert ids == pages[2]
    ids, _ = search(page, lambda: page.click("button:has-text('First')"))
    assert ids == pages[0]
    ids, url = search(page, lambda: page.select_option('select[name="count"]', "50"))
    assert len(ids) == 50 and ids == api_ids(url) and ("_count", "50") in params_of(url)


def test_an_empty_result_says_so_and_a_slow_search_shows_loading(page: Any, site: Site) -> None:
    open_worklist(page, site)

    def slow(route: Any) -> None:
        page.wait_for_timeout(600)
        route.continue_()

    page.route(re.compile(r".*/baseR4/ImagingStudy\?.*_include.*"), slow)
    page.fill('form.filters [name="description"]', "no such study anywhere")
    page.click("form.filters button[type=submit]")
    page.wait_for_selector(".results [role=status]:has-text('Searching')")
    page.wait_for_selector(".results .empty")
    assert page.locator(".results .empty").inner_text() == "No study matches these filters."
    page.unroute(re.compile(r".*/baseR4/ImagingStudy\?.*_include.*"))


def test_server_errors_show_the_operation_outcome_message(page: Any, site: Site) -> None:
    many = ",".join(["a"] * 250)
    expected = httpx.get(f"{site.base}/ImagingStudy", params={"description:contains": many}).json()
    open_worklist(page, site, f"#/?description={many}")
    assert page.locator(".results .error .message").inner_text() == expected["issue"][0]["diagnostics"]
    study = {"resourceType": "ImagingStudy", "id": "short-lived", "status": "registered", "subject": {"display": "x"}}
    httpx.put(f"{site.base}/ImagingStudy/short-lived", json=study).raise_for_status()
    httpx.delete(f"{site.base}/ImagingStudy/short-lived").raise_for_status()
    gone = httpx.get(f"{site.base}/ImagingStudy/short-lived")
    assert gone.status_code == 410
    page.goto(f"{site.app}#/study/short-lived")
    message = page.locator("main .error .message")
    assert message.inner_text() == gone.json()["issue"][0]["diagnostics"]
    assert "410" in page.locator("main .error").inner_text()


def test_markup_in_the_data_stays_text(page: Any, site: Site) -> None:
    open_worklist(page, site, "#/?mrn=MRN-MARKUP")
    assert column(page, "Patient") == [f"{MARKUP_NAME}, <b>bold</b>"]
    assert column(page, "Description") == ["<script>window.injected=2</script>"]
    page.goto(f"{site.app}#/study/markup-study")
    page.wait_for_selector("section.patient h2")
    assert page.evaluate("window.injected") is None
    assert page.locator("main img").count() == 0 and page.locator("main script").count() == 0


# -- keyboard and screen sizes ---------------------------------------------------------------------------------------


def test_keyboard_only_worklist(page: Any, site: Site) -> None:
    open_worklist(page, site)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Worklist"
    for _ in range(8):  # past the navigation into the filter form
        if page.evaluate("document.activeElement.name") == "name":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.name") == "name"
    page.keyboard.type("sen")
    ids, url = search(page, lambda: page.keyboard.press("Enter"))
    assert ids == api_ids(url)
    for _ in range(60):  # on to the first row
        if page.evaluate("document.activeElement.matches('tr.row')"):
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.dataset.id") == ids[0]
    page.keyboard.press("Enter")
    page.wait_for_selector("table.series, main .empty")
    assert page.url.endswith(f"#/study/{ids[0]}")


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)])
def test_fits_the_screen(browser: Any, site: Site, width: int, height: int) -> None:
    page, errors = _new_page(browser, width, height)
    try:
        open_worklist(page, site)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0
        first = page.locator("table.worklist tbody tr.row").first
        box = first.bounding_box()
        assert box is not None and box["width"] <= width
        if width < 700:  # rows become cards: each cell on a line of its own, with its label
            assert page.locator("table.worklist thead").is_hidden()
            assert first.locator('td[data-label="Accession"]').bounding_box()["x"] < 50
        page.goto(f"{site.app}#/study/{site.data.featured_study}")
        page.wait_for_selector("table.series")
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0
    finally:
        page.context.close()
    assert errors == []


# -- a study, a patient, the overview, the viewer --------------------------------------------------------------------


def test_study_page(page: Any, site: Site) -> None:
    open_worklist(page, site, f"#/?accession={_accession(site)}")
    page.click(f'tr.row[data-id="{site.data.featured_study}"] td[data-label="Description"]')
    page.wait_for_selector("table.series")
    study = api_bundle(site, f"ImagingStudy/{site.data.featured_study}", [])
    patient = api_bundle(site, f"Patient/{site.data.featured_patient}", [])
    assert page.locator("section.patient h2").inner_text() == f"{patient['name'][0]['family']}, " + " ".join(
        patient["name"][0]["given"]
    )
    series_rows = page.locator("table.series > tbody > tr[data-uid]")
    assert series_rows.count() == len(study["series"])
    assert series_rows.evaluate_all("rows => rows.map(r => r.dataset.uid)") == [s["uid"] for s in study["series"]]
    first = study["series"][0]
    cells = series_rows.first.locator("td").all_inner_texts()
    assert cells[0] == str(first["number"]) and cells[1] == first["modality"]["code"]
    assert cells[2] == first["description"] and cells[5] == str(first["numberOfInstances"])
    page.click('button[data-series="0"]')
    instances = page.locator("table.instance-list tbody tr")
    instances.first.wait_for()
    assert instances.count() == len(first["instance"])
    sop_uid = first["instance"][0]["sopClass"]["code"].removeprefix("urn:oid:")
    assert instances.first.locator("td").nth(1).inner_text() == UID(sop_uid).name
    assert instances.first.locator("td").nth(2).inner_text() == first["instance"][0]["uid"]
    related = page.locator('table.related[aria-label="Pointed at"]').inner_text()
    for reference in (study["basedOn"][0]["reference"], study["encounter"]["reference"], study["referrer"]["reference"],
                      "Endpoint/pacs-wado"):  # fmt: skip
        assert reference in related
    assert "DiagnosticReport/report-1" in page.locator('table.related[aria-label="Pointing here"]').inner_text()
    assert "No acute findings." in page.locator('table.related[aria-label="Pointing here"]').inner_text()
    assert page.locator('[data-copy="WADO-RS address"]').inner_text() == f"{WADO_ROOT}/studies/{site.data.featured_uid}"
    page.click("details.raw summary")
    assert json.loads(page.locator("pre.json[aria-label='Raw JSON']").inner_text()) == study
    history = page.locator("ol.history > li")
    history.first.wait_for()
    assert history.count() == 2
    diff = history.first.locator("pre.diff").inner_text()
    assert '~ description: "' in diff and '(reviewed)"' in diff
    assert '+ endpoint[0].reference: "Endpoint/pacs-wado"' in diff


def _accession(site: Site) -> str:
    study = api_bundle(site, f"ImagingStudy/{site.data.featured_study}", [])
    return str(next(i["value"] for i in study["identifier"] if i.get("type")))


def test_patient_page_lists_the_compartment_newest_first(page: Any, site: Site) -> None:
    open_worklist(page, site, f"#/?accession={_accession(site)}")
    with page.expect_response(lambda r: "/ImagingStudy?" in r.url and "/Patient/" in r.url) as answer:
        page.click('td[data-label="Patient"] a')
    page.wait_for_selector("table.patient-studies")
    url = answer.value.url
    assert f"/Patient/{site.data.featured_patient}/ImagingStudy?" in url
    assert ("_sort", "-started") in params_of(url)
    assert row_ids(page, "table.patient-studies") == api_ids(url)
    assert site.data.featured_study in row_ids(page, "table.patient-studies")


def test_overview_counts(page: Any, site: Site) -> None:
    page.goto(f"{site.app}#/overview?month=2025-12")
    page.wait_for_selector("table.status-counts")
    counts = dict(
        zip(
            page.locator("table.status-counts tbody tr td:first-child").all_inner_texts(),
            page.locator("table.status-counts tbody tr td.num").all_inner_texts(),
            strict=False,
        )
    )
    for status in ("available", "cancelled"):
        expected = api_bundle(site, "ImagingStudy", [("status", status), ("_summary", "count")])["total"]
        assert counts[status] == f"{expected:,}"
    bars = page.locator(".chart svg rect title").evaluate_all("titles => titles.map(t => t.textContent)")
    assert bars, "the chart has bars"
    month, code, number = re.fullmatch(r"(\d{4}-\d\d) (\w+): (\d+)", bars[0]).groups()  # type: ignore[union-attr]
    year, mon = map(int, month.split("-"))
    start = datetime(year, mon, 1, tzinfo=ZoneInfo(ZONE))
    end = datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=ZoneInfo(ZONE))
    expected = api_bundle(
        site,
        "ImagingStudy",
        [
            ("modality", code),
            ("started", f"ge{start.isoformat()}"),
            ("started", f"lt{end.isoformat()}"),
            ("_summary", "count"),
        ],
    )["total"]
    assert int(number) == expected


def fake_viewer(route: Any) -> None:
    """The viewer's address answers here: the test needs no network."""
    route.fulfill(body="viewer", content_type="text/plain")


def test_viewer_link_opens_the_study_in_the_viewer(page: Any, site: Site) -> None:
    page.context.route(
        "https://viewer.example/**", lambda route: route.fulfill(body="viewer", content_type="text/plain")
    )
    open_worklist(page, site, f"#/?accession={_accession(site)}")
    link = page.locator("a.viewer").first
    expected = VIEWER.replace("{study_uid}", site.data.featured_uid)
    assert link.get_attribute("href") == expected
    with page.context.expect_page() as opened:
        link.click()
    viewer = opened.value
    viewer.wait_for_load_state()
    assert viewer.url == expected
    assert viewer.inner_text("body") == "viewer"
    page.goto(f"{site.app}#/study/{site.data.featured_study}")
    assert page.locator("a.viewer").get_attribute("href") == expected


def test_the_benchmark_times_the_searches_the_page_sends(page: Any, site: Site) -> None:
    worklist = pytest.importorskip("bench.worklist")
    page.goto(site.app)
    page.wait_for_selector("table.worklist")
    states: list[dict[str, Any]] = [
        {},
        {"name": "sen", "mrn": "MRN1", "from": "2024-03-01", "to": "2024-10-31", "modality": ["MR", "NM"]},
        {"accession": "A1", "description": "knee", "status": "cancelled", "sort": "accession", "count": 50},
    ]
    script = """async (state) => {
        const query = await import('./js/worklist-query.js');
        const normal = query.readState(query.writeState(state));
        return [query.pageParams(normal), query.countParams(normal)];
    }"""
    for state in states:
        page_search, count_search = page.evaluate(script, state)
        assert [tuple(pair) for pair in page_search] == worklist.page_params(state, ZoneInfo(ZONE))
        assert [tuple(pair) for pair in count_search] == worklist.count_params(state, ZoneInfo(ZONE))
