"""Pure FHIR knowledge: shipped definitions, registries, OperationOutcome and Bundle builders."""
