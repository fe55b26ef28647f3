"""The benchmark's study profiles (``bench/study_profiles.py``, ``python -m bench run --study-profile``).

``small`` studies are ~1.5 kB, valid, and keep what the workloads search on; ``realistic`` is the corpus, the
request files and the cache names of before profiles existed, so cached corpora and databases stay valid.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_imaging.validation import Validator

study_profiles = pytest.importorskip("bench.study_profiles")
generate = pytest.importorskip("bench.generate")
run = pytest.importorskip("bench.run")
workloads = pytest.importorskip("bench.workloads")
report = pytest.importorskip("bench.report")

SCALE, SEED = 200, 1
# sha256 of what the generator and the workloads of before profiles produced (seed 1, scale 200): the first 60
# resources of the corpus, and the request files of create-c16 and mixed. A change of bench/generate.py changes
# them, and also the cache keys (which hash that file): update them with it.
REALISTIC_CORPUS = "b28425d183f2d56e99b7d399afaa8e8af2bd079892e3ee545dbf5109b45c9969"
REALISTIC_REQUESTS = {
    "create-c16": "5ea41f10408f23875dc3ac051fb13e8b9f35ee1bb0596b6322bf4723326b50ab",
    "mixed": "fcc0c4fcef1b13be9626c32e5b32bc3fe69e5984532b4a33fb80e2f37f67e2b7",
}


def _studies(profile: str) -> list[dict[str, Any]]:
    corpus = study_profiles.generate_corpus(SCALE, SEED, profile)
    return [r for r in corpus if r["resourceType"] == "ImagingStudy"]


def _mean_bytes(resources: list[dict[str, Any]]) -> float:
    return sum(len(orjson.dumps(r)) for r in resources) / len(resources)


def test_small_studies_are_about_one_and_a_half_kilobytes() -> None:
    small = _studies("small")
    assert len(small) == SCALE
    assert 1200 <= _mean_bytes(small) <= 2000
    creates = [workloads.Corpus(SCALE, SEED, "small").new_study(k) for k in range(100)]  # what create-c16 posts
    assert 1200 <= _mean_bytes(creates) <= 2000
    assert _mean_bytes(_studies("realistic")) > 15_000


def test_small_studies_validate() -> None:
    validator = Validator.load()
    corpus = list(study_profiles.generate_corpus(SCALE, SEED, "small"))
    resources = corpus + [workloads.Corpus(SCALE, SEED, "small").new_study(k) for k in range(50)]
    errors = [
        (r.get("id"), i.expression, i.diagnostics)
        for r in resources
        for i in validator.validate(r)
        if i.severity in ("error", "fatal")
    ]
    assert errors == []


def test_small_studies_keep_what_the_workloads_search_on() -> None:
    for index, (small, full) in enumerate(zip(_studies("small"), _studies("realistic"), strict=True)):
        for key in ("id", "identifier", "status", "started", "subject", "encounter", "basedOn", "description"):
            assert small[key] == full[key]
        (series,) = small["series"]
        assert 1 <= len(series["instance"]) <= 2
        assert series["numberOfInstances"] == small["numberOfInstances"] == len(series["instance"])
        assert small["numberOfSeries"] == 1
        # the visit's modality, the one the patient + modality searches ask for (a PET/CT study keeps its PT series)
        visit_code = generate.visit(SCALE, SEED, index).modality.code
        assert [m["code"] for m in small["modality"]] == [series["modality"]["code"]] == [visit_code]
    assert study_profiles.study("small", SCALE, SEED, 7) == _studies("small")[7]


def test_the_realistic_profile_is_the_generator_unchanged(tmp_path: Path) -> None:
    digest = hashlib.sha256()
    for resource in itertools.islice(study_profiles.generate_corpus(SCALE, SEED, "realistic"), 60):
        digest.update(orjson.dumps(resource))
    assert digest.hexdigest() == REALISTIC_CORPUS
    assert study_profiles.study("realistic", SCALE, SEED, 3) == generate.study(SCALE, SEED, 3)
    for name, expected in REALISTIC_REQUESTS.items():
        path = workloads.BY_NAME[name].write_requests(workloads.Corpus(SCALE, SEED), tmp_path)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == expected, name


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown study profile"):
        study_profiles.study("tiny", SCALE, SEED, 0)
    with pytest.raises(ValueError, match="unknown study profile"):
        next(study_profiles.generate_corpus(SCALE, SEED, "tiny"))


def test_cache_names_carry_the_profile_only_for_small(tmp_path: Path) -> None:
    realistic = run.Options(scales=[5], cache_dir=tmp_path, log=lambda _: None)
    small = run.Options(scales=[5], cache_dir=tmp_path, study_profile="small", log=lambda _: None)
    key = run._hash_files([run.REPO / "bench" / "generate.py"])  # the key of before profiles
    assert run.corpus_file(realistic, 5).name == f"corpus-5-1-{key}.ndjson"
    small_file = run.corpus_file(small, 5)
    assert small_file.name.startswith("corpus-small-5-1-")
    assert small_file.name != f"corpus-small-5-1-{key}.ndjson"  # study_profiles.py is in its key
    mean = run.mean_study_bytes(small_file)
    studies = [r for r in study_profiles.generate_corpus(5, 1, "small") if r["resourceType"] == "ImagingStudy"]
    assert mean == _mean_bytes(studies)


def test_the_report_names_the_profile_and_the_study_size(tmp_path: Path) -> None:
    opts = run.Options(scales=[2000], study_profile="small", study_bytes={2000: 1530.4}, workloads=("read-c16",))
    text = report.render(opts, {}, [], [], "python -m bench run", "2026-12-01")
    assert "Study profile: `small`" in text
    assert "1,530 bytes at scale 2,000" in text
    path = tmp_path / "results.json"
    run.save_json(path, opts, "python -m bench run", {}, [], [])
    loaded = run.load_json(path)[0]
    assert (loaded.study_profile, loaded.study_bytes) == ("small", {2000: 1530.4})
