"""linear_regex: RE2 patterns that read the spec's regexes as ``re.ASCII`` does, and the guard that keeps ``re`` away
from what clients send."""

from __future__ import annotations

import re
import time
from importlib import resources
from pathlib import Path

import orjson
import pytest
import re2

from fhir_imaging import linear_regex
from fhir_imaging.search.types.base import InvalidValue
from fhir_imaging.search.types.date import parse_interval
from fhir_imaging.search.types.number import parse_number

PACKAGE = Path(__file__).resolve().parents[2] / "fhir_imaging"
SPEC_REGEXES = sorted(
    {
        spec["regex"]
        for spec in orjson.loads((resources.files("fhir_imaging.validation") / "data" / "types.json").read_bytes())[
            "primitives"
        ].values()
        if "regex" in spec
    }
)
VALUES = [
    *("", " ", "a", "a b", "a  b", " a", "a\tb", "a\nb", "a\rb", "a\x0bb", "a\x0cb", "a\x00b", "a\u00a0b", "\u2028"),
    *("é", "\ud800", "a\udcffb", "<div/>", "QUJD", "QUJD QUJD", "QUJ", "2020-02-30", "2021-07-17T22:53:33+09:00"),
    *("12:00:00", "urn:oid:1.2.3", "urn:oid:1.02", "urn:uuid:0f4d2b8e-8c3a-4c5e-9d2a-1b2c3d4e5f60", "1" * 64),
    *("1" * 65, "-0", "01", "1.5e10", "٣", "true", "http://x/y"),
]


@pytest.mark.parametrize("regex", SPEC_REGEXES)
def test_spec_regexes_read_as_re_ascii_reads_them(regex: str) -> None:
    backtracking = re.compile(regex, re.ASCII)
    linear = linear_regex.fullmatcher(linear_regex.ascii_whitespace(regex))
    for value in VALUES:
        assert linear(value) == (backtracking.fullmatch(value) is not None), (regex, value)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (r"\s+", r"[\t-\r ]+"),
        (r"\S*", r"[^\t-\r ]*"),
        (r"[ \r\n\t\S]+", r"[ \r\n\t\x00-\x08\x0e-\x1f\x21-\x{10ffff}]+"),
        (r"[^\s]+(\s[^\s]+)*", r"[^\t-\r ]+([\t-\r ][^\t-\r ]+)*"),
        (r"[]\s]", r"[]\t-\r ]"),
        (r"\\s\.", r"\\s\."),
    ],
)
def test_ascii_whitespace_spells_out_the_classes(pattern: str, expected: str) -> None:
    assert linear_regex.ascii_whitespace(pattern) == expected


@pytest.mark.parametrize("pattern", [r"(a)\1", r"a(?=b)", r"(?<!a)b", r"a++"])
def test_a_pattern_re2_cannot_run_fails_where_it_is_compiled(pattern: str) -> None:
    with pytest.raises(re2.error):
        linear_regex.compile(pattern)
    with pytest.raises(re2.error):
        linear_regex.fullmatcher(pattern)


def test_groups_and_lone_surrogates() -> None:
    pattern = linear_regex.compile(r"(?P<type>[A-Z][A-Za-z]+)/(?P<id>[^/]+)")
    match = pattern.fullmatch("Patient/é1")
    assert match is not None and (match["type"], match.group("id")) == ("Patient", "é1")
    surrogate = pattern.fullmatch("Patient/\ud800")  # read as U+FFFD, never a UnicodeEncodeError
    assert surrogate is not None and surrogate["id"] == "\ufffd"
    assert linear_regex.fullmatcher(r"[^/]+")("a\ud800")
    assert [m.group() for m in linear_regex.compile(r"\d+").finditer("a1b22é333")] == ["1", "22", "333"]


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        (rb'"reference":"((?:[^"\\]|\\.)*)"', b'{"reference":"Patient/1","a":{"reference":"x\\"y\xff\\\\"},"b":"c"}'),
        (rb'"(urn:(?:uuid|oid):(?:[^"\\]|\\.)*)"', b'["urn:uuid:1","urn:oid:1.2","urn:x:3","\\"urn:oid:9\\""]'),
        (rb"(a)(b)?", b"ab a xab"),
        (rb"x*", b"axxb"),
        (r"(a)(b)?", "ab a xéab"),
        (r"x*", "axxbé"),
        (r"é+", "éé\ud800é"),
    ],
)
def test_findall_lists_what_re_lists(pattern: str | bytes, text: str | bytes) -> None:
    assert linear_regex.compile(pattern).findall(text) == re.compile(pattern).findall(text)


def test_search_values_are_ascii_and_whole() -> None:
    for text in ("100\n", "١٠٠"):  # re's $ took a final newline, its \d Arabic-Indic digits
        with pytest.raises(InvalidValue):
            parse_number(text, "eq")
    with pytest.raises(InvalidValue):
        parse_interval("٢٠٢٤")
    assert parse_number("1e2", "eq").value == 100.0


def test_every_pattern_is_linear_on_a_megabyte() -> None:
    started = time.perf_counter()
    base64 = linear_regex.fullmatcher(linear_regex.ascii_whitespace(r"(\s*([0-9a-zA-Z\+/=]){4}\s*)+"))
    assert not base64("AAAA " * 200_000 + "!")
    assert time.perf_counter() - started < 0.5


# Modules that may still use ``re``, and why no client input reaches a backtracking pattern there.
RE_ALLOWED = {
    "storage/dialect.py": "rewrites the server's own SQL text, never a client's",
    "logs.py": "secret parameters: fixed words, '=', then one greedy run that nothing follows (no backtracking)",
    "dicom/dicomweb.py": r"fullmatch of \d+d and \d{8} on a PACS's dates: a digit run then one literal (linear)",
}


def test_no_other_module_uses_the_backtracking_engine() -> None:
    users = {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if re.search(r"^\s*(import re\b|from re import)", path.read_text(), re.MULTILINE)
    }
    assert users <= set(RE_ALLOWED), sorted(users - set(RE_ALLOWED))
