"""`python -m fhir_imaging` runs the command line."""

from __future__ import annotations

from fhir_imaging.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
