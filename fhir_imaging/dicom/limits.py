"""The bounds ``sync-dicomweb`` puts on a PACS, as one value (no I/O, cheap to import: the command line reads its
defaults). Used by ``pacs.py`` (time, size, redirects) and ``dicomweb.py`` (pages, results per query level).
See docs/dicom.md, *Limits*.
"""

from __future__ import annotations

from dataclasses import dataclass

MEBIBYTE = 1024 * 1024
MAX_TIMEOUT = 24 * 3600
# import-dicom's reader processes (--read-workers; importer.py)
READ_CHUNK = 32  # files per task of a reader process
MAX_DEFAULT_READ_WORKERS = 8
PARALLEL_FROM = 1000  # files: fewer are read in this process (they take less time than reader processes to start)


@dataclass(frozen=True, slots=True)
class PacsLimits:
    """Every bound ``sync-dicomweb`` puts on a PACS (docs/dicom.md, *Limits*); each is a command option."""

    timeout: float = 60.0  # --pacs-timeout: seconds for one whole answer
    max_answer_bytes: int = 32 * MEBIBYTE  # --pacs-max-answer-mb
    max_redirects: int = 5  # --pacs-max-redirects
    cross_origin_redirects: bool = False  # --allow-cross-origin-redirects
    max_pages: int = 1000  # --max-pages: pages of one query
    max_studies: int = 100_000  # --max-studies
    max_series_per_study: int = 10_000  # --max-series-per-study
    max_instances_per_study: int = 100_000  # --max-instances-per-study
    page_size: int = 1000  # the QIDO-RS ``limit`` asked for (a PACS may answer fewer)
    attempts: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.timeout <= MAX_TIMEOUT:
            raise ValueError(f"--pacs-timeout must be above 0 and at most {MAX_TIMEOUT} seconds, not {self.timeout}")
        counts = {
            "--pacs-max-answer-mb": self.max_answer_bytes,
            "--max-pages": self.max_pages,
            "--max-studies": self.max_studies,
            "--max-series-per-study": self.max_series_per_study,
            "--max-instances-per-study": self.max_instances_per_study,
            "page size": self.page_size,
            "attempts": self.attempts,
        }
        for name, value in counts.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        if self.max_redirects < 0:
            raise ValueError(f"--pacs-max-redirects must be 0 or more, not {self.max_redirects}")


@dataclass(frozen=True, slots=True)
class DimseLimits:
    """Every bound ``sync-dimse`` puts on a PACS it queries with C-FIND (docs/dicom.md, *sync-dimse*); each is a
    command option."""

    timeout: float = 60.0  # --pacs-timeout: connecting, negotiating, each message, one whole query
    max_pdu_bytes: int = 256 * 1024  # --max-pdu-size: the Maximum Length announced, and the largest PDU read
    max_studies: int = 100_000  # --max-studies
    max_series_per_study: int = 10_000  # --max-series-per-study
    max_instances_per_study: int = 100_000  # --max-instances-per-study

    def __post_init__(self) -> None:
        if not 0 < self.timeout <= MAX_TIMEOUT:
            raise ValueError(f"--pacs-timeout must be above 0 and at most {MAX_TIMEOUT} seconds, not {self.timeout}")
        check_pdu_size(self.max_pdu_bytes)
        counts = {
            "--max-studies": self.max_studies,
            "--max-series-per-study": self.max_series_per_study,
            "--max-instances-per-study": self.max_instances_per_study,
        }
        for name, value in counts.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")


MIN_PDU_BYTES = 4096  # PS3.8 D.1: a Maximum Length below this is legal but only slows every transfer
MAX_PDU_BYTES = 16 * MEBIBYTE


def check_pdu_size(value: int) -> None:
    if not MIN_PDU_BYTES <= value <= MAX_PDU_BYTES:
        raise ValueError(f"--max-pdu-size must be between {MIN_PDU_BYTES} and {MAX_PDU_BYTES} bytes, not {value}")
