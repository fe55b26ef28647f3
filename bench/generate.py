"""Realistic, deterministic imaging data for benchmarks and tests: Practitioner, Patient, Encounter, ServiceRequest
and ImagingStudy resources (FHIR R4 4.0.1).

Spec: https://hl7.org/fhir/R4/imagingstudy.html. Every value is derived from ``(seed, kind, index)`` alone, so any
resource of a corpus can be rebuilt on its own (``study_at(scale, seed, i)``) without generating the ones before it.

- ``scale`` is the number of ImagingStudy resources; a corpus also holds ``scale // 5`` patients (20,000 per 100,000
  studies), ``max(5, scale // 200)`` practitioners, and one Encounter and one ServiceRequest per study.
- Studies have 1–10 series of 1–300 instances, sized per modality (a chest X-ray is 1–2 images, a CT series up to
  300), with real DICOM modality codes, SOP class UIDs and SNOMED CT body sites; the study UID and the accession
  number are identifiers; ``started`` spans 2019–2025 with time-zone offsets; most studies are ``available``.
- Only elements that exist in R4 are used (``series.bodySite`` and ``series.laterality`` are Codings in R4).

As functions: ``generate_corpus(scale, seed)`` yields every resource in dependency order (practitioners, patients,
then encounter, service request and study per visit); ``patient(seed, i)``, ``practitioner(seed, i)``,
``encounter(scale, seed, i)``, ``service_request(scale, seed, i)`` and ``study(scale, seed, i)`` build one.
A study index ``i >= scale`` gives a new study (new UIDs) for the visit ``i % scale``: a second study of an existing
order, which is what the create workloads post.

As a command (NDJSON, one resource per line)::

    python -m bench.generate --scale 10000 --seed 1 --out corpus.ndjson
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

DCM = "http://dicom.nema.org/resources/ontology/DCM"
SNOMED = "http://snomed.info/sct"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
URI = "urn:ietf:rfc:3986"
ACCESSION_SYSTEM = "http://hospital.example.org/accession"
MRN_SYSTEM = "http://hospital.example.org/mrn"
ORDER_SYSTEM = "http://hospital.example.org/order"
PROCEDURE_SYSTEM = "http://hospital.example.org/procedure-code"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"

STATUS_WEIGHTS = (("available", 90), ("registered", 4), ("cancelled", 3), ("unknown", 2), ("entered-in-error", 1))
FIRST_DAY = datetime(2019, 1, 1, tzinfo=UTC)
DAYS = 7 * 365  # 2019-01-01 … 2025-12-30
OFFSETS = (0, 0, 60, 60, 120, -300, -240, -480, 330, 540)  # minutes east of UTC; 0 twice (half written as Z)


@dataclass(frozen=True, slots=True)
class Modality:
    code: str
    display: str
    weight: int  # share of studies
    series: tuple[int, int]  # series per study (inclusive)
    instances: tuple[int, int]  # instances per series (inclusive), drawn log-uniform
    sop_classes: tuple[tuple[str, str], ...]  # (UID, name); the first is the usual one
    sites: tuple[str, ...]  # keys of BODY_SITES


MODALITIES: tuple[Modality, ...] = (
    Modality(
        "DX",
        "Digital Radiography",
        25,
        (1, 3),
        (1, 2),
        (("1.2.840.10008.5.1.4.1.1.1.1", "Digital X-Ray Image Storage - For Presentation"),),
        ("chest", "hand", "knee", "ankle", "shoulder", "lumbar"),
    ),
    Modality(
        "CT",
        "Computed Tomography",
        20,
        (2, 10),
        (1, 300),
        (
            ("1.2.840.10008.5.1.4.1.1.2", "CT Image Storage"),
            ("1.2.840.10008.5.1.4.1.1.2.1", "Enhanced CT Image Storage"),
        ),
        ("chest", "head", "abdomen", "pelvis", "lumbar"),
    ),
    Modality(
        "CR",
        "Computed Radiography",
        15,
        (1, 3),
        (1, 2),
        (("1.2.840.10008.5.1.4.1.1.1", "Computed Radiography Image Storage"),),
        ("chest", "hand", "knee", "ankle", "shoulder"),
    ),
    Modality(
        "US",
        "Ultrasound",
        15,
        (1, 3),
        (1, 60),
        (
            ("1.2.840.10008.5.1.4.1.1.6.1", "Ultrasound Image Storage"),
            ("1.2.840.10008.5.1.4.1.1.3.1", "Ultrasound Multi-frame Image Storage"),
        ),
        ("abdomen", "liver", "heart", "breast", "pelvis"),
    ),
    Modality(
        "MR",
        "Magnetic Resonance",
        10,
        (3, 10),
        (15, 200),
        (
            ("1.2.840.10008.5.1.4.1.1.4", "MR Image Storage"),
            ("1.2.840.10008.5.1.4.1.1.4.1", "Enhanced MR Image Storage"),
        ),
        ("brain", "knee", "lumbar", "cervical", "shoulder", "liver"),
    ),
    Modality(
        "MG",
        "Mammography",
        7,
        (1, 4),
        (1, 2),
        (("1.2.840.10008.5.1.4.1.1.1.2", "Digital Mammography X-Ray Image Storage - For Presentation"),),
        ("breast",),
    ),
    Modality(
        "NM",
        "Nuclear Medicine",
        3,
        (1, 4),
        (1, 120),
        (("1.2.840.10008.5.1.4.1.1.20", "Nuclear Medicine Image Storage"),),
        ("heart", "body"),
    ),
    Modality(
        "XA",
        "X-Ray Angiography",
        3,
        (1, 8),
        (1, 80),
        (("1.2.840.10008.5.1.4.1.1.12.1", "X-Ray Angiographic Image Storage"),),
        ("heart",),
    ),
    Modality(
        "PT",
        "Positron emission tomography",
        2,
        (2, 6),
        (50, 300),
        (("1.2.840.10008.5.1.4.1.1.128", "Positron Emission Tomography Image Storage"),),
        ("body",),
    ),
)
BY_CODE = {m.code: m for m in MODALITIES}
SECONDARY_CAPTURE = ("1.2.840.10008.5.1.4.1.1.7", "Secondary Capture Image Storage")

# SNOMED CT body structures; True = the site has a side (laterality)
BODY_SITES: dict[str, tuple[str, str, bool]] = {
    "chest": ("51185008", "Thoracic structure", False),
    "head": ("69536005", "Head structure", False),
    "brain": ("12738006", "Brain structure", False),
    "abdomen": ("113345001", "Abdominal structure", False),
    "pelvis": ("12921003", "Pelvis structure", False),
    "liver": ("10200004", "Liver structure", False),
    "heart": ("80891009", "Heart structure", False),
    "lumbar": ("122496007", "Lumbar spine structure", False),
    "cervical": ("122494005", "Cervical spine structure", False),
    "knee": ("72696002", "Knee region structure", True),
    "hand": ("85562004", "Hand structure", True),
    "ankle": ("344001", "Ankle region structure", True),
    "shoulder": ("16982005", "Shoulder region structure", True),
    "breast": ("76752008", "Breast structure", True),
    "body": ("38266002", "Entire body as a whole", False),
}
LATERALITY = (("7771000", "Left"), ("24028007", "Right"), ("51440002", "Bilateral"))
SERIES_WORDS = (
    "axial",
    "coronal",
    "sagittal",
    "scout",
    "with contrast",
    "without contrast",
    "delayed",
    "AP",
    "lateral",
)
FAMILY = (
    "Smith",
    "Müller",
    "García",
    "Rossi",
    "Nguyen",
    "Kowalski",
    "Jansen",
    "Dubois",
    "Silva",
    "Kim",
    "Cohen",
    "Okafor",
    "Novak",
    "Larsen",
    "Tanaka",
    "Haddad",
    "Murphy",
    "Schneider",
    "Costa",
    "Ivanova",
)
GIVEN_F = ("Anna", "Maria", "Sofia", "Emma", "Chloé", "Aisha", "Yuki", "Lena", "Olga", "Grace", "Fatima", "Ingrid")
GIVEN_M = ("James", "Lukas", "Mateo", "Luca", "Minh", "Piotr", "Daan", "Hugo", "João", "Omar", "Kenji", "Sean")
PATIENT_CLASS = (("AMB", "ambulatory", 70), ("IMP", "inpatient encounter", 18), ("EMER", "emergency", 12))


# -- deterministic randomness and identifiers -------------------------------------------------------------------


def _rng(seed: int, kind: str, index: int) -> random.Random:
    return random.Random(f"{seed}:{kind}:{index}")


def resource_id(seed: int, kind: str, index: int) -> str:
    """The logical id of the ``index``-th resource of ``kind``: a UUID derived from the seed (ids look server-made)."""
    digest = hashlib.blake2b(f"{seed}:{kind}:{index}".encode(), digest_size=16).digest()
    return str(uuid.UUID(bytes=digest, version=4))


def _uid(rng: random.Random) -> str:
    """A DICOM UID under the UUID-derived root 2.25 (PS3.5 B.2), at most 64 characters."""
    return f"2.25.{rng.getrandbits(122)}"


def _weighted(rng: random.Random, table: tuple[tuple[Any, ...], ...]) -> tuple[Any, ...]:
    total = sum(row[-1] for row in table)
    pick = rng.uniform(0, total)
    for row in table:
        pick -= row[-1]
        if pick <= 0:
            return row
    return table[-1]


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    """An integer in [low, high], small values more likely (most series are short, a few are long)."""
    return min(high, int(math.exp(rng.uniform(math.log(low), math.log(high + 1)))))


def _instant(moment: datetime, offset_minutes: int, zulu: bool) -> str:
    if offset_minutes == 0 and zulu:
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    local = moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    return local.isoformat(timespec="seconds")


def _ref(kind: str, seed: int, index: int) -> dict[str, str]:
    return {"reference": f"{kind}/{resource_id(seed, kind, index)}"}


def counts(scale: int) -> dict[str, int]:
    """How many resources of each type a corpus of ``scale`` studies holds."""
    return {
        "Practitioner": max(5, scale // 200),
        "Patient": max(1, scale // 5),
        "Encounter": scale,
        "ServiceRequest": scale,
        "ImagingStudy": scale,
    }


# -- one visit: what the encounter, the order and the study of one visit share ------------------------------------


@dataclass(frozen=True, slots=True)
class Visit:
    index: int
    patient: int
    referrer: int
    radiologist: int
    modality: Modality
    site: str
    moment: datetime
    offset: int
    zulu: bool
    patient_class: tuple[str, str, int]


def visit(scale: int, seed: int, index: int) -> Visit:
    n = counts(scale)
    rng = _rng(seed, "visit", index)
    modality = _weighted(rng, tuple((m, m.weight) for m in MODALITIES))[0]
    # working hours mostly, every day of the week
    moment = FIRST_DAY + timedelta(days=rng.randrange(DAYS), hours=rng.choice((7, 8, 9, 10, 11, 13, 14, 15, 16, 20)))
    moment += timedelta(minutes=rng.randrange(60), seconds=rng.randrange(60))
    offset = rng.choice(OFFSETS)
    return Visit(
        index=index,
        patient=rng.randrange(n["Patient"]),
        referrer=rng.randrange(n["Practitioner"]),
        radiologist=rng.randrange(n["Practitioner"]),
        modality=modality,
        site=rng.choice(modality.sites),
        moment=moment,
        offset=offset,
        zulu=rng.random() < 0.5,
        patient_class=_weighted(rng, PATIENT_CLASS),
    )


def _procedure(v: Visit) -> dict[str, Any]:
    site = BODY_SITES[v.site][1].replace(" structure", "").replace(" region", "")
    text = f"{v.modality.code} {site}"
    return {
        "coding": [{"system": PROCEDURE_SYSTEM, "code": f"{v.modality.code}-{v.site.upper()}", "display": text}],
        "text": text,
    }


# -- resources ----------------------------------------------------------------------------------------------------


def practitioner(seed: int, index: int) -> dict[str, Any]:
    rng = _rng(seed, "Practitioner", index)
    female = rng.random() < 0.5
    return {
        "resourceType": "Practitioner",
        "id": resource_id(seed, "Practitioner", index),
        "identifier": [{"system": NPI_SYSTEM, "value": str(1_000_000_000 + rng.randrange(999_999_999))}],
        "active": True,
        "name": [
            {"family": rng.choice(FAMILY), "given": [rng.choice(GIVEN_F if female else GIVEN_M)], "prefix": ["Dr."]}
        ],
        "gender": "female" if female else "male",
    }


def patient(seed: int, index: int) -> dict[str, Any]:
    rng = _rng(seed, "Patient", index)
    female = rng.random() < 0.52
    birth = datetime(1930, 1, 1) + timedelta(days=rng.randrange(90 * 365))
    return {
        "resourceType": "Patient",
        "id": resource_id(seed, "Patient", index),
        "identifier": [
            {
                "type": {"coding": [{"system": V2_0203, "code": "MR", "display": "Medical record number"}]},
                "system": MRN_SYSTEM,
                "value": f"MRN{seed % 100:02d}{index:08d}",
            }
        ],
        "active": True,
        "name": [
            {"use": "official", "family": rng.choice(FAMILY), "given": [rng.choice(GIVEN_F if female else GIVEN_M)]}
        ],
        "gender": "female" if female else "male",
        "birthDate": birth.strftime("%Y-%m-%d"),
    }


def encounter(scale: int, seed: int, index: int) -> dict[str, Any]:
    v = visit(scale, seed, index)
    code, display, _ = v.patient_class
    end = v.moment + timedelta(minutes=45)
    return {
        "resourceType": "Encounter",
        "id": resource_id(seed, "Encounter", index),
        "status": "finished",
        "class": {"system": ACT_CODE, "code": code, "display": display},
        "subject": _ref("Patient", seed, v.patient),
        "participant": [{"individual": _ref("Practitioner", seed, v.referrer)}],
        "period": {
            "start": _instant(v.moment - timedelta(minutes=20), v.offset, v.zulu),
            "end": _instant(end, v.offset, v.zulu),
        },
    }


def service_request(scale: int, seed: int, index: int) -> dict[str, Any]:
    v = visit(scale, seed, index)
    return {
        "resourceType": "ServiceRequest",
        "id": resource_id(seed, "ServiceRequest", index),
        "identifier": [
            {
                "type": {"coding": [{"system": V2_0203, "code": "PLAC", "display": "Placer Identifier"}]},
                "system": ORDER_SYSTEM,
                "value": f"ORD{seed % 100:02d}{index:09d}",
            }
        ],
        "status": "completed",
        "intent": "order",
        "category": [{"coding": [{"system": SNOMED, "code": "363679005", "display": "Imaging"}]}],
        "code": _procedure(v),
        "subject": _ref("Patient", seed, v.patient),
        "encounter": _ref("Encounter", seed, index),
        "authoredOn": _instant(v.moment - timedelta(days=3), v.offset, v.zulu),
        "requester": _ref("Practitioner", seed, v.referrer),
    }


def _series(rng: random.Random, v: Visit, modality: Modality, number: int, started: datetime) -> dict[str, Any]:
    uid = _uid(rng)
    code, display, sided = BODY_SITES[v.site]
    count = _log_uniform(rng, *modality.instances)
    sop_uid = (modality.sop_classes[0] if rng.random() < 0.8 else rng.choice(modality.sop_classes))[0]
    series: dict[str, Any] = {
        "uid": uid,
        "number": number,
        "modality": {"system": DCM, "code": modality.code, "display": modality.display},
        "description": f"{modality.code} {display.replace(' structure', '').lower()} {rng.choice(SERIES_WORDS)}",
        "numberOfInstances": count,
        "bodySite": {"system": SNOMED, "code": code, "display": display},
    }
    if sided:
        lat_code, lat_display = LATERALITY[0] if rng.random() < 0.45 else rng.choice(LATERALITY)
        series["laterality"] = {"system": SNOMED, "code": lat_code, "display": lat_display}
    series["started"] = _instant(started, v.offset, v.zulu)
    series["instance"] = [
        {"uid": f"{uid}.{n}", "sopClass": {"system": URI, "code": f"urn:oid:{sop_uid}"}, "number": n}
        for n in range(1, count + 1)
    ]
    return series


def study(scale: int, seed: int, index: int) -> dict[str, Any]:
    """The ``index``-th ImagingStudy; ``index >= scale`` is a further study of visit ``index % scale``."""
    v = visit(scale, seed, index % scale)
    rng = _rng(seed, "ImagingStudy", index)
    study_uid = _uid(rng)
    status = _weighted(rng, STATUS_WEIGHTS)[0]
    started = v.moment + timedelta(minutes=rng.randrange(10))
    n_series = rng.randint(*v.modality.series)
    series = []
    for number in range(1, n_series + 1):
        modality = v.modality
        if v.modality.code == "PT" and number == 1:
            modality = BY_CODE["CT"]  # PET/CT: the attenuation-correction CT comes first
        series.append(_series(rng, v, modality, number, started + timedelta(minutes=3 * number)))
    if n_series < 10 and rng.random() < 0.05:  # a dose report or key image as secondary capture
        sc = _series(rng, v, v.modality, n_series + 1, started + timedelta(minutes=40))
        sc["numberOfInstances"] = 1
        sc["description"] = "Dose report"
        sc["instance"] = [
            {
                "uid": f"{sc['uid']}.1",
                "sopClass": {"system": URI, "code": f"urn:oid:{SECONDARY_CAPTURE[0]}"},
                "number": 1,
            }
        ]
        series.append(sc)
    codes = list(dict.fromkeys(s["modality"]["code"] for s in series))
    accession = f"A{seed % 100:02d}{index:09d}"
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "id": resource_id(seed, "ImagingStudy", index),
        "identifier": [
            {"use": "official", "system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"},
            {
                "type": {"coding": [{"system": V2_0203, "code": "ACSN", "display": "Accession ID"}]},
                "system": ACCESSION_SYSTEM,
                "value": accession,
            },
        ],
        "status": status,
        "modality": [{"system": DCM, "code": c, "display": BY_CODE[c].display} for c in codes],
        "subject": _ref("Patient", seed, v.patient),
        "encounter": _ref("Encounter", seed, v.index),
        "started": _instant(started, v.offset, v.zulu),
        "basedOn": [_ref("ServiceRequest", seed, v.index)],
        "referrer": _ref("Practitioner", seed, v.referrer),
        "interpreter": [_ref("Practitioner", seed, v.radiologist)],
        "numberOfSeries": len(series),
        "numberOfInstances": sum(s["numberOfInstances"] for s in series),
        "procedureCode": [_procedure(v)],
        "description": _procedure(v)["text"],
        "series": series,
    }
    return resource


def generate_corpus(scale: int, seed: int = 1) -> Iterator[dict[str, Any]]:
    """Every resource of the corpus, referenced resources before the ones referring to them."""
    n = counts(scale)
    for i in range(n["Practitioner"]):
        yield practitioner(seed, i)
    for i in range(n["Patient"]):
        yield patient(seed, i)
    for i in range(scale):
        yield encounter(scale, seed, i)
        yield service_request(scale, seed, i)
        yield study(scale, seed, i)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=1000, help="number of ImagingStudy resources (default 1000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--out", default="-", help="NDJSON file to write (default: standard output)")
    args = parser.parse_args(argv)
    out = sys.stdout.buffer if args.out == "-" else Path(args.out).open("wb")  # noqa: SIM115
    try:
        for resource in generate_corpus(args.scale, args.seed):
            out.write(orjson.dumps(resource) + b"\n")
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
