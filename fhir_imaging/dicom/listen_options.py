"""The settings and bounds of ``listen`` (docs/dicom.md, *listen*), apart from the listener itself, so that the
command line can show their defaults without importing pynetdicom."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ListenOptions:
    """Every setting and bound of ``listen`` (docs/dicom.md, *listen*); each is a command option."""

    aet: str = "FHIRIMAGING"
    host: str = "127.0.0.1"
    port: int = 11112
    allow_aets: tuple[str, ...] = ()  # --allow-aet: empty = any calling AE title
    store_dir: Path | None = None  # --store-dir: keep the files there; else they are dropped
    quiet_period: float = 30.0  # --quiet-period
    timeout: float = 60.0  # --dimse-timeout: negotiation, each message, idle association, one PDU
    max_pdu_bytes: int = 256 * 1024  # --max-pdu-size
    max_dataset_bytes: int = 1024 * 1024 * 1024  # --max-dataset-mb
    max_associations: int = 10  # --max-associations
    max_held: int = 100_000  # --max-held-instances
    retry_for: float = 600.0  # --retry-for: seconds a study is tried again while the FHIR server is down or busy

    def __post_init__(self) -> None:
        from fhir_imaging.dicom.limits import MAX_TIMEOUT, check_pdu_size

        if not 0 < self.timeout <= MAX_TIMEOUT:
            raise ValueError(f"--dimse-timeout must be above 0 and at most {MAX_TIMEOUT} seconds, not {self.timeout}")
        if not 0 <= self.quiet_period <= MAX_TIMEOUT:
            raise ValueError(f"--quiet-period must be 0 to {MAX_TIMEOUT} seconds, not {self.quiet_period}")
        if not 0 <= self.retry_for <= MAX_TIMEOUT:
            raise ValueError(f"--retry-for must be 0 to {MAX_TIMEOUT} seconds, not {self.retry_for}")
        if not 0 <= self.port < 65536:
            raise ValueError(f"--port must be 0 to 65535, not {self.port}")
        check_pdu_size(self.max_pdu_bytes)
        for name, value in (
            ("--max-dataset-mb", self.max_dataset_bytes),
            ("--max-associations", self.max_associations),
            ("--max-held-instances", self.max_held),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
