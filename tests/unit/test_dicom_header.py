"""The fast header read (fhir_imaging/dicom/header.py) maps to exactly what a full read maps to.

Spec: DICOM PS3.5 §6.1 (character repertoires), §6.2 (value representations). Real files: every file pydicom ships
(test_files/, charset_files/: many character sets, implicit and big-endian syntaxes, sequences); tricky values are
written here.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from fhir_imaging.dicom import header, reading
from fhir_imaging.dicom.header import PREFIX_BYTES, READ_FIELDS, Header, read_file_header
from fhir_imaging.dicom.importer import Skip, read_file, read_paths
from fhir_imaging.dicom.keys import MAPPED_FIELDS
from fhir_imaging.dicom.mapping import InstanceRecord, MappingError, MappingOptions, from_dicom_dataset

PYDICOM_DATA = Path(pydicom.__file__).parent / "data"
PYDICOM_FILES = sorted(
    path
    for folder in ("test_files", "charset_files")
    for path in (PYDICOM_DATA / folder).rglob("*")
    if path.is_file() and path.suffix not in (".py", ".pyc", ".txt", ".json", ".gz", ".bz2", ".zip")
)
OPTIONS = MappingOptions(patient_id_system="urn:example:pid")


def full_read(path: Path | str) -> InstanceRecord | str:
    """The mapping of the whole header, read and converted by pydicom: what import-dicom did before."""
    try:
        return from_dicom_dataset(pydicom.dcmread(path, stop_before_pixels=True), OPTIONS)
    except MappingError as exc:
        return str(exc)


def fast_read(path: Path | str) -> InstanceRecord | str:
    try:
        with open(path, "rb") as fp:
            return from_dicom_dataset(read_file_header(fp), OPTIONS)
    except MappingError as exc:
        return str(exc)


def test_every_file_pydicom_ships_maps_the_same_read_fast_or_whole() -> None:
    compared = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in PYDICOM_FILES:
            try:
                expected = full_read(path)
            except Exception:  # not DICOM, or a header pydicom cannot read whole: nothing to compare
                continue
            assert fast_read(path) == expected, path.name
            compared += 1
    assert compared > 100


TRICKY: list[tuple[str, Any]] = [
    ("PatientName", "Doe^John^^Dr^ "),
    ("PatientName", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
    ("PatientName", "=Doe"),
    ("PatientName", "Doe^John="),
    ("PatientName", ["Doe^John", "Roe^Jane"]),
    ("PatientName", ""),
    ("PatientID", "  ID 7 "),
    ("PatientID", "ID\x007"),
    ("PatientID", "Müller"),
    ("PatientSex", "f"),
    ("PatientBirthDate", "1970.01.02"),
    ("StudyDescription", "A \\B "),
    ("StudyDescription", "\tTabbed\t"),
    ("InstanceNumber", " 5"),
    ("InstanceNumber", "+5"),
    ("SeriesNumber", "-3"),
    ("SeriesNumber", "5.0"),
    ("SeriesNumber", "1e2"),
    ("SeriesNumber", " "),
    ("SeriesNumber", "007"),
    ("ImageType", ["ORIGINAL", "PRIMARY", "AXIAL"]),
    ("ImageType", ["DERIVED ", " SECONDARY", ""]),
    ("ImageType", "ORIGINAL\\PRIMARY\x00"),
    ("Modality", ["CT", "PT"]),
    ("BodyPartExamined", "CHEST\\ABDOMEN "),
    ("Laterality", "L\\R"),
    ("ContentLabel", "LABEL "),
    ("ReasonForTheRequestedProcedure", "Pain \\ left"),
    ("TimezoneOffsetFromUTC", "+0100"),
    ("StudyTime", "103000.5 "),
    ("BodyPartExamined", "chest"),
    ("Laterality", "l"),
    ("OperatorsName", ["----", "Roe^Jane"]),
    ("NameOfPhysiciansReadingStudy", "Who^Reads"),
]


def _write(folder: Path, keyword: str, value: Any, syntax: str, charset: str | None) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CT"
    ds.StudyDate = ds.SeriesDate = "20240615"
    if charset:
        ds.SpecificCharacterSet = charset
    setattr(ds, keyword, value)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True, enforce_file_format=True)
    return path


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize("charset", [None, "ISO_IR 192"])
@pytest.mark.parametrize(("keyword", "value"), TRICKY)
def test_tricky_values_map_the_same_read_fast_or_whole(
    tmp_path: Path, keyword: str, value: Any, syntax: str, charset: str | None
) -> None:
    if charset is None and any(ord(char) > 127 for char in str(value)):
        charset = "ISO_IR 100" if all(ord(char) < 256 for char in str(value)) else "ISO_IR 192"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the odd values, writing and reading
        path = _write(tmp_path, keyword, value, syntax, charset)
        assert fast_read(path) == full_read(path)


class Recorder:
    """A dataset that records which attributes are asked for."""

    def __init__(self, dataset: Dataset, asked: set[str]) -> None:
        self.dataset, self.asked, self.file_meta = dataset, asked, getattr(dataset, "file_meta", None)

    def get(self, keyword: str, default: Any = None) -> Any:
        self.asked.add(keyword)
        return self.dataset.get(keyword, default)


def test_the_mapping_reads_only_the_attributes_the_header_read_keeps() -> None:
    asked: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in PYDICOM_FILES:
            try:
                dataset = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:
                continue
            with contextlib.suppress(MappingError):
                from_dicom_dataset(Recorder(dataset, asked), OPTIONS)
    assert asked <= set(MAPPED_FIELDS), asked - set(MAPPED_FIELDS)
    assert set(MAPPED_FIELDS) <= set(READ_FIELDS)
    assert "AccessionNumber" in asked and "ConceptNameCodeSequence" in asked


def test_reader_processes_read_the_same_as_this_process(tmp_path: Path) -> None:
    folder = tmp_path / "files"
    folder.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for keyword, value in TRICKY:
            _write(folder, keyword, value, ExplicitVRLittleEndian, "ISO_IR 192")
    (folder / "not-dicom.txt").write_text("hello")
    paths = [folder, PYDICOM_DATA / "test_files" / "dicomdirtests"]
    alone = read_paths(paths, OPTIONS, workers=1)
    advanced: list[int] = []
    parallel = read_paths(paths, OPTIONS, advanced.append, workers=2, read_here=False)
    assert parallel == alone and parallel.reader_cpu_seconds > 0
    assert sum(advanced) == alone.files and len(alone.records) == len(TRICKY) + 81


def pydicom_whole_header(fp: BinaryIO, prefix: int | None = None) -> Header:
    """The header as import-dicom read it before ``read_file_header``: every element read by pydicom."""
    return Header(pydicom.dcmread(fp, stop_before_pixels=True), fp)


def outcome(path: Path) -> Any:
    """``read_file`` as a comparable value: a record, a DICOMDIR's files, or the reason of a skip."""
    try:
        return read_file(path, OPTIONS)
    except Skip as skip:
        return str(skip)


