"""Reading files for import-dicom (fhir_imaging/dicom/importer.py): walking, DICOMDIR, grouping, skip reasons.

Spec: DICOM PS3.10 §7 (Part 10 files), PS3.3 F.3 (DICOMDIR). Real files: pydicom's CT_small.dcm, MR_small.dcm and
dicomdirtests/; bad input is written here (truncated, without preamble, not DICOM at all).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from fhir_imaging.dicom.importer import ReadResult, Skip, read_file, read_paths, walk, walk_resolved
from fhir_imaging.dicom.mapping import MappingOptions
from fhir_imaging.dicom.study import group_studies

DICOMDIR_TESTS = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests"
TINY_ALPHA = DICOMDIR_TESTS / "TINY_ALPHA"


def sample(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None
    return Path(path)


def read(*paths: Path | str) -> ReadResult:
    return read_paths(paths, MappingOptions())


def reasons(result: ReadResult) -> dict[str, str]:
    return {Path(path).name: reason for path, reason in result.skipped}


def test_a_folder_is_walked_in_name_order_and_each_file_comes_once() -> None:
    files = list(walk([DICOMDIR_TESTS, DICOMDIR_TESTS / "98892001", DICOMDIR_TESTS / "DICOMDIR"]))
    assert len(files) == len(set(files)) == 91
    assert files == sorted(files)


def test_a_folder_is_walked_as_rglob_finds_its_files(tmp_path: Path) -> None:
    """Each directory is resolved once, not each file: the same files, names and resolved paths as resolving every
    file rglob finds (links to files kept, links to folders and broken links not followed, a FIFO left out)."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f.dcm").write_bytes(b"x")
    (tmp_path / "z.dcm").write_bytes(b"y")
    (tmp_path / "file-link").symlink_to(tmp_path / "a" / "b" / "f.dcm")
    (tmp_path / "a" / "folder-link").symlink_to(DICOMDIR_TESTS)
    (tmp_path / "broken").symlink_to(tmp_path / "nowhere")
    os.mkfifo(tmp_path / "fifo")
    for folder in (tmp_path, DICOMDIR_TESTS, tmp_path / "a" / "folder-link"):
        expected: dict[Path, Path] = {}  # resolved → the first name met (each file comes once)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            expected.setdefault(path.resolve(), path)
        assert list(walk_resolved([folder])) == [(path, key) for key, path in expected.items()]


def test_the_dicomdir_test_set_reads_into_studies_series_and_instances() -> None:
    result = read(DICOMDIR_TESTS)
    assert len(result.records) == 81 and result.files == 91
    assert result.dicomdirs == 8  # seven variants of one DICOMDIR, and TINY_ALPHA's
    assert reasons(result) == {
        "README.txt": "not a DICOM file (no DICOM Part 10 preamble and 'DICM' prefix)",
        "README": "not a DICOM file (no DICOM Part 10 preamble and 'DICM' prefix)",
    }
    groups = group_studies(result.records)
    assert len(groups) == 7
    assert sum(len(group.study["series"]) for group in groups) == 14
    assert len({group.patient["identifier"][0]["value"] for group in groups}) == 3


def test_a_dicomdir_given_alone_brings_the_files_it_lists(tmp_path: Path) -> None:
    result = read(TINY_ALPHA / "DICOMDIR")
    assert result.dicomdirs == 1 and len(result.records) == 50 and result.skipped == []
    (group,) = group_studies(result.records)
    assert group.study["numberOfInstances"] == 50
    assert group.patient["name"] == [{"family": "Citizen", "given": ["Jan"]}]


def test_a_file_listed_in_a_dicomdir_but_missing_is_reported(tmp_path: Path) -> None:
    copy = tmp_path / "TINY_ALPHA"
    shutil.copytree(TINY_ALPHA, copy)
    (copy / "PT000000" / "ST000000" / "SE000000" / "IM000007").unlink()
    result = read(copy / "DICOMDIR")
    assert len(result.records) == 49
    assert reasons(result) == {"IM000007": "listed in a DICOMDIR but missing"}


def test_bad_files_are_skipped_with_their_reason_and_the_good_ones_imported(tmp_path: Path) -> None:
    ct = sample("CT_small.dcm").read_bytes()
    (tmp_path / "good.dcm").write_bytes(ct)
    shutil.copy(sample("MR_small.dcm"), tmp_path / "mr.dcm")
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image\n")
    (tmp_path / "headerless.dcm").write_bytes(ct[132:])  # the dataset without preamble and DICM prefix
    (tmp_path / "cut-in-meta.dcm").write_bytes(ct[:140])
    (tmp_path / "cut-in-header.dcm").write_bytes(ct[:4000])
    (tmp_path / "cut-in-pixels.dcm").write_bytes(ct[:20000])
    result = read(tmp_path, tmp_path / "missing.dcm")
    assert sorted(record.sop_uid for record in result.records) == [
        "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322",
        "1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457",
    ]
    not_dicom = "not a DICOM file (no DICOM Part 10 preamble and 'DICM' prefix)"
    assert reasons(result) == {
        "empty.dcm": not_dicom,
        "notes.txt": not_dicom,
        "headerless.dcm": not_dicom,
        "cut-in-meta.dcm": "missing StudyInstanceUID (0020,000D), SeriesInstanceUID (0020,000E), SOPInstanceUID "
        "(0008,0018), SOPClassUID (0008,0016), Modality (0008,0060)",
        "cut-in-header.dcm": "truncated: the file ends before the pixel data (7FE0,0010)",
        "cut-in-pixels.dcm": "truncated: the pixel data (7FE0,0010) has 32768 bytes, the file holds 13700",
        "missing.dcm": "no such file",
    }


def test_the_same_instance_in_two_files_counts_once(tmp_path: Path) -> None:
    shutil.copy(sample("CT_small.dcm"), tmp_path / "a.dcm")
    shutil.copy(sample("CT_small.dcm"), tmp_path / "b.dcm")
    result = read(tmp_path)
    assert len(result.records) == 1 and result.duplicates == 1


def test_read_file_returns_the_listed_files_of_a_dicomdir() -> None:
    listed = read_file(DICOMDIR_TESTS / "DICOMDIR", MappingOptions())
    assert isinstance(listed, list) and len(listed) == 31
    assert all(path.is_file() for path in listed)


def test_read_file_refuses_a_folder() -> None:
    with pytest.raises(Skip, match="no such file"):
        read_file(DICOMDIR_TESTS, MappingOptions())


def test_progress_is_reported_per_file(tmp_path: Path) -> None:
    shutil.copy(sample("CT_small.dcm"), tmp_path / "a.dcm")
    (tmp_path / "b.txt").write_text("x")
    steps: list[int] = []
    read_paths([tmp_path], MappingOptions(), steps.append)
    assert steps == [1, 1]
