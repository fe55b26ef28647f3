"""The third-party data the tests read, shipped in the repository: ``tests/data/shared.tar.xz`` (origins and licences:
``tests/data/SOURCES.md``), unpacked once into a cache folder of the system's temporary directory, keyed by the
archive's hash. The tests need nothing outside the repository; a missing or broken archive fails them."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
from functools import cache
from pathlib import Path

ARCHIVE = Path(__file__).resolve().parent / "data" / "shared.tar.xz"
COMPLETE = ".complete"


@cache
def shared_dir() -> Path:
    """The unpacked folder: ``fhir-r4/`` (definitions, examples) and ``data/`` (synthea, invalid)."""
    digest = hashlib.sha256(ARCHIVE.read_bytes()).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / f"fhir-imaging-test-data-{digest}"
    if (target / COMPLETE).exists():
        return target
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}-", dir=target.parent))
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(staging, filter="data")
    (staging / COMPLETE).touch()
    try:
        staging.rename(target)
    except OSError:  # another process unpacked it first
        shutil.rmtree(staging, ignore_errors=True)
    if not (target / COMPLETE).exists():
        raise RuntimeError(f"could not unpack {ARCHIVE} into {target}")
    return target
