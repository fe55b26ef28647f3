"""One module per search-parameter type, each implementing ``SearchType`` (base.py)."""

from __future__ import annotations

from fhir_imaging.search.types.base import SearchType
from fhir_imaging.search.types.date import DateType
from fhir_imaging.search.types.number import NumberType
from fhir_imaging.search.types.quantity import QuantityType
from fhir_imaging.search.types.reference import ReferenceType
from fhir_imaging.search.types.string import StringType
from fhir_imaging.search.types.token import TokenType
from fhir_imaging.search.types.uri import UriType

TYPES: dict[str, SearchType] = {
    kind.name: kind
    for kind in (TokenType(), StringType(), DateType(), NumberType(), QuantityType(), UriType(), ReferenceType())
}
TABLES: dict[str, str] = {name: kind.table for name, kind in TYPES.items()}
