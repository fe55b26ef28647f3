"""What-if variants of our app, for the benchmark only (``--targets ours-control,ours-switch-interval``).

They change nothing in ``fhir_imaging/``: each is a factory that builds the real app and patches one thing, so the
lead can see what a change would be worth before making it.

- ``fhir_imaging.app:app_from_environment`` (target ``ours-control``): no patch, launched the same way
  (``python -m uvicorn --factory``), so that the variants are compared with a like-for-like control.
- ``short_switch_interval``: ``sys.setswitchinterval(0.0005)`` (default 5 ms), so the event loop waits less for
  the GIL held by pool threads.
"""

from __future__ import annotations

import sys

from starlette.applications import Starlette

from fhir_imaging.app import app_from_environment as create_app


def short_switch_interval() -> Starlette:
    sys.setswitchinterval(0.0005)
    return create_app()
