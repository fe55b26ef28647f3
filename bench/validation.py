"""Benchmark: fhir_imaging.validation against fhir.resources (R4B pydantic models) on ImagingStudy inputs.

Spec: https://hl7.org/fhir/R4/validation.html. Not a test; run from the repository root:

    .venv/bin/python bench/validation.py [--source ../shared/fhir-r4] [--seconds 1.0]

Inputs: the official ``ImagingStudy-example-xr.json`` and a large study built from it (10 series × 100 instances).
Each validator gets the same parsed dict (``orjson.loads``); the time is the median of several timed batches. The
"without invariants" column is ``Validator.structural_issues`` (the same checks, the invariants left out), measured in
the same run.
Needs ``fhir.resources>=8`` (a test-only dependency) for the comparison column.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
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


if __name__ == "__main__":
    main()
