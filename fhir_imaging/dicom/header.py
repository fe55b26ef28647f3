"""Read the header of a DICOM file for the mapping, quickly: only the attributes the mapping uses, from the first
bytes of the file, with pydicom's own element reader and no pydicom ``Dataset`` in the common case. Used by
``reading`` (import-dicom's files) and ``listener`` (the files C-STORE leaves), both with ``read_file_header``.

Spec: DICOM PS3.10 §7.1 (preamble, ``DICM``, the File Meta Information in explicit VR little endian), PS3.5 §6.1
(character repertoires: the default repertoire is ASCII, and every Specific Character Set keeps ASCII's bytes for
ASCII's characters when no escape sequence is used), §6.2 (value representations), §7.1 (data element encoding).

``read_file_header(fp)`` reads the first ``PREFIX_BYTES`` of the file into memory and runs pydicom's
``data_element_generator`` over them twice: the File Meta group, then the dataset with ``specific_tags``
(``READ_TAGS``: ``keys.MAPPED_FIELDS`` plus what the importer needs) up to the Pixel Data, the other elements'
values skipped, not parsed; an undefined-length sequence it does not keep is skipped item by item
(``_skip_sequence``) rather than parsed into datasets. The raw elements it keeps go into a ``Header``, not into a
``Dataset``. Whatever is not the plain case goes to ``pydicom.dcmread`` as before (``read_header``), on the file
itself: a header longer than the prefix, no ``DICM`` prefix, a File Meta group that is not explicit VR, a Command
group, a missing, deflated or private transfer syntax, a dataset whose first element contradicts the transfer
syntax, a skipped sequence that is not well formed, and any error (so a broken file is refused with pydicom's own
message). Tests check on every file pydicom ships, and on cut copies of each, that import-dicom makes of them what
it made of a whole read.

``Header`` is what the mapping is given: its ``get(keyword)`` answers a text value whose bytes are ASCII, hold no
backslash (the multi-value delimiter; a CS value may: ``JOINED_VRS``) and no ESC (a character set switch) with the
bytes decoded as they are — the same text ``mapping.text_of`` makes of pydicom's value, as a test checks on pydicom's
test files — and leaves
everything else (sequences, numbers, other character sets, several values) to a pydicom ``Dataset`` built from the
kept elements only when such a value is asked for, as pydicom's ``read_dataset`` builds it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from functools import lru_cache
from struct import Struct
from typing import Any, BinaryIO

import pydicom
from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator, read_preamble
from pydicom.tag import BaseTag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    PrivateTransferSyntaxes,
)
from pydicom.valuerep import VR
from pydicom.values import convert_string

from fhir_imaging.dicom.keys import MAPPED_FIELDS

# The importer's own needs: decoding, the truncation check (Image Pixel module), DICOMDIR records.
READ_FIELDS = (*MAPPED_FIELDS, "SpecificCharacterSet", "Rows", "DirectoryRecordSequence")
# VRs whose pydicom value is the decoded text, right-stripped of spaces and NULs (several values split at ``\``).
# IS too: pydicom's IS keeps the text it was read from, and the mapping reads numbers from that text.
TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UT"})
# VRs whose several values the mapping only ever reads as one text (``mapping.text_of`` joins them with ``\``):
# pydicom splits a CS value at ``\`` after stripping trailing spaces and NULs and changes nothing else, so the raw
# text is what ``text_of`` makes of pydicom's values (ImageType, read on nearly every image, is the case that counts).
JOINED_VRS = frozenset({"CS"})
PREFIX_BYTES = 64 * 1024
"""Bytes read at once from the start of a file: the header of an image is usually a few kB. A header running past
them is read again from the file (by pydicom, as a whole)."""
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})  # Pixel Data, Double and Float Pixel Data
PIXEL_HEAD = 12  # bytes of the Pixel Data element's tag, VR and length (``importer.check_complete`` reads them)
VALID_VRS = frozenset(member.value for member in VR)
UID_CHARACTERS = frozenset("0123456789.")  # PS3.5 §9.1

Element = RawDataElement | DataElement


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return tag


TAGS: dict[str, tuple[int, str]] = {keyword: (_tag(keyword), dictionary_VR(_tag(keyword))) for keyword in READ_FIELDS}
READ_TAGS = sorted({tag for tag, _ in TAGS.values()})
READ_SET = frozenset(READ_TAGS)
UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM, ITEM_DELIMITER, SEQUENCE_DELIMITER = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


@lru_cache(maxsize=256)
def _known(keyword: str) -> tuple[int, str] | None:
    """The tag and dictionary VR of ``keyword``; ``None`` for a keyword the dictionary does not have."""
    tag = tag_for_keyword(keyword)
    return None if tag is None else (tag, dictionary_VR(tag))


def read_header(fp: BinaryIO | str) -> Dataset:
    """The header of the Part 10 file ``fp`` read by pydicom as a whole (its exceptions as they come): the
    ``READ_FIELDS`` only, the file left at the Pixel Data element when there is one."""
    return pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=READ_TAGS)


def read_file_header(fp: BinaryIO, prefix: int | None = None) -> Header:
    """The header of the Part 10 file ``fp`` (opened at its start), read from its first ``prefix`` bytes (default
    ``PREFIX_BYTES``) when it is the plain case, else by ``read_header`` (pydicom's exceptions as they come).
    ``Header.stream`` is left where the read stopped: at the Pixel Data element when there is one."""
    prefix = PREFIX_BYTES if prefix is None else prefix
    data = fp.read(prefix)
    whole = len(data) < prefix  # the prefix is the whole file
    buffer = io.BytesIO(data)
    try:
        header = _read_plain(buffer)
    except Exception:  # pydicom reads the file again and raises what it raises
        header = None
    if header is not None and (whole or buffer.tell() + PIXEL_HEAD <= len(data)):
        return header
    fp.seek(0)
    return Header(read_header(fp), fp)


def _not_group_2(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag >> 16 != 2


class _Stop:
    """``stop_when`` of pydicom's element reader: at the Pixel Data, and at an undefined-length sequence that is not
    ``wanted`` (``at_sequence`` then tells the reader to skip it with ``_skip_sequence``)."""

    __slots__ = ("at_sequence", "wanted")

    def __init__(self, wanted: frozenset[int]) -> None:
        self.wanted, self.at_sequence = wanted, False

    def __call__(self, tag: BaseTag, vr: str | None, length: int) -> bool:
        if length == UNDEFINED_LENGTH and tag not in self.wanted and _is_sequence(tag, vr):
            self.at_sequence = True
            return True
        return tag in PIXEL_TAGS


def _is_sequence(tag: int, vr: str | None) -> bool:
    """An SQ element, as pydicom's reader decides for an undefined length (the dictionary's VR in implicit VR;
    a private or UN element is left to pydicom)."""
    if vr is not None:
        return vr == "SQ"
    try:
        return bool(dictionary_VR(tag) == "SQ")
    except KeyError:
        return False


def _elements(fp: BinaryIO, implicit: bool, little: bool) -> dict[Any, Element] | None:
    """The ``READ_TAGS`` elements of the dataset at ``fp``, up to the Pixel Data, as pydicom's ``read_dataset``
    reads them with ``specific_tags``, except that an undefined-length sequence not read is skipped item by item
    (``_skip_sequence``) instead of being parsed into datasets; ``None`` when such a sequence is not well formed
    (pydicom reads the file then)."""
    elements: dict[Any, Element] = {}
    encoding: Any = default_encoding
    stop = _Stop(READ_SET)
    while True:
        stop.at_sequence = False
        for element in data_element_generator(fp, implicit, little, stop, None, encoding, READ_TAGS):
            elements[element.tag] = element
        if not stop.at_sequence:
            return elements
        if not _skip_sequence(fp, implicit, little):
            return None
        charset = elements.get(0x00080005)  # the reader decodes the sequences it reads with it
        if isinstance(charset, RawDataElement):
            encoding = convert_encodings(convert_string(charset.value or b"", little))


def _skip_sequence(fp: BinaryIO, implicit: bool, little: bool) -> bool:
    """Skip the undefined-length sequence whose element starts at ``fp`` (PS3.5 §7.5): items of a defined length
    are passed over, the elements of an undefined-length item by pydicom's element reader (without keeping them),
    nested sequences likewise. ``False`` (where it stopped) when what comes is not an item, an item delimitation
    or the sequence delimitation, or the file ends."""
    fp.read(8 if implicit else 12)  # the sequence's tag, VR and length, read already by pydicom's reader
    item_head = Struct(("<" if little else ">") + "HHL").unpack
    while True:
        head = fp.read(8)
        if len(head) < 8:
            return False
        group, number, length = item_head(head)
        tag = group << 16 | number
        if tag == SEQUENCE_DELIMITER:
            return True
        if tag != ITEM:
            return False
        if length != UNDEFINED_LENGTH:
            fp.seek(length, 1)
        elif not _skip_item(fp, implicit, little):
            return False


def _skip_item(fp: BinaryIO, implicit: bool, little: bool) -> bool:
    """Skip the elements of an undefined-length item up to its Item Delimitation Item; ``False`` when the item is
    not well formed or is written in implicit VR in an explicit VR dataset (pydicom guesses then)."""
    delimiter = Struct(("<" if little else ">") + "HH").pack(ITEM_DELIMITER >> 16, ITEM_DELIMITER & 0xFFFF)
    start = fp.tell()
    first = fp.read(6)
    fp.seek(start)
    if not implicit and first[:4] != delimiter and not _looks_explicit(first):
        return False
    stop = _Stop(frozenset())
    while True:
        stop.at_sequence = False
        for _ in data_element_generator(fp, implicit, little, stop, None, default_encoding, [ITEM_DELIMITER]):
            pass
        if stop.at_sequence:
            if not _skip_sequence(fp, implicit, little):
                return False
            continue
        fp.seek(-8, 1)  # the reader returns after the Item Delimitation Item (or at the end of the file)
        return fp.read(4) == delimiter and len(fp.read(4)) == 4


def _read_plain(fp: BinaryIO) -> Header | None:
    """The header as ``pydicom.dcmread`` reads it, for the plain case; ``None`` for any other (see the module doc)."""
    read_preamble(fp, False)
    start = fp.tell()
    if not _looks_explicit(fp.read(6)):  # File Meta written in implicit VR: pydicom guesses
        return None
    fp.seek(start)
    meta = {element.tag: element for element in data_element_generator(fp, False, True, _not_group_2)}
    if not meta or any(element.VR not in VALID_VRS for element in meta.values()):
        return None
    syntax = _transfer_syntax(meta.get(BaseTag(0x00020010)))
    if syntax is None:
        return None
    implicit, little = syntax
    start = fp.tell()
    first = fp.read(6)
    fp.seek(start)
    if len(first) < 6 or first[:2] == b"\x00\x00" or _looks_explicit(first) == implicit:
        return None  # the end of the file, a Command group (0000,eeee), or an encoding the syntax does not state
    elements = _elements(fp, implicit, little)
    if elements is None:
        return None
    return Header.of_elements(elements, (implicit, little), Header.of_elements(meta, (False, True), None, None), fp)


def _looks_explicit(head: bytes) -> bool:
    """Bytes 4 and 5 of an element are a VR's two capital letters (pydicom's own test for explicit VR)."""
    return len(head) >= 6 and 0x40 < head[4] < 0x5B and 0x40 < head[5] < 0x5B


def _transfer_syntax(element: Element | None) -> tuple[bool, bool] | None:
    """(implicit VR, little endian) of the Transfer Syntax UID (0002,0010) as pydicom's ``read_partial`` decides
    them; ``None`` when it is missing, deflated, private or not a plain UID (pydicom handles those)."""
    if not isinstance(element, RawDataElement) or not isinstance(element.value, bytes):
        return None
    text = plain_text(element, "UI")
    if text is None:
        return None
    uid = text.rstrip("\0 ")
    if (
        not uid
        or not UID_CHARACTERS.issuperset(uid)
        or uid in (DeflatedExplicitVRLittleEndian, *PrivateTransferSyntaxes)
    ):
        return None
    if uid == ImplicitVRLittleEndian:
        return True, True
    if uid == ExplicitVRBigEndian:
        return False, False
    return False, True  # Explicit VR Little Endian, and every encapsulated syntax (PS3.5 A.4)


class Header:
    """A read-only view of a file's header for ``mapping.from_dicom_dataset`` (see the module doc); for the
    importer also ``file_meta``, ``original_encoding`` (implicit VR, little endian), ``keyword in header`` and
    ``stream`` (where the read stopped)."""

    __slots__ = ("_dataset", "_elements", "file_meta", "original_encoding", "stream")

    def __init__(self, dataset: Dataset, stream: BinaryIO | None = None) -> None:
        """The header of ``dataset``, a pydicom read."""
        self._dataset: Dataset | None = dataset
        self._elements: Mapping[Any, Element] = {tag: dataset.get_item(tag) for tag in dataset.keys()}  # noqa: SIM118 (iterating converts)
        self.file_meta: Any = getattr(dataset, "file_meta", None)
        self.original_encoding: tuple[bool | None, bool | None] = getattr(dataset, "original_encoding", (None, None))
        self.stream = stream

    @classmethod
    def of_elements(
        cls, elements: Mapping[Any, Element], encoding: tuple[bool, bool], file_meta: Any, stream: BinaryIO | None
    ) -> Header:
        """The header of pydicom's raw ``elements``, read with ``encoding``."""
        header = cls.__new__(cls)
        header._dataset = None
        header._elements = elements
        header.file_meta = file_meta
        header.original_encoding = encoding
        header.stream = stream
        return header

    def get(self, keyword: str, default: Any = None) -> Any:
        known = TAGS.get(keyword) or _known(keyword)
        if known is None:
            return default
        tag, vr = known
        element = self._elements.get(tag)
        if element is None:
            return default
        if isinstance(element, RawDataElement):
            text = plain_text(element, vr)
            if text is not None:
                return text
        return self.dataset().get(keyword, default)

    def __contains__(self, keyword: str) -> bool:
        known = TAGS.get(keyword) or _known(keyword)
        return known is not None and known[0] in self._elements

    def dataset(self) -> Dataset:
        """A pydicom ``Dataset`` of the elements read, built as pydicom's ``read_dataset`` builds it."""
        if self._dataset is None:
            dataset = Dataset(dict(self._elements), parent_encoding=default_encoding)
            charset = self._elements.get(0x00080005)
            if charset is not None:
                value: Any = (
                    convert_raw_data_element(charset).value if isinstance(charset, RawDataElement) else charset.value
                )
                encoding: Any = convert_encodings(value)
            else:
                encoding = default_encoding
            implicit, little = self.original_encoding
            dataset.set_original_encoding(implicit, little, encoding)
            self._dataset = dataset
        return self._dataset


def plain_text(element: RawDataElement, dictionary_vr: str) -> str | None:
    """The value of a text element whose bytes are plain ASCII with one value, decoded — or, for a CS element,
    several values as their text (see ``JOINED_VRS``); ``None`` for any other (pydicom converts those)."""
    vr = element.VR or dictionary_vr
    value = element.value
    if vr not in TEXT_VRS or not isinstance(value, bytes):
        return None
    if not value.isascii() or b"\x1b" in value or (b"\\" in value and vr not in JOINED_VRS):
        return None
    return value.decode("ascii")
