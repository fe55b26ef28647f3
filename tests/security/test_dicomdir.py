"""``import-dicom`` on hostile media (fhir_imaging/dicom/importer.py): a DICOMDIR whose Referenced File IDs point
out of the media folder (``..``, an absolute path, a symbolic link) must not make the importer read that file; the
record is reported as skipped with the reason.

Spec: DICOM PS3.10 §8.5 and PS3.3 F.3 (File IDs are relative to the File-set's root, the folder of the DICOMDIR).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from fhir_imaging.dicom.importer import ReadResult, read_paths
from fhir_imaging.dicom.mapping import MappingOptions

TINY_ALPHA = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "TINY_ALPHA"


def media_with_records(tmp_path: Path, *file_ids: list[str] | str) -> tuple[Path, str, list[str]]:
    """A copy of TINY_ALPHA in ``tmp_path/media`` whose first image records point at ``file_ids``; the
    SOPInstanceUID of CT_small.dcm, placed out of the media folder at ``tmp_path/outside/x.dcm``; and the
    Referenced File IDs those records had."""
    media = tmp_path / "media"
    shutil.copytree(TINY_ALPHA, media)
    outside = tmp_path / "outside"
    outside.mkdir()
    ct = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    ct.save_as(outside / "x.dcm")
    dicomdir = pydicom.dcmread(media / "DICOMDIR")
    images = [r for r in dicomdir.DirectoryRecordSequence if r.DirectoryRecordType == "IMAGE"]
    replaced = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hostile media does not keep to the CS value representation
        for record, file_id in zip(images, file_ids, strict=False):
            replaced.append("/".join(record.ReferencedFileID))
            record.ReferencedFileID = file_id
        dicomdir.save_as(media / "DICOMDIR")
    return media, str(ct.SOPInstanceUID), replaced


def read(path: Path) -> ReadResult:
    return read_paths([path], MappingOptions())


@pytest.mark.parametrize("file_id", [["..", "outside", "x.dcm"], "..\\outside\\x.dcm", "../outside/x.dcm"])
def test_a_record_climbing_out_with_dotdot_is_refused(tmp_path: Path, file_id: list[str] | str) -> None:
    media, outside_uid, _ = media_with_records(tmp_path, file_id)
    result = read(media / "DICOMDIR")
    assert outside_uid not in {record.sop_uid for record in result.records}
    assert len(result.records) == 49  # the other records of the DICOMDIR are read
    reason = "refused: the DICOMDIR's ReferencedFileID leaves the media folder (..)"
    assert result.skipped == [(str(media / ".." / "outside" / "x.dcm"), reason)]


@pytest.mark.parametrize("link", ["folder", "file"])
def test_a_record_through_a_symbolic_link_out_of_the_media_folder_is_refused(tmp_path: Path, link: str) -> None:
    file_id = ["OUT", "x.dcm"] if link == "folder" else ["OUT"]
    media, outside_uid, replaced = media_with_records(tmp_path, file_id, ["IN"])
    target = tmp_path / "outside"
    (media / "OUT").symlink_to(target if link == "folder" else target / "x.dcm")
    (media / "IN").symlink_to(media / replaced[1])  # a link that stays inside is followed
    result = read(media / "DICOMDIR")
    assert outside_uid not in {record.sop_uid for record in result.records}
    assert len(result.records) == 49
    assert [reason for _, reason in result.skipped] == [
        "refused: listed in a DICOMDIR, it resolves outside the media folder (symbolic link)"
    ]
