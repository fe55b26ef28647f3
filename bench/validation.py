"""Benchmark: fhir_imaging.validation against fhir.resources (R4B pydantic models) on ImagingStudy inputs.

Spec: https://hl7.org/fhir/R4/validation.html. Not a test; run from the repository root:

    .venv/bin/python bench/validation.py [--source ../shared/fhir-r4] [--seconds 1.0]

Inputs: the official ``ImagingStudy-example-xr.json`` and a large study built from it (10 series × 100 instances).
Each validator gets the same parsed dict (``orjson.loads``); the time is the median of several timed batches. The
"without invariants" column is ``Validator.structural_issues`` (the same checks, the invariants left out), measured in
the same run.
``--creates N`` also times creates of the large study through the in-process FHIR API (``POST /ImagingStudy`` on a
fresh SQLite database, default settings): N creates with every rule on and N with the invariants left out, in
alternating rounds of the same run, and prints creates/s of each and their ratio (what the invariants cost a create).
Needs ``fhir.resources>=8`` (a test-only dependency) for the comparison column.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fhir_imaging.validation import Validator  # noqa: E402


def large_study(example: dict[str, Any], series: int = 10, instances: int = 100) -> dict[str, Any]:
    """``example`` with ``series`` series of ``instances`` instances each (unique uids, numbered)."""
    study = copy.deepcopy(example)
    template_series = study["series"][0]
    template_instance = template_series["instance"][0]
    study["series"] = []
    for s in range(series):
        one = copy.deepcopy(template_series)
        one["uid"] = f"{template_series['uid']}.{s + 1}"
        one["number"] = s + 1
        one["numberOfInstances"] = instances
        one["instance"] = []
        for i in range(instances):
            instance = copy.deepcopy(template_instance)
            instance["uid"] = f"{one['uid']}.{i + 1}"
            instance["number"] = i + 1
            one["instance"].append(instance)
        study["series"].append(one)
    study["numberOfSeries"] = series
    study["numberOfInstances"] = series * instances
    return study


def median_seconds(fn: Callable[[], object], budget: float) -> float:
    """Median time of one call, from batches filling about ``budget`` seconds."""
    fn()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < budget / 10:
        fn()
        calls += 1
    batch = max(1, calls)
    samples = []
    for _ in range(9):
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - t0) / batch)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description="validation benchmark")
    parser.add_argument("--source", type=Path, default=REPO / ".." / "shared" / "fhir-r4")
    parser.add_argument("--seconds", type=float, default=1.0, help="time budget per measurement")
    parser.add_argument("--creates", type=int, default=0, help="also time N creates with and without invariants")
    args = parser.parse_args()

    t0 = time.perf_counter()
    validator = Validator.load()
    load_ms = (time.perf_counter() - t0) * 1e3
    example = orjson.loads((args.source / "examples" / "ImagingStudy-example-xr.json").read_bytes())
    inputs = {"ImagingStudy-example-xr": example, "large study (10 × 100)": large_study(example)}
    try:
        from fhir.resources.R4B.imagingstudy import ImagingStudy
    except ImportError:
        ImagingStudy = None
        print("fhir.resources not installed: pip install 'fhir.resources>=8' for the comparison")

    print(f"Validator.load(): {load_ms:.1f} ms")
    print(f"{'input':<26} {'ours (µs)':>11} {'without invariants':>19} {'fhir.resources (µs)':>20} {'ratio':>7}")
    for name, resource in inputs.items():
        assert not [i for i in validator.validate(resource) if i.severity == "error"], name
        ours = median_seconds(lambda r=resource: validator.validate(r), args.seconds)
        structural = median_seconds(lambda r=resource: validator.structural_issues(r), args.seconds)
        row = f"{name:<26} {ours * 1e6:>11.1f} {structural * 1e6:>19.1f}"
        if ImagingStudy is not None:
            theirs = median_seconds(lambda r=resource: ImagingStudy.model_validate(r), args.seconds)
            print(f"{row} {theirs * 1e6:>20.1f} {theirs / ours:>6.1f}×")
        else:
            print(f"{row} {'-':>20} {'-':>7}")
    if args.creates:
        with_invariants, without = asyncio.run(creates_per_second(large_study(example), args.creates))
        print(
            f"creates/s of the large study: {with_invariants:.1f} with every rule, {without:.1f} without the "
            f"invariants ({with_invariants / without:.3f}×)"
        )


async def creates_per_second(study: dict[str, Any], count: int, rounds: int = 4) -> tuple[float, float]:
    """Creates/s of ``study`` through the in-process API with every rule on, and with ``Validator.validate`` left
    at the structural checks: ``count`` each, in alternating rounds on one fresh database."""
    from fhir_imaging.client import fhir_client
    from fhir_imaging.config import Settings

    full = Validator.validate
    seconds = {True: 0.0, False: 0.0}
    with tempfile.TemporaryDirectory(prefix="bench-validation-") as tmp:
        async with fhir_client(settings=Settings(database=f"sqlite:///{tmp}/bench.db")) as client:
            for round_number in range(rounds * 2):
                invariants = round_number % 2 == 0
                Validator.validate = full if invariants else Validator.structural_issues  # type: ignore[method-assign]
                started = time.perf_counter()
                for _ in range(count // rounds):
                    response = await client.post("/ImagingStudy", content=orjson.dumps(study))
                    assert response.status_code == 201, response.text
                seconds[invariants] += time.perf_counter() - started
    Validator.validate = full  # type: ignore[method-assign]
    done = count // rounds * rounds
    return done / seconds[True], done / seconds[False]


if __name__ == "__main__":
    main()
