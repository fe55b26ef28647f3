"""Validate a resource (parsed FHIR JSON) against the R4 definitions; report every issue found, with its location.

Spec: https://hl7.org/fhir/R4/validation.html (what a validator checks), https://hl7.org/fhir/R4/json.html (FHIR
JSON rules), https://hl7.org/fhir/R4/elementdefinition.html (cardinality, types, bindings),
https://hl7.org/fhir/R4/references.html (Reference) and https://hl7.org/fhir/R4/fhirpath.html (``expression``).

One walk over the JSON, driven by the compiled ``Structure`` tables of ``schema.py``. Issue codes: ``structure``
for FHIR JSON shape faults (unknown element, array vs single value, empty array or object, ``null``, several types
of one choice, missing or unknown ``resourceType``); ``value`` for primitive values of the wrong JSON type or
lexical form; ``required`` for missing required elements; ``code-invalid`` for codes outside a required binding;
and, as warnings only, ``invalid`` for relative references to an unknown resource type or to one the element does
not allow (four of HL7's own examples do that; references need not resolve in this server).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson

from fhir_imaging import linear_regex
from fhir_imaging.fhir.outcome import Issue
from fhir_imaging.fhir.references import RELATIVE_REFERENCE, RELATIVE_REFERENCE_PATTERN
from fhir_imaging.validation.bundles import bundle_issues
from fhir_imaging.validation.extensions import CORE, Holder, core_extensions, holder
from fhir_imaging.validation.fast import FastPass
from fhir_imaging.validation.invariants import Invariants
from fhir_imaging.validation.schema import COMPLEX, EXTENSION_OF, PRIMITIVE, RESOURCE, Prop, Schema, Structure
from fhir_imaging.validation.values import attachment_problems


def _is_core(url: Any) -> bool:
    return type(url) is str and url.startswith(CORE)


def _error(code: str, message: str, path: str, *more: str) -> Issue:
    return Issue("error", code, message, (path, *more))


class Validator:
    """Validates resources against the R4 definitions; build it once with ``Validator.load()``; thread-safe."""

    def __init__(self, schema: Schema, invariants: Any = None) -> None:
        self.schema = schema
        self._fast = FastPass(schema, linear_regex.fullmatcher(RELATIVE_REFERENCE_PATTERN))
        table = invariants if invariants is not None else _package_json("invariants/invariants.json")
        self.invariants = Invariants(schema, table)  # the constraints of the definitions (invariants.py)

    @classmethod
    def load(cls) -> Validator:
        """The validator over the shipped package data (``fhir_imaging/validation/data``)."""
        types, valuesets = _package_json("types.json"), _package_json("valuesets.json")
        return cls(Schema(types, valuesets))

    def validate(self, resource: Any) -> list[Issue]:
        """Every issue of ``resource`` (errors and warnings); an empty list when it is valid. The invariants
        (``invariants.py``) are evaluated on a resource whose FHIR JSON shape is sound (no ``structure`` or ``value``
        error)."""
        issues = self.structural_issues(resource)
        return issues + self.invariants.after(resource, issues)

    def structural_issues(self, resource: Any) -> list[Issue]:
        """The issues of the definitions' tables, without the invariants (``locate``, behind the fast pass)."""
        if self._fast.clean(resource):  # the common case: no issue, no locations to build (fast.py)
            return []
        return self.locate(resource)

    def locate(self, resource: Any) -> list[Issue]:
        """The full walk, without the fast pass: every issue with its location (what ``validate`` answers)."""
        issues: list[Issue] = []
        self._resource(resource, "", issues)
        return issues

    def validate_value(self, type_code: str, value: Any, path: str | None = None) -> list[Issue]:
        """Issues of one value of a datatype (primitive or complex), e.g. for tests of single datatypes."""
        issues: list[Issue] = []
        path = path or type_code
        check = self.schema.checks.get(type_code)
        if check is not None:
            reason = check(value) if value is not None else "null is not a value"
            if reason is not None:
                issues.append(_error("value", f"{path}: {reason}", path))
        elif type_code in self.schema.datatypes:
            prop = Prop(type_code, type_code, COMPLEX, False, type_code, type_ref=type_code)
            self._value(prop, value, path, issues)
        else:
            raise ValueError(f"unknown FHIR datatype {type_code!r}")
        return issues

    # -- the walk -------------------------------------------------------------------------------------------------

    def _resource(self, resource: Any, path: str, issues: list[Issue]) -> None:
        where = path or "(resource)"
        if type(resource) is not dict:
            issues.append(_error("structure", f"{where}: a resource must be a JSON object", where))
            return
        type_name = resource.get("resourceType")
        if type_name is None:
            issues.append(_error("structure", f"{where}: resourceType is missing", where))
            return
        struct = self.schema.resource(type_name) if type(type_name) is str else None
        if struct is None:
            issues.append(_error("structure", f"{where}: unknown resource type {type_name!r}", where))
            return
        self._object(resource, struct, path or type_name, issues, None)
        if type_name == "Bundle":
            issues += bundle_issues(resource, path or type_name)

    def _object(
        self, obj: dict[str, Any], struct: Structure, path: str, issues: list[Issue], holder: Prop | None
    ) -> None:
        """``obj`` of shape ``struct``, the value of ``holder`` (None for a resource)."""
        props = struct.props
        choices: dict[str, str] | None = None
        for key, value in obj.items():
            prop = props.get(key)
            if prop is None:
                if key != "resourceType" or not struct.is_resource:
                    issues.append(_error("structure", f"{path}: unknown element '{key}'", f"{path}.{key}"))
                continue
            if prop.choice and prop.kind != EXTENSION_OF:
                if choices is None:
                    choices = {}
                if prop.choice in choices:
                    other = props[choices[prop.choice]].segment
                    issues.append(
                        _error(
                            "structure",
                            f"{path}: only one of the types of {prop.choice} may be present "
                            f"({choices[prop.choice]}, {key})",
                            f"{path}.{other}",
                            f"{path}.{prop.segment}",
                        )
                    )
                else:
                    choices[prop.choice] = key
            if not prop.array:
                if (  # fast path: a valid primitive needs no location
                    prop.kind == PRIMITIVE
                    and value is not None
                    and type(value) is not list
                    and prop.check(value) is None  # type: ignore[misc]
                    and (prop.codes is None or value in prop.codes)
                ):
                    continue
                where = f"{path}.{prop.segment}"
                if type(value) is list:
                    issues.append(_error("structure", f"{where}: a single value is expected, not an array", where))
                elif value is None:
                    issues.append(_error("structure", f"{where}: null is not allowed here", where))
                else:
                    self._value(prop, value, where, issues)
                continue
            where = f"{path}.{prop.segment}"
            if type(value) is not list:
                issues.append(_error("structure", f"{where}: an array is expected (max cardinality *)", where))
            elif not value:
                issues.append(_error("structure", f"{where}: arrays must not be empty in FHIR JSON", where))
            else:
                self._array(obj, prop, value, where, issues)
                if prop.type_code == "Extension" and prop.kind == COMPLEX:
                    self._core_extensions(value, key, struct, holder, where, issues)
        for name, keys in struct.required:
            for key in keys:
                if key in obj:
                    break
            else:
                issues.append(
                    _error(
                        "required", f"{path}: required element {name} is missing", f"{path}.{name.removesuffix('[x]')}"
                    )
                )

    def _array(self, obj: dict[str, Any], prop: Prop, items: list[Any], where: str, issues: list[Issue]) -> None:
        """An array of values; ``null`` items only where the sibling array (``x`` ↔ ``_x``) has a value."""
        partner_key = prop.key[1:] if prop.kind == EXTENSION_OF else "_" + prop.key
        partner = obj.get(partner_key) if (prop.kind == PRIMITIVE or prop.kind == EXTENSION_OF) else None
        if type(partner) is list and len(partner) != len(items) and prop.kind == PRIMITIVE:
            issues.append(
                _error("structure", f"{where}: {prop.key} and {partner_key} must have the same length", where)
            )
        for i, item in enumerate(items):
            item_path = f"{where}[{i}]"
            if item is None:
                if type(partner) is not list or i >= len(partner) or partner[i] is None:
                    issues.append(
                        _error(
                            "structure",
                            f"{item_path}: null is only allowed in a primitive array "
                            f"whose {partner_key} counterpart has a value at the same index",
                            item_path,
                        )
                    )
                continue
            self._value(prop, item, item_path, issues)

    def _value(self, prop: Prop, value: Any, where: str, issues: list[Issue]) -> None:
        kind = prop.kind
        if kind == PRIMITIVE:
            reason = prop.check(value)  # type: ignore[misc]
            if reason is not None:
                issues.append(_error("value", f"{where}: {reason}", where))
            elif prop.codes is not None and value not in prop.codes:
                issues.append(
                    _error("code-invalid", f"{where}: {value!r} is not in the required value set {prop.binding}", where)
                )
            return
        if kind == RESOURCE:
            self._resource(value, where, issues)
            return
        if type(value) is not dict:
            what = "an array" if type(value) is list else repr(value)[:40]
            label = "primitive extension object" if kind == EXTENSION_OF else prop.type_code
            issues.append(_error("structure", f"{where}: a JSON object ({label}) is expected, not {what}", where))
            return
        if not value:
            issues.append(_error("structure", f"{where}: objects must not be empty in FHIR JSON", where))
            return
        self._object(value, prop.struct or self.schema.resolve(prop), where, issues, prop)
        if prop.type_ref == "Attachment":
            for element, severity, reason in attachment_problems(value):
                issues.append(Issue(severity, "invalid", f"{where}: {reason}", (f"{where}.{element}",)))
        elif prop.system_codes is not None:
            self._coded(prop, value, where, issues)
        elif prop.targets is not None or prop.type_code == "Reference":
            self._reference(prop, value, where, issues)

    def _core_extensions(
        self, items: list[Any], slot: str, struct: Structure, prop: Prop | None, where: str, issues: list[Issue]
    ) -> None:
        """Extensions with a URL in FHIR's namespace, against their definitions (extensions.py)."""
        found = [(i, item) for i, item in enumerate(items) if type(item) is dict and _is_core(item.get("url"))]
        if not found:
            return
        place = self._holder(struct, prop)
        table = core_extensions()
        for i, item in found:
            for element, reason in table.problems(item, slot, place):
                issues.append(_error("extension", f"{where}[{i}]: {reason}", f"{where}[{i}].{element}"))

    def _holder(self, struct: Structure, prop: Prop | None) -> Holder:
        """What the contexts of an extension on a value of ``prop`` (of shape ``struct``) may name."""
        if prop is None:
            return holder((struct.name, "Resource", "DomainResource"), struct.name, False)
        if prop.type_code == "BackboneElement":
            return holder(("BackboneElement",), struct.name, False)
        element = prop.choice.removesuffix("[x]") if prop.choice else prop.key.removeprefix("_")
        path = f"{prop.owner}.{element}" if prop.owner else prop.type_code
        return holder((prop.type_code,), path, path.split(".", 1)[0] in self.schema.datatypes)

    def _coded(self, prop: Prop, value: dict[str, Any], where: str, issues: list[Issue]) -> None:
        """Required binding on a CodeableConcept (at least one coding from the value set) or a Coding."""
        codings = value.get("coding") if prop.type_code == "CodeableConcept" else [value]
        if type(codings) is not list:
            return
        found = False
        for coding in codings:
            if type(coding) is not dict or type(coding.get("code")) is not str:
                continue
            found = True
            system = coding.get("system")
            if (system, coding["code"]) in prop.system_codes or (system is None and coding["code"] in prop.codes):  # type: ignore[operator]
                return
        if found:
            issues.append(
                _error("code-invalid", f"{where}: no coding is in the required value set {prop.binding}", where)
            )

    def _reference(self, prop: Prop, value: dict[str, Any], where: str, issues: list[Issue]) -> None:
        """Warn when a relative literal reference names an unknown resource type or one the element does not allow."""
        reference = value.get("reference")
        if type(reference) is not str:
            return
        match = RELATIVE_REFERENCE.fullmatch(reference)
        if match is None:
            return
        target = match["type"]
        if target not in self.schema.resource_types:
            issues.append(
                Issue(
                    "warning",
                    "invalid",
                    f"{where}: {reference!r} refers to an unknown resource type",
                    (f"{where}.reference",),
                )
            )
        elif prop.targets is not None and target not in prop.targets:
            allowed = ", ".join(sorted(prop.targets))
            issues.append(
                Issue(
                    "warning",
                    "invalid",
                    f"{where}: {reference!r} refers to a {target}; allowed: {allowed}",
                    (f"{where}.reference",),
                )
            )


def _package_json(name: str) -> Any:
    """A file of the shipped package data (``fhir_imaging/validation/data``), parsed."""
    return orjson.loads((resources.files("fhir_imaging.validation") / "data" / name).read_bytes())
