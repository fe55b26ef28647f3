"""``sync-dicomweb`` against a hostile PACS (fhir_imaging/dicom/pacs.py, qido.py, dicomweb.py): a real HTTP server
on 127.0.0.1 that pages forever, trickles, redirects elsewhere, answers too much or answers nonsense. Each run must
end in bounded time with a clear message on stderr, exit code 2, and no traceback.

Spec: DICOM PS3.18 §10.6 (QIDO-RS paging: limit, offset), PS3.18 F.2 (DICOM JSON); docs/dicom.md, *Limits*.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from fhir_imaging.cli import main
from fhir_imaging.dicom.dicomweb import PacsError, QidoReader
from fhir_imaging.dicom.limits import PacsLimits

STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"


def study(uid: str) -> dict[str, Any]:
    return {STUDY_UID: {"vr": "UI", "Value": [uid]}, "00080060": {"vr": "CS", "Value": ["CT"]}}


@dataclass
class Answer:
    """What the fake PACS sends: status, headers, body; ``trickle`` seconds between single bytes of the body (or
    of the whole answer, status line included, when ``trickle_head``)."""

    status: int = 200
    body: bytes = b"[]"
    headers: dict[str, str] = field(default_factory=dict)
    trickle: float = 0.0
    trickle_head: bool = False
    declare_length: bool = True


class FakePacs:
    """A PACS on 127.0.0.1 whose answers come from ``respond(path, query)``; it counts the requests it gets."""

    def __init__(self, respond: Callable[[str, dict[str, list[str]]], Answer]) -> None:
        self.respond = respond
        self.requests: list[str] = []
        pacs = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                pacs.requests.append(self.path)
                parts = urlsplit(self.path)
                answer = pacs.respond(parts.path, parse_qs(parts.query))
                head = f"HTTP/1.1 {answer.status} X\r\n"
                headers = {"Content-Type": "application/dicom+json", **answer.headers}
                if answer.declare_length:
                    headers.setdefault("Content-Length", str(len(answer.body)))
                else:
                    headers["Connection"] = "close"  # the body ends when the connection does
                    self.close_connection = True
                head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
                data = head.encode() + answer.body if answer.trickle_head else answer.body
                try:
                    if not answer.trickle_head:
                        self.wfile.write(head.encode())
                    if answer.trickle:
                        for index in range(len(data)):
                            self.wfile.write(data[index : index + 1])
                            self.wfile.flush()
                            time.sleep(answer.trickle)
                    else:
                        self.wfile.write(data)
                except OSError:  # the client gave up: what these tests want
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dicom-web"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakePacs:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pacs_with() -> Iterator[Callable[[Callable[[str, dict[str, list[str]]], Answer]], FakePacs]]:
    started: list[FakePacs] = []

    def start(respond: Callable[[str, dict[str, list[str]]], Answer]) -> FakePacs:
        started.append(FakePacs(respond).__enter__())
        return started[-1]

    yield start
    for pacs in started:
        pacs.__exit__()


def sync(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, *options: str, within: float = 10.0
) -> tuple[int, str]:
    """``fhir-imaging sync-dicomweb URL`` as the command runs it: (exit code, stderr); it must end ``within``."""
    database = f"sqlite:///{tmp_path / 'sync.db'}"
    started = time.monotonic()
    code = main(["sync-dicomweb", url, "--database", database, "--no-progress", *options])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert elapsed < within, f"took {elapsed:.1f} s"
    assert "Traceback" not in err
    return code, err


def test_a_pacs_repeating_the_same_page_is_stopped_after_two_pages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pacs_with: Any
) -> None:
    page = orjson.dumps([study("1.2.3"), study("1.2.4")])
    pacs = pacs_with(lambda path, query: Answer(body=page))
    code, err = sync(tmp_path, capsys, pacs.url)
    assert code == 2
    assert f"the PACS at {pacs.url} answered the study query at offset 2 with studies it had already sent" in err
    assert len(pacs.requests) == 2


def test_a_pacs_paging_new_studies_forever_is_capped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pacs_with: Any
) -> None:
    counter = itertools.count()
    pacs = pacs_with(lambda path, query: Answer(body=orjson.dumps([study(f"1.2.{next(counter)}")])))
    code, err = sync(tmp_path, capsys, pacs.url, "--max-studies", "50")
    assert code == 2 and "answered the study query: more than 50 studies (--max-studies)" in err
    assert len(pacs.requests) == 51
    pacs.requests.clear()
    code, err = sync(tmp_path, capsys, pacs.url, "--max-pages", "7")
    assert code == 2 and "answered the study query with more than 7 pages (--max-pages)" in err
    assert len(pacs.requests) == 7


def test_paging_asks_for_limit_and_offset_and_stops_at_an_empty_page(pacs_with: Any) -> None:
    pages = {"0": [study("1.2.1"), study("1.2.2")], "2": [study("1.2.2"), study("1.2.3")], "4": []}
    pacs = pacs_with(lambda path, query: Answer(body=orjson.dumps(pages[query["offset"][0]])))
    found = QidoReader(pacs.url).studies()
    assert [item[STUDY_UID]["Value"][0] for item in found] == ["1.2.1", "1.2.2", "1.2.3"]  # 1.2.2 kept once
    assert all("limit=1000" in request for request in pacs.requests) and len(pacs.requests) == 3


def test_the_instances_of_one_study_are_capped_across_its_series(pacs_with: Any) -> None:
    def respond(path: str, query: dict[str, list[str]]) -> Answer:
        if query["offset"] != ["0"]:
            return Answer()
        if path.endswith("/series"):
            return Answer(body=orjson.dumps([{SERIES_UID: {"vr": "UI", "Value": [f"1.5.{n}"]}} for n in range(3)]))
        uids = [f"{path.split('/')[-2]}.{n}" for n in range(4)]
        return Answer(body=orjson.dumps([{SOP_UID: {"vr": "UI", "Value": [uid]}} for uid in uids]))

    pacs = pacs_with(respond)
    reader = QidoReader(pacs.url, PacsLimits(max_instances_per_study=10))
    with pytest.raises(PacsError, match=r"series 1\.5\.2: more than 10 instances in one study"):
        reader.study_datasets(study("1.2.3"))


@pytest.mark.parametrize("trickle_head", [False, True], ids=["body", "status-line"])
def test_a_trickling_pacs_is_cut_off_at_the_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pacs_with: Any, trickle_head: bool
) -> None:
    body = orjson.dumps([study("1.2.3")]) * 100
    pacs = pacs_with(lambda path, query: Answer(body=body, trickle=0.05, trickle_head=trickle_head))
    code, err = sync(tmp_path, capsys, pacs.url, "--pacs-timeout", "1", within=6)
    assert code == 2
    assert f"the PACS at {pacs.url} did not answer the study query within 1 s (--pacs-timeout)" in err
    assert len(pacs.requests) == 1  # an answer that ran out of time is not asked again


def test_an_answer_larger_than_the_limit_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pacs_with: Any
) -> None:
    big = b"[" + b" " * (2 * 1024 * 1024) + b"]"
    message = "answered the study query with more than 1,048,576 bytes (--pacs-max-answer-mb)"
    declared = pacs_with(lambda path, query: Answer(body=big))
    code, err = sync(tmp_path, capsys, declared.url, "--pacs-max-answer-mb", "1")
    assert code == 2 and message in err
    undeclared = pacs_with(lambda path, query: Answer(body=big, declare_length=False))
    code, err = sync(tmp_path, capsys, undeclared.url, "--pacs-max-answer-mb", "1")
    assert code == 2 and message in err


def test_a_redirect_to_another_origin_is_refused_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pacs_with: Any
) -> None:
    def answer(path: str, query: dict[str, list[str]]) -> Answer:
        return Answer(body=orjson.dumps([study("9.9.9")] if query.get("offset") == ["0"] else []))

    def redirect(path: str, query: dict[str, list[str]]) -> Answer:
        location = f"{elsewhere.url}/studies?offset={query['offset'][0]}"
        return Answer(status=307, body=b"", headers={"Location": location})

    elsewhere = pacs_with(answer)
    pacs = pacs_with(redirect)
    code, err = sync(tmp_path, capsys, pacs.url)
    assert code == 2
    port = urlsplit(elsewhere.url).port
    assert f"redirected the study query to another origin (http://127.0.0.1:{port}); redirects are followed only" in err
    assert "--allow-cross-origin-redirects" in err
    assert elsewhere.requests == []
    found = QidoReader(pacs.url, PacsLimits(cross_origin_redirects=True)).studies()
    assert [item[STUDY_UID]["Value"][0] for item in found] == ["9.9.9"]
    assert len(elsewhere.requests) == 2


def test_redirects_on_the_same_origin_are_followed_a_bounded_number_of_times(pacs_with: Any) -> None:
    loop = pacs_with(lambda path, query: Answer(status=301, body=b"", headers={"Location": "/dicom-web/studies"}))
    with pytest.raises(PacsError, match=r"redirected the study query more than 3 times \(--pacs-max-redirects\)"):
        QidoReader(loop.url, PacsLimits(max_redirects=3)).studies()
    assert len(loop.requests) == 4


def test_credentials_in_the_pacs_url_never_reach_a_message(pacs_with: Any) -> None:
    pacs = pacs_with(lambda path, query: Answer(status=500, body=b""))
    url = pacs.url.replace("http://", "http://admin:s3cret@")
    with pytest.raises(PacsError) as raised:
        QidoReader(url).studies()
    assert "s3cret" not in str(raised.value) and "admin" not in str(raised.value)
    assert f"the PACS at {pacs.url} answered HTTP 500 to the study query" in str(raised.value)


MALFORMED = {
    "not JSON": (b"<html>oops</html>", "answered the study query with something that is not JSON"),
    "truncated JSON": (b'[{"0020000D": {"vr": "UI", "Value": ["1.2', "with something that is not JSON"),
    "array of numbers": (b"[1, 2, 3]", "item 1 is a number, not a DICOM JSON dataset"),
    "an object": (b'{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}', "the answer is an object, not an array"),
    "a string": (b'"studies"', "the answer is a string, not an array"),
    "attribute not an object": (b'[{"0020000D": ["1.2.3"]}]', "attribute (0020,000D) of item 1 is an array"),
    "key not a tag": (b'[{"StudyInstanceUID": {"vr": "UI"}}]', "item 1 has a key that is not a DICOM tag"),
    "Value not an array": (b'[{"0020000D": {"vr": "UI", "Value": "1.2.3"}}]', "'Value' is a string, not an array"),
    "no vr": (b'[{"0020000D": {"Value": ["1.2.3"]}}]', "has no valid 'vr'"),
    "no study UID": (b'[{"00080060": {"vr": "CS", "Value": ["CT"]}}]', "item 1 has no valid StudyInstanceUID"),
    "UID with a path": (b'[{"0020000D": {"vr": "UI", "Value": ["../../x"]}}]', "has no valid StudyInstanceUID"),
    "UID a number": (b'[{"0020000D": {"vr": "UI", "Value": [123]}}]', "has no valid StudyInstanceUID"),
    "sequence of numbers": (
        b'[{"0020000D": {"vr": "UI", "Value": ["1.2"]}, "00081032": {"vr": "SQ", "Value": [1]}}]',
        "item 1 of attribute (0008,1032) of item 1 is a number",
    ),
    "deep sequences": (
        b'[{"0020000D": {"vr": "UI", "Value": ["1.2"]}, '
        + b'"00081032": {"vr": "SQ", "Value": [{' * 40
        + b"}]}" * 40
        + b"}]",
        "sequences nested deeper than 8 levels",
    ),
}


@pytest.mark.parametrize(("body", "message"), MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_answer_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pacs_with: Any, body: bytes, message: str
) -> None:
    pacs = pacs_with(lambda path, query: Answer(body=body) if query.get("offset", ["0"]) == ["0"] else Answer())
    code, err = sync(tmp_path, capsys, pacs.url)
    assert code == 2
    assert err.startswith(f"fhir-imaging sync-dicomweb: the PACS at {pacs.url} answered the study query")
    assert message in err


def test_values_of_the_wrong_kind_in_an_instance_are_a_clear_error(pacs_with: Any) -> None:
    def respond(path: str, query: dict[str, list[str]]) -> Answer:
        if query["offset"] != ["0"]:
            return Answer()
        if path.endswith("/series"):
            return Answer(body=orjson.dumps([{SERIES_UID: {"vr": "UI", "Value": ["1.5"]}}]))
        instance = {SOP_UID: {"vr": "UI", "Value": ["1.6"]}, "00100010": {"vr": "PN", "Value": [123]}}
        return Answer(body=orjson.dumps([instance]))

    pacs = pacs_with(respond)
    with pytest.raises(PacsError) as raised:
        QidoReader(pacs.url).study_datasets(study("1.2.3"))
    assert str(raised.value) == (
        f"the PACS at {pacs.url} answered the instance query of series 1.5 wrongly: attribute (0010,0010) cannot be "
        "read as DICOM JSON (ValueError)"
    )
    assert "123" not in str(raised.value)  # values are patient data: never quoted


def test_an_answer_of_the_wrong_count_kind_does_not_break_the_incremental_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pacs_with: Any
) -> None:
    odd = {**study("1.2.3"), "00201208": {"vr": "IS", "Value": [{"x": 1}]}}

    def respond(path: str, query: dict[str, list[str]]) -> Answer:
        if query["offset"] != ["0"]:
            return Answer()
        return Answer(body=orjson.dumps([odd] if path.endswith("/studies") else []))

    pacs = pacs_with(respond)
    code, err = sync(tmp_path, capsys, pacs.url)
    assert code == 2 and "attribute (0020,1208) of item 1: a value is an array or an object" in err
