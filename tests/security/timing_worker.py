"""A child process that validates resources and says how long each took: ``python -m tests.security.timing_worker``.

Reads one serialised resource per line on stdin; answers each with one JSON line on stdout: ``{"seconds": s,
"errors": n}`` (the time of ``orjson.loads`` + ``Validator.validate`` + ``Validator.locate``, the number of error
issues) or ``{"exception": "..."}``. It runs apart from the tests so that a regular expression that backtracks for
hours can be killed instead of hanging the suite (``re`` holds the GIL while it matches: no thread can stop it).
"""

from __future__ import annotations

import sys
import time

import orjson

from fhir_imaging.validation import Validator


def main() -> None:
    validator = Validator.load()
    for line in sys.stdin.buffer:
        try:
            started = time.perf_counter()
            resource = orjson.loads(line)
            issues = validator.validate(resource)
            located = validator.locate(resource)
            seconds = time.perf_counter() - started
            errors = sum(issue.severity == "error" for issue in issues)
            answer = {"seconds": seconds, "errors": errors, "located": len(located)}
        except Exception as error:  # reported to the test, which fails on it
            answer = {"exception": repr(error)[:500]}
        sys.stdout.buffer.write(orjson.dumps(answer) + b"\n")
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
