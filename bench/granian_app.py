"""Our app as granian serves it in the benchmark: the same factory as ``fhir-imaging serve --workers N``
(``fhir_imaging.app:app_from_environment``), with the request log configured as ``fhir-imaging serve`` does
(one line per request on stderr), so that uvicorn and granian are compared doing the same work.

    FHIR_IMAGING_DATABASE=sqlite:////tmp/x.db granian --interface asgi --factory bench.granian_app:create_app
"""

from __future__ import annotations

import logging
import sys

from starlette.applications import Starlette

from fhir_imaging.app import app_from_environment
from fhir_imaging.config import load_settings


def create_app() -> Starlette:
    level = load_settings().log_level.upper()
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return app_from_environment()
