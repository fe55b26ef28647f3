"""Benchmarks of fhir-imaging against a floor and a peer server: ``python -m bench run`` (see bench/README.md)."""
