"""Reading one DICOM file for import-dicom: its header mapped to an ``InstanceRecord``, a DICOMDIR's listed files,
or the reason it is skipped. Kept apart from ``importer`` (the command: walking, grouping, writing) so that the reader
processes import only this, pydicom and the mapping (``importer`` preloads it in their fork server).

Spec: DICOM PS3.10 §7 (the Part 10 file: preamble, ``DICM``, file meta) and PS3.3 F.3 (the DICOMDIR's Directory
Record Sequence and its Referenced File IDs).
"""

from __future__ import annotations

import os
import struct
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pydicom.errors import InvalidDicomError

from fhir_imaging.dicom.header import read_file_header
from fhir_imaging.dicom.mapping import InstanceRecord, MappingError, MappingOptions, from_dicom_dataset

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
UNDEFINED_LENGTH = 0xFFFFFFFF


class Skip(Exception):
    """A file that is not imported, with the reason."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file a DICOMDIR lists that is not read, with the reason."""

    path: Path
    reason: str


def dicomdir_files(ds: Any, dicomdir: Path) -> list[Path | Skipped]:
    """The files a DICOMDIR's records reference (Referenced File ID (0004,1500), relative to its folder, the media
    folder). A reference that leaves the media folder (``..``, or a symbolic link resolving outside it) comes out as
    ``Skipped`` with the reason, and is never opened."""
    media = dicomdir.parent
    root = media.resolve()
    files: list[Path | Skipped] = []
    for record in ds.get("DirectoryRecordSequence", []):
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        parts = [piece for part in parts for piece in str(part).replace("/", "\\").split("\\") if piece]
        path = media.joinpath(*parts)
        files.append(_inside(path, parts, root))
    return files


def _inside(path: Path, parts: list[str], root: Path) -> Path | Skipped:
    """``path`` when it stays in the media folder ``root``, else ``Skipped`` with the reason."""
    if any(piece in (".", "..") for piece in parts):
        return Skipped(path, "refused: the DICOMDIR's ReferencedFileID leaves the media folder (..)")
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError, ValueError):  # a symbolic link loop, a NUL in a name
        return Skipped(path, "refused: the DICOMDIR's ReferencedFileID is not a usable file name")
    if not resolved.is_relative_to(root):
        return Skipped(path, "refused: listed in a DICOMDIR, it resolves outside the media folder (symbolic link)")
    return path


def check_complete(ds: Any, fp: BinaryIO, size: int) -> None:
    """``Skip`` a truncated file. pydicom stops silently where a file ends, so: a file that has the Image Pixel
    module (Rows) but ends before its pixel data (7FE0,0010), or whose pixel data has a defined length running past
    the end, is truncated. (A file cut earlier in its header cannot be told from a header-only file.)"""
    position = fp.tell()  # stop_before_pixels leaves the file at the Pixel Data tag, when there is one
    if position >= size:
        if "Rows" in ds:
            raise Skip("truncated: the file ends before the pixel data (7FE0,0010)")
        return
    implicit, little = getattr(ds, "original_encoding", (False, True))
    head = fp.read(12)
    order = "<" if little is not False else ">"
    if implicit:
        length = struct.unpack(order + "I", head[4:8])[0] if len(head) >= 8 else None
        start = position + 8
    else:
        length = struct.unpack(order + "I", head[8:12])[0] if len(head) >= 12 else None
        start = position + 12
    if length is None or (length != UNDEFINED_LENGTH and start + length > size):
        raise Skip(f"truncated: the pixel data (7FE0,0010) has {length} bytes, the file holds {max(size - start, 0)}")


def read_file(path: Path, options: MappingOptions) -> InstanceRecord | list[Path | Skipped]:
    """One file → its ``InstanceRecord``, or the files it lists when it is a DICOMDIR; ``Skip`` with the reason.
    Only the attributes the mapping uses are read (``header.py``)."""
    if not path.is_file():
        raise Skip("no such file")
    with warnings.catch_warnings(), open(path, "rb") as fp:
        warnings.simplefilter("ignore")  # pydicom warns about every odd value; what matters is checked below
        try:
            header = read_file_header(fp)
        except InvalidDicomError:
            raise Skip("not a DICOM file (no DICOM Part 10 preamble and 'DICM' prefix)") from None
        except (OSError, EOFError) as exc:
            raise Skip(f"cannot read: {exc}") from None
        except Exception as exc:  # pydicom raises many types on corrupt or truncated headers
            raise Skip(f"unreadable DICOM header ({type(exc).__name__}: {exc})") from None
        meta = header.file_meta
        if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_SOP_CLASS:
            return dicomdir_files(header, path)
        try:
            record = from_dicom_dataset(header, options)
        except MappingError as exc:
            raise Skip(str(exc)) from None
        check_complete(header, header.stream or fp, os.fstat(fp.fileno()).st_size)
        return record


FileRead = InstanceRecord | list[Path | Skipped] | Skipped


def read_files(paths: list[Path], options: MappingOptions) -> list[FileRead]:
    """``read_file`` of each path, a ``Skip`` as ``Skipped``: one task of a reader process."""
    reads: list[FileRead] = []
    for path in paths:
        try:
            reads.append(read_file(path, options))
        except Skip as skip:
            reads.append(Skipped(path, str(skip)))
    return reads


def read_task(paths: list[Path], options: MappingOptions) -> tuple[list[FileRead], int, float]:
    """``read_files`` in a reader process, with the process's id and the CPU time it has used so far."""
    return read_files(paths, options), os.getpid(), time.process_time()