def whole_outcome(path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as patch:
        patch.setattr(reading, "read_file_header", pydicom_whole_header)
        return outcome(path)


@pytest.mark.parametrize("prefix", [PREFIX_BYTES, 4096, 700])
def test_the_importer_reads_every_file_pydicom_ships_as_a_whole_read_does(
    monkeypatch: pytest.MonkeyPatch, prefix: int
) -> None:
    """Records, DICOMDIR listings and skip reasons alike, with headers inside the prefix and across it."""
    monkeypatch.setattr(header, "PREFIX_BYTES", prefix)
    accepted = 0
    for path in PYDICOM_FILES:
        expected = whole_outcome(path, monkeypatch)
        assert outcome(path) == expected, path.name
        accepted += not isinstance(expected, str)
    assert accepted > 100


@pytest.mark.parametrize("cut", [0.25, 0.5, 0.9])
def test_cut_copies_of_every_file_pydicom_ships_are_refused_or_read_as_a_whole_read_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: float
) -> None:
    for path in PYDICOM_FILES:
        data = path.read_bytes()
        copy = tmp_path / path.name
        copy.write_bytes(data[: int(len(data) * cut)])
        assert outcome(copy) == whole_outcome(copy, monkeypatch), path.name


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm"]
)
def test_usual_files_are_read_from_the_prefix_without_a_pydicom_dataset(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    def refuse(fp: Any) -> None:
        raise AssertionError("read by pydicom as a whole")

    monkeypatch.setattr(header, "read_header", refuse)
    path = next(PYDICOM_DATA.rglob(name))
    with open(path, "rb") as fp:
        read = read_file_header(fp)
    assert read._dataset is None and isinstance(read.stream, io.BytesIO)
    assert outcome(path) == whole_outcome(path, monkeypatch)


@pytest.mark.parametrize(("keyword", "tag"), [("StudyDescription", "08003010"), ("StationName", "08001010")])
def test_huge_lengths_end_the_read_at_the_end_of_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keyword: str, tag: str
) -> None:
    """An element stating 4 GB in a small file, one the mapping reads and one it skips: the read stops where the file
    ends, as pydicom's does (the prefix holds the whole file: nothing of 4 GB is asked for)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = _write(tmp_path, keyword, "x", ImplicitVRLittleEndian, None)
    data = bytearray(path.read_bytes())
    at = data.index(bytes.fromhex(tag))  # implicit VR: the tag, then a 4-byte length
    data[at + 4 : at + 8] = b"\xf0\xff\xff\xff"
    path.write_bytes(bytes(data))
    assert outcome(path) == whole_outcome(path, monkeypatch)


def _undefined_lengths(sequence: Any) -> None:
    """Write ``sequence`` and its items with undefined lengths (delimitation items), nested sequences too."""
    sequence.is_undefined_length = True
    for item in sequence.value:
        item.is_undefined_length_sequence_item = True
        for element in item:
            if element.VR == "SQ":
                _undefined_lengths(element)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_undefined_length_sequences_not_read_are_skipped_and_the_next_ones_read_in_the_file_charset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syntax: str
) -> None:
    """A sequence the mapping does not read (nested, undefined lengths, a defined-length item among them) is
    skipped; the wanted sequence after it still decodes with the file's Specific Character Set."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = _write(tmp_path, "StudyDescription", "Étude", syntax, "ISO_IR 192")
        ds = pydicom.dcmread(path)
        inner = Dataset()
        inner.ReferencedSOPInstanceUID = generate_uid()
        inner.ReferencedFrameNumber = "1"
        nested = Dataset()
        nested.ReferencedImageSequence = [inner, Dataset()]
        nested.ReferencedSOPInstanceUID = generate_uid()
        ds.ReferencedStudySequence = [nested, Dataset()]  # (0008,1110), before the procedure codes
        _undefined_lengths(ds["ReferencedStudySequence"])
        ds["ReferencedStudySequence"].value[1].is_undefined_length_sequence_item = False
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "X1", "99LOCAL", "Thorax über alles"
        ds.ProcedureCodeSequence = [code]  # (0008,1032)
        _undefined_lengths(ds["ProcedureCodeSequence"])
        ds.save_as(path, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True, enforce_file_format=True)
    skipped: list[int] = []
    skip = header._skip_sequence

    def counting(fp: BinaryIO, implicit: bool, little: bool) -> bool:
        skipped.append(fp.tell())
        return skip(fp, implicit, little)

    def refuse(fp: Any) -> None:
        raise AssertionError("read by pydicom as a whole")

    with monkeypatch.context() as patch:
        patch.setattr(header, "_skip_sequence", counting)
        patch.setattr(header, "read_header", refuse)
        record = outcome(path)
    assert len(skipped) == 2  # the outer sequence and the one nested in its first item
    assert record == whole_outcome(path, monkeypatch)
    assert record.study["procedureCode"][0]["text"] == "Thorax über alles"


def test_many_files_read_by_reader_processes_and_this_one_come_in_the_files_order(tmp_path: Path) -> None:
    """More chunks than the reader processes hold ahead: this process reads until they are up and beside them
    (how many each reads depends on the machine's load); the records, skips and counts are those of one process, in
    the same order, and so with the reader processes alone."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index in range(400):
            _write(tmp_path, "InstanceNumber", str(index), ExplicitVRLittleEndian, None)
    (tmp_path / "not-dicom.txt").write_text("hello")
    alone = read_paths([tmp_path], OPTIONS, workers=1)
    assert read_paths([tmp_path], OPTIONS, workers=2) == alone and len(alone.records) == 400
    readers = read_paths([tmp_path], OPTIONS, workers=2, read_here=False)
    assert readers == alone and readers.reader_cpu_seconds > 0 and alone.reader_cpu_seconds == 0
