"""The ImagingStudy resources of a benchmark corpus, by profile (``python -m bench run --study-profile``):

- ``realistic`` (default): ``bench/generate.py`` as it is, ~20 kB a study (several series, ~115 instances on average).
- ``small``: ~1.5 kB a study: the realistic study of the same index cut to one series (the first of the visit's
  modality) and that series's first one or two instances, without the practitioner references (``referrer``,
  ``interpreter``) and ``procedureCode``. Identifiers, status, modality, started, subject, encounter, basedOn and
  description are the realistic study's, and the patients, practitioners, encounters and service requests are the
  same, so every workload (the searches too) makes sense on either corpus.

Apart from ``bench/generate.py`` so that the realistic corpus, and the caches keyed by that file's source, stay valid.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bench import generate

PROFILES = ("realistic", "small")
SMALL_INSTANCES = 2  # at most, of the one series kept


def study(profile: str, scale: int, seed: int, index: int) -> dict[str, Any]:
    """The ``index``-th ImagingStudy of the profile (``index >= scale``: a further study, as ``generate.study``)."""
    body = generate.study(scale, seed, index)
    if profile == "realistic":
        return body
    if profile != "small":
        raise ValueError(f"unknown study profile {profile!r} (known: {', '.join(PROFILES)})")
    return _small(body, generate.visit(scale, seed, index % scale).modality.code)


def _small(body: dict[str, Any], modality: str) -> dict[str, Any]:
    series = next(s for s in body["series"] if s["modality"]["code"] == modality)
    series["instance"] = series["instance"][:SMALL_INSTANCES]
    series["numberOfInstances"] = len(series["instance"])
    for key in ("referrer", "interpreter", "procedureCode"):
        del body[key]
    body["modality"] = [m for m in body["modality"] if m["code"] == modality]
    body["numberOfSeries"] = 1
    body["numberOfInstances"] = series["numberOfInstances"]
    body["series"] = [series]
    return body


def generate_corpus(scale: int, seed: int, profile: str) -> Iterator[dict[str, Any]]:
    """``generate.generate_corpus`` with the studies of the profile."""
    if profile not in PROFILES:
        raise ValueError(f"unknown study profile {profile!r} (known: {', '.join(PROFILES)})")
    if profile == "realistic":
        yield from generate.generate_corpus(scale, seed)
        return
    studies = 0  # generate_corpus yields the studies in index order
    for resource in generate.generate_corpus(scale, seed):
        if resource["resourceType"] == "ImagingStudy":
            yield _small(resource, generate.visit(scale, seed, studies).modality.code)
            studies += 1
        else:
            yield resource
