"""A patient's compartment (https://hl7.org/fhir/R4/compartmentdefinition-patient.html), as ``patient/`` scopes
confine a caller to it: which resources are in it (a Patient by its id; any other resource through the reference
parameters the Patient CompartmentDefinition names for its type), and the search filter that keeps a search in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_imaging.fhir.outcome import Forbidden
from fhir_imaging.fhir.registry import Registry
from fhir_imaging.search.index import extract_values
from fhir_imaging.search.query import Compartment


@dataclass(frozen=True)
class PatientCompartment:
    registry: Registry

    def codes(self, resource_type: str) -> tuple[str, ...]:
        """The searchable reference parameters that put a resource of ``resource_type`` in a patient's
        compartment (none: the type is not in it)."""
        params = self.registry.params_for(resource_type)
        names = self.registry.patient_compartment.get(resource_type, ())
        return tuple(code for code in names if code in params and params[code].searchable)

    def contains(self, resource: dict[str, Any], patient_id: str, bases: tuple[str, ...]) -> bool:
        """Whether ``resource`` is in the compartment of Patient/``patient_id``."""
        return patient_id in self.patients(resource, bases)

    def patients(self, resource: dict[str, Any], bases: tuple[str, ...]) -> set[str]:
        """The ids of the patients in whose compartments ``resource`` is (a Patient: its own id)."""
        resource_type = resource.get("resourceType")
        if resource_type == "Patient":
            return {str(resource.get("id"))}
        found: set[str] = set()
        params = self.registry.params_for(str(resource_type))
        for code in self.codes(str(resource_type)):
            for kind, sub, columns in extract_values(resource, params[code]):
                if kind != "reference" or sub:
                    continue
                target_type, target_id, base = columns[0], columns[1], columns[2]
                if target_type == "Patient" and (not base or base in bases):
                    found.add(str(target_id))
        return found

    def search_filter(self, resource_type: str, patient_id: str) -> tuple[Compartment | None, list[tuple[str, str]]]:
        """What keeps a search of ``resource_type`` in the compartment: a filter, or (for Patient) ``_id``
        criteria; Forbidden for a type outside every patient compartment."""
        if resource_type == "Patient":
            return None, [("_id", patient_id)]
        codes = self.codes(resource_type)
        if not codes:
            raise Forbidden(f"{resource_type} is not in a patient's compartment: patient scopes do not reach it")
        return Compartment(codes, patient_id), []
