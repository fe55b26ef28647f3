"""Read the header of a DICOM file for the mapping, quickly: only the attributes the mapping uses, and their plain
values decoded without pydicom's conversion machinery. Used by ``importer`` (files) and ``listener`` (C-STORE).

Spec: DICOM PS3.5 §6.1 (character repertoires: the default repertoire is ASCII, and every Specific Character Set
keeps ASCII's bytes for ASCII's characters when no escape sequence is used) and §6.2 (value representations).

``read_header`` reads with ``stop_before_pixels`` and ``specific_tags`` (``keys.MAPPED_FIELDS``, plus what the
importer itself needs): the other elements' values are skipped, not parsed. ``Header`` is what the mapping is given
instead of the pydicom ``Dataset``: its ``get(keyword)`` answers a text value whose bytes are ASCII, hold no
backslash (the multi-value delimiter) and no ESC (a character set switch) with the bytes decoded as they are — the
same text ``mapping.text_of`` makes of pydicom's value, as a test checks on pydicom's test files — and leaves
everything else (sequences, numbers, other character sets, several values) to pydicom.
"""

from __future__ import annotations

from typing import Any, BinaryIO

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from fhir_imaging.dicom.keys import MAPPED_FIELDS

# The importer's own needs: decoding, the truncation check (Image Pixel module), DICOMDIR records.
READ_FIELDS = (*MAPPED_FIELDS, "SpecificCharacterSet", "Rows", "DirectoryRecordSequence")
# VRs whose pydicom value is the decoded text, right-stripped of spaces and NULs (several values split at ``\``).
# IS too: pydicom's IS keeps the text it was read from, and the mapping reads numbers from that text.
TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UT"})


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return tag


TAGS: dict[str, tuple[int, str]] = {keyword: (_tag(keyword), dictionary_VR(_tag(keyword))) for keyword in READ_FIELDS}
READ_TAGS = sorted({tag for tag, _ in TAGS.values()})


def read_header(fp: BinaryIO | str) -> Dataset:
    """The header of the Part 10 file ``fp`` (pydicom's exceptions as they come): the ``READ_FIELDS`` only, the
    file left at the Pixel Data element when there is one."""
    return pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=READ_TAGS)


class Header:
    """A read-only view of a file's header for ``mapping.from_dicom_dataset`` (see the module doc)."""

    __slots__ = ("_dataset", "file_meta")

    def __init__(self, dataset: Dataset) -> None:
        self._dataset = dataset
        self.file_meta = getattr(dataset, "file_meta", None)

    def get(self, keyword: str, default: Any = None) -> Any:
        known = TAGS.get(keyword)
        if known is None:
            return self._dataset.get(keyword, default)
        tag, vr = known
        element = self._dataset.get_item(tag)
        if element is None:
            return default
        if isinstance(element, RawDataElement):
            text = plain_text(element, vr)
            if text is not None:
                return text
        return self._dataset.get(keyword, default)


def plain_text(element: RawDataElement, dictionary_vr: str) -> str | None:
    """The value of a text element whose bytes are plain ASCII with one value, decoded; ``None`` for any other
    (pydicom converts those)."""
    vr = element.VR or dictionary_vr
    value = element.value
    if vr not in TEXT_VRS or not isinstance(value, bytes):
        return None
    if not value.isascii() or b"\\" in value or b"\x1b" in value:
        return None
    return value.decode("ascii")
