"""Evaluate the invariants (``constraint`` elements) of the R4 resources and data types on the elements present.

Spec: https://hl7.org/fhir/R4/conformance-rules.html#constraints, https://hl7.org/fhir/R4/validation.html and
https://hl7.org/fhir/R4/fhirpath.html#variables (``%resource``, ``%rootResource``).

The constraints come from ``data/invariants.json`` (derived by ``tools/derive_invariants.py``): per structure
(resource, datatype, backbone element) and per element, the constraints that hold on each object or value of it.
Each constraint is evaluated one of three ways:

- compiled Python (``compiled.py``), keyed by the exact expression: the constraints every imaging write meets
  (ext-1, per-1, ref-1, dom-2…dom-6, qty-3, sqty-1, pat-1, cpt-2, att-1), and ele-1 in the walk itself;
- fhirpathpy, the expression compiled once on first use, under one budget per resource (``fhirpath_budget.py``:
  ``LIMITS``), with ``hasValue()`` and ``resolve()`` (to a contained resource, or a node of the referenced type)
  supplied;
- not at all, when the expression calls a function outside FHIRPath (``NOT_EVALUABLE``: ``htmlChecks()``, …) or the
  constraint sits on a profile no element uses (``unused`` in the data): each is listed with the reason.

An error-severity constraint that evaluates to false is an error (code ``invariant``: 422); a warning-severity one
(dom-6, con-3, the ``*-0`` name rules) a warning. An empty result (FHIRPath's "unknown") is not reported. Issues
name the constraint key, its human text, and, in ``expression``, the element it sits on.

Speed: one walk visits only the complex elements present. A clean pass (compiled once per structure into closures:
no paths, no issues) answers "nothing to report" for the common case; only when it finds something does a second
walk build paths and issues. The resource's own constraints are evaluated outside both walks, so a warning there
(a resource without narrative: dom-6) does not cost the second walk. In the clean pass, a leaf structure's values
(a Coding: nothing but ele-1 and rare elements) are checked in their parent's closure, and an array of structures
without constraints of their own (ImagingStudy.series.instance) in one loop (``_each``): no call per element.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fhir_imaging.fhir.fhirpath_budget import BudgetExceeded, FhirPathLimits, budget
from fhir_imaging.fhir.outcome import Issue
from fhir_imaging.validation.compiled import COMPILED, Scope
from fhir_imaging.validation.schema import EXTENSION_OF, PRIMITIVE, RESOURCE, Prop, Schema, Structure
from fhir_imaging.validation.status import BASIC_CODES
from fhir_imaging.validation.subset import Unsupported, compile_subset

# Bounds on the fhirpathpy evaluations of one resource, all together (the compiled ones need none: linear walks).
LIMITS = FhirPathLimits(max_length=10_000, max_items=2_000_000, timeout=2.0)

# Functions that are not FHIRPath (or need terminology or profiles this server does not have) → why not evaluated.
NOT_EVALUABLE = {
    "htmlChecks(": (
        "htmlChecks() is not a FHIRPath function: it stands for the XHTML rules of narrative.html, which "
        "validation/narrative.py (html_checks) applies to every Narrative.div instead"
    ),
    "conformsTo(": "conformsTo() needs the profiles, which the server does not load",
    "memberOf(": "memberOf() needs a terminology server",
}

Check = Callable[[Any, Scope], "bool | None"]
Clean = Callable[[Any, Any, Scope], bool]  # (value, the object holding it, scope) → nothing to report


@dataclass(frozen=True, slots=True)
class Constraint:
    """One invariant of the definitions and how it is evaluated."""

    id: str  # the key, or "Type:key" when R4 uses the key in several types (inv-1)
    key: str
    severity: str  # error | warning
    human: str
    expression: str
    source: str  # the type that defines it
    reason: str = ""  # why it is not evaluated ("" when it is: ``Invariants.methods()`` says how)


def _not_evaluable(expression: str) -> str:
    return next((reason for call, reason in NOT_EVALUABLE.items() if call in expression), "")


class Invariants:
    """The constraints of ``invariants.json`` over a ``Schema``; ``issues(resource)``. Thread-safe."""

    def __init__(self, schema: Schema, table: Mapping[str, Any]) -> None:
        self.schema = schema
        unused: Mapping[str, str] = table["unused"]
        self.constraints: dict[str, Constraint] = {}
        for ident, entry in table["constraints"].items():
            expression = entry["expression"]
            reason = unused.get(ident) or _not_evaluable(expression)
            self.constraints[ident] = Constraint(
                ident, entry["key"], entry["severity"], entry["human"], expression, entry["source"], reason
            )
        self.every_element = tuple(self.constraints[i] for i in table["everyElement"])

        def evaluated(idents: list[str]) -> tuple[Constraint, ...]:
            return tuple(self.constraints[i] for i in idents if not self.constraints[i].reason)

        self._structures = {path: evaluated(idents) for path, idents in table["structures"].items()}
        self._elements = {path: evaluated(idents) for path, idents in table["elements"].items()}
        self._checks: dict[str, tuple[Check, str]] = {}
        self._clean: dict[int, Clean] = {}  # id(Structure) → its clean pass (nested: own constraints included)
        self._children: dict[int, Clean] = {}  # id(Structure) → the clean pass without the structure's own
        self._roots: dict[int, tuple[tuple[Constraint, Check], ...]] = {}  # id(Structure) → its own checks
        self._lock = threading.RLock()

    # -- the entry points -------------------------------------------------------------------------------------------

    def after(self, resource: Any, structural: list[Issue]) -> list[Issue]:
        """The invariant issues of a resource whose structural issues are ``structural``: none when one of them is
        an error of its FHIR JSON shape (``structure``, ``value``: the walks assume a sound shape)."""
        if any(i.code in BASIC_CODES and i.severity in ("error", "fatal") for i in structural):
            return []
        return self.issues(resource)

    def issues(self, resource: dict[str, Any]) -> list[Issue]:
        """Every invariant issue of a resource that passed the structural checks (a well-formed FHIR JSON shape)."""
        type_name = resource.get("resourceType")
        struct = self.schema.resource(type_name) if type(type_name) is str else None
        if struct is None:
            return []
        scope = Scope(resource, resource)
        with budget(LIMITS):
            issues: list[Issue] = []
            for constraint, check in self._root_checks(struct):
                if not _passes(check, resource, scope):
                    self._report(constraint, resource, scope, struct, struct.name, struct.name, issues)
            if not self._children_pass(struct)(resource, None, scope):
                self._walk(resource, struct, struct.name, scope, issues, own=False)
        costly = [i for i, issue in enumerate(issues) if issue.code == "too-costly"]
        if len(costly) > 1:  # past the bounds, every later fhirpathpy evaluation fails too: the first one says it
            issues = [issue for i, issue in enumerate(issues) if issue.code != "too-costly" or i == costly[0]]
        return issues

    # -- how each constraint is evaluated (for the tests and docs) --------------------------------------------------

    def methods(self) -> dict[str, str]:
        """Constraint id → "python" (compiled wherever it applies), "fhirpath" (fhirpathpy somewhere) or
        "not evaluated: <reason>". Compiles every check (a few seconds): for tests and documentation."""
        out: dict[str, str] = {}
        for constraint in self.constraints.values():
            if constraint.reason:
                out[constraint.id] = f"not evaluated: {constraint.reason}"
        for path, constraints in self._structures.items():
            struct = self._structure_at(path)
            if struct is None:
                continue  # an abstract type (DomainResource): its constraints are copied onto every resource
            for constraint in constraints:
                how = self.checker(constraint, struct, path)[1]
                out[constraint.id] = "fhirpath" if out.get(constraint.id) == "fhirpath" else how
        for path, constraints in self._elements.items():
            parent_path, _, name = path.rpartition(".")
            parent = self._structure_at(parent_path)
            props = [p for p in (parent.props.values() if parent else ()) if (p.choice or p.key) == name]
            for prop in props:
                struct = self.schema.resolve(prop) if prop.kind not in (PRIMITIVE, RESOURCE) else None
                for constraint in constraints:
                    how = self.checker(constraint, struct, prop.type_code)[1]
                    out[constraint.id] = "fhirpath" if out.get(constraint.id) == "fhirpath" else how
        for constraint in self.every_element:
            out[constraint.id] = "python"  # ele-1: in the walks themselves
        return out

    def _structure_at(self, path: str) -> Structure | None:
        """The structure of a resource, datatype or backbone path of the data (``Patient.contact``)."""
        head, *steps = path.split(".")
        struct = self.schema.resource(head) or (self.schema.datatype(head) if head in self.schema.datatypes else None)
        for step in steps:
            prop = struct.props.get(step) if struct is not None else None
            if prop is None or prop.kind in (PRIMITIVE, RESOURCE):
                return None
            struct = self.schema.resolve(prop)
        return struct

    # -- evaluation -------------------------------------------------------------------------------------------------

    def evaluate(
        self, constraint: Constraint, focus: Any, scope: Scope, struct: Structure | None, type_path: str
    ) -> bool | None:
        """True (holds), False (violated) or None (empty result). Raises BudgetExceeded past ``LIMITS``."""
        return self.checker(constraint, struct, type_path)[0](focus, scope)

    def checker(self, constraint: Constraint, struct: Structure | None, type_path: str) -> tuple[Check, str]:
        """The check of ``constraint`` on a focus of ``type_path`` (its structure, when complex) and how it is
        evaluated: "python" (compiled.py or the subset of subset.py) or "fhirpath"."""
        cache_key = f"{type_path}\0{constraint.id}"
        found = self._checks.get(cache_key)
        if found is None:
            with self._lock:
                found = self._checks.get(cache_key) or _checker(constraint.expression, struct, type_path, self.schema)
                self._checks[cache_key] = found
        return found

    def _root_checks(self, struct: Structure) -> tuple[tuple[Constraint, Check], ...]:
        found = self._roots.get(id(struct))
        if found is None:
            with self._lock:
                found = self._roots[id(struct)] = self._bound(struct.name, struct, struct.name)
        return found

    def _bound(self, key: str, struct: Structure | None, type_path: str) -> tuple[tuple[Constraint, Check], ...]:
        """The constraints of a structure (``key`` its path) or element (``key`` its element path) with their checks."""
        constraints = self._structures.get(key, ()) if key == type_path else self._elements.get(key, ())
        return tuple((c, self.checker(c, struct, type_path)[0]) for c in constraints)

    def _report(
        self,
        constraint: Constraint,
        focus: Any,
        scope: Scope,
        struct: Structure | None,
        type_path: str,
        where: str,
        issues: list[Issue],
    ) -> None:
        try:
            result = self.evaluate(constraint, focus, scope, struct, type_path)
        except BudgetExceeded as exc:
            message = f"{where}: constraint {constraint.key} could not be evaluated within bounds ({exc})"
            issues.append(Issue("error", "too-costly", message, (where,)))
            return
        except Exception as exc:  # fhirpathpy raises plain exceptions on data it cannot compare
            message = f"{where}: constraint {constraint.key} could not be evaluated ({str(exc)[:200]})"
            issues.append(Issue("warning", "processing", message, (where,)))
            return
        if result is False:
            label = "best practice: " if constraint.severity == "warning" else ""
            message = f"{where}: constraint {constraint.key} failed: {label}{constraint.human}"
            issues.append(Issue(constraint.severity, "invariant", message, (where,)))

    # -- the clean pass: closures per structure, no paths ------------------------------------------------------------

    def _children_pass(self, struct: Structure) -> Clean:
        found = self._children.get(id(struct))
        if found is None:
            with self._lock:
                found = self._children.get(id(struct)) or self._build(struct, own=False)
                self._children[id(struct)] = found
        return found

    def _clean_pass(self, struct: Structure) -> Clean:
        found = self._clean.get(id(struct))
        if found is None:
            with self._lock:
                found = self._clean.get(id(struct))
                if found is None:
                    cell: list[Clean] = []
                    self._clean[id(struct)] = lambda value, parent, scope: cell[0](value, parent, scope)  # recursion
                    found = self._build(struct, own=True)
                    cell.append(found)
                    self._clean[id(struct)] = found
        return found

    def _build(self, struct: Structure, own: bool) -> Clean:
        """The clean pass of one structure. Its complex elements are split in two: the rare ones (``extension``,
        ``modifierExtension``, ``_x``), looked for with one ``isdisjoint``, and the others, fetched by key (or, for
        an object with fewer keys than those, the object's keys are looked up instead)."""
        checks = tuple(check for _, check in self._bound(struct.name, struct, struct.name)) if own else ()
        handlers: dict[str, Clean] = {}
        for key, prop in struct.props.items():
            handler = self._handler(struct, prop)
            if handler is not None:
                handlers[key] = handler
        rare = frozenset(key for key in handlers if key.startswith("_") or key in ("extension", "modifierExtension"))
        common = tuple((key, handler) for key, handler in handlers.items() if key not in rare)
        fewer = len(common)  # an object with fewer keys than that is walked by its own keys
        # The common elements whose structure is a leaf (below): checked here, without a call (a Coding in every
        # instance of a study); the others through their handler.
        leaves = tuple((key, handler, getattr(handler, "leaf_rare", None)) for key, handler in common)

        def clean(obj: Any, parent: Any, scope: Scope) -> bool:
            if type(obj) is not dict:
                return True
            if len(obj) == 1 and "id" in obj:
                return False  # ele-1
            for check in checks:
                if not _passes(check, obj, scope):
                    return False
            if len(obj) < fewer or not rare.isdisjoint(obj):
                for key, value in obj.items():
                    handler = handlers.get(key)
                    if handler is not None and not handler(value, obj, scope):
                        return False
                return True
            for key, handler, leaf_rare in leaves:
                value = obj.get(key)
                if value is None:
                    continue
                if leaf_rare is not None and type(value) is dict and leaf_rare.isdisjoint(value):
                    if len(value) == 1 and "id" in value:
                        return False  # ele-1 on the leaf
                elif not handler(value, obj, scope):
                    return False
            return True

        if not checks and common:
            clean.simple = (rare, leaves, fewer)  # type: ignore[attr-defined]  # read by ``_each`` (arrays)
        if checks or common:
            return clean

        def leaf(obj: Any, parent: Any, scope: Scope) -> bool:
            """A structure with nothing to check but ele-1 and its rare elements (Coding, Identifier…)."""
            if type(obj) is dict and rare.isdisjoint(obj):
                return len(obj) != 1 or "id" not in obj
            return clean(obj, parent, scope)

        leaf.leaf_rare = rare  # type: ignore[attr-defined]  # read by the parents' clean passes (``leaves``)
        return leaf

    def _handler(self, struct: Structure, prop: Prop) -> Clean | None:
        """The clean pass of one property's values, or None when nothing can be reported there (a primitive
        without element constraints)."""
        element = (
            self._elements.get(f"{struct.name}.{prop.choice or prop.key}", ()) if prop.kind != EXTENSION_OF else ()
        )
        if prop.kind == PRIMITIVE and not element:
            return None
        item: Clean
        if prop.kind == RESOURCE:
            item = self._resource_pass(prop)
        elif prop.kind == PRIMITIVE:
            item = _always
        else:
            item = self._clean_pass(self.schema.resolve(prop))
        if element:
            item = self._with_element(item, element, prop)
        if not prop.array:
            return item
        return _each(item)

    def _with_element(self, item: Clean, element: tuple[Constraint, ...], prop: Prop) -> Clean:
        struct = self.schema.resolve(prop) if prop.kind not in (PRIMITIVE, RESOURCE) else None
        checks = tuple(self.checker(constraint, struct, prop.type_code)[0] for constraint in element)

        def checked(value: Any, parent: Any, scope: Scope) -> bool:
            for check in checks:
                if not _passes(check, value, scope):
                    return False
            return item(value, parent, scope)

        return checked

    def _primitive_extension(self, prop: Prop) -> Clean:
        """``_x``: ele-1 on the primitive (a value, or an extension), then the Element structure of the object."""
        base_key = prop.key[1:]
        element = self.schema.datatype("Element")

        def clean(value: Any, parent: Any, scope: Scope) -> bool:
            inner = self._clean_pass(element)
            if type(value) is dict:
                if _only_id(value) and parent.get(base_key) is None:
                    return False
                return _only_id(value) or inner(value, parent, scope)
            if type(value) is list:
                values = parent.get(base_key)
                for i, one in enumerate(value):
                    if type(one) is not dict:
                        continue
                    has_value = type(values) is list and i < len(values) and values[i] is not None
                    if _only_id(one) and not has_value:
                        return False
                    if not _only_id(one) and not inner(one, parent, scope):
                        return False
            return True

        return clean

    def _resource_pass(self, prop: Prop) -> Clean:
        contained = prop.key == "contained"

        def clean(value: Any, parent: Any, scope: Scope) -> bool:
            if type(value) is not dict or type(value.get("resourceType")) is not str:
                return True
            struct = self.schema.resource(value["resourceType"])
            if struct is None:
                return True
            inner = Scope(value, scope.root, scope.cache) if contained else Scope(value, value)
            return self._clean_pass(struct)(value, parent, inner)

        return clean

    # -- the second walk: paths and issues --------------------------------------------------------------------------

    def _walk(
        self, obj: Any, struct: Structure, path: str, scope: Scope, issues: list[Issue], own: bool = True
    ) -> None:
        if type(obj) is not dict:
            return
        if len(obj) == 1 and "id" in obj:
            self._ele_1(path, issues)
        if own:
            for constraint in self._structures.get(struct.name, ()):
                self._report(constraint, obj, scope, struct, struct.name, path, issues)
        for key, value in obj.items():
            prop = struct.props.get(key)
            if prop is None:
                continue
            if prop.kind == EXTENSION_OF:
                self._walk_primitive_extension(obj, prop, value, f"{path}.{prop.segment}", scope, issues)
                continue
            element = self._elements.get(f"{struct.name}.{prop.choice or prop.key}", ())
            if prop.kind == PRIMITIVE and not element:
                continue
            where = f"{path}.{prop.segment}"
            items = list(enumerate(value)) if prop.array and type(value) is list else [(None, value)]
            element_struct = self.schema.resolve(prop) if element and prop.kind not in (PRIMITIVE, RESOURCE) else None
            for i, one in items:
                at = where if i is None else f"{where}[{i}]"
                for constraint in element:
                    self._report(constraint, one, scope, element_struct, prop.type_code, at, issues)
                if prop.kind == RESOURCE:
                    self._walk_resource(prop, one, at, scope, issues)
                elif prop.kind != PRIMITIVE:
                    self._walk(one, self.schema.resolve(prop), at, scope, issues)

    def _walk_resource(self, prop: Prop, value: Any, path: str, scope: Scope, issues: list[Issue]) -> None:
        if type(value) is not dict or type(value.get("resourceType")) is not str:
            return
        struct = self.schema.resource(value["resourceType"])
        if struct is not None:
            inner = Scope(value, scope.root, scope.cache) if prop.key == "contained" else Scope(value, value)
            self._walk(value, struct, path, inner, issues)

    def _walk_primitive_extension(
        self, obj: dict[str, Any], prop: Prop, value: Any, where: str, scope: Scope, issues: list[Issue]
    ) -> None:
        element = self.schema.datatype("Element")
        base = obj.get(prop.key[1:])
        if type(value) is dict:
            if _only_id(value):
                if base is None:
                    self._ele_1(where, issues)
            else:
                self._walk(value, element, where, scope, issues)
        elif type(value) is list:
            for i, one in enumerate(value):
                if type(one) is not dict:
                    continue
                has_value = type(base) is list and i < len(base) and base[i] is not None
                if _only_id(one):
                    if not has_value:
                        self._ele_1(f"{where}[{i}]", issues)
                else:
                    self._walk(one, element, f"{where}[{i}]", scope, issues)

    def _ele_1(self, where: str, issues: list[Issue]) -> None:
        for constraint in self.every_element:
            message = f"{where}: constraint {constraint.key} failed: {constraint.human}"
            issues.append(Issue(constraint.severity, "invariant", message, (where,)))


def _passes(check: Check, focus: Any, scope: Scope) -> bool:
    """The check does not say "violated"; an exception (fhirpathpy, the bounds) is left to the locating walk."""
    try:
        return check(focus, scope) is not False
    except Exception:  # reported by the second walk (_report): never a crash
        return False


def _always(value: Any, parent: Any, scope: Scope) -> bool:
    return True


def _each(item: Clean) -> Clean:
    """The clean pass of an array of ``item``. When ``item`` is the pass of a structure without constraints of its
    own whose common elements are leaves or others (``simple``: ImagingStudy.series.instance), its common case is
    done here, one call fewer per element (a study has a thousand instances)."""
    simple = getattr(item, "simple", None)
    if simple is None:

        def each(value: Any, parent: Any, scope: Scope) -> bool:
            if type(value) is not list:
                return True
            for one in value:  # noqa: SIM110 - a loop: all() over a generator is slower on this hot path
                if not item(one, parent, scope):
                    return False
            return True

        return each
    rare, leaves, fewer = simple

    def each_simple(value: Any, parent: Any, scope: Scope) -> bool:
        if type(value) is not list:
            return True
        for obj in value:
            if type(obj) is not dict:
                continue
            if len(obj) < fewer or not rare.isdisjoint(obj) or (len(obj) == 1 and "id" in obj):
                if not item(obj, parent, scope):  # the uncommon cases, and ele-1, as ``item`` does them
                    return False
                continue
            for key, handler, leaf_rare in leaves:  # as in ``_build``'s clean
                found = obj.get(key)
                if found is None:
                    continue
                if leaf_rare is not None and type(found) is dict and leaf_rare.isdisjoint(found):
                    if len(found) == 1 and "id" in found:
                        return False
                elif not handler(found, obj, scope):
                    return False
        return True

    return each_simple


def _only_id(obj: dict[str, Any]) -> bool:
    return len(obj) == 1 and "id" in obj


# -- fhirpathpy ----------------------------------------------------------------------------------------------------


def _checker(expression: str, struct: Structure | None, type_path: str, schema: Schema) -> tuple[Check, str]:
    compiled = COMPILED.get(expression)
    if compiled is not None:
        return compiled, "python"
    if struct is not None:
        try:
            value = compile_subset(expression, struct, schema)
        except Unsupported:
            pass
        else:
            return value, "python"
    return _fhirpath(expression, type_path), "fhirpath"


def _fhirpath(expression: str, type_path: str) -> Check:
    """``expression`` compiled by fhirpathpy, evaluated with the focus typed as ``type_path``."""
    import fhirpathpy
    from fhirpathpy.engine.nodes import ResourceNode
    from fhirpathpy.models import models

    options = {"userInvocationTable": _functions(), "traceFn": _no_trace}
    cell: list[Any] = []  # compiled on first use: the parser takes milliseconds, most checks are never needed

    def check(focus: Any, scope: Scope) -> bool | None:
        if not cell:
            cell.append(fhirpathpy.compile(expression, models["r4"], options))
        node = ResourceNode.create_node(focus, type_path) if type(focus) is dict else focus
        result = cell[0](node, {"resource": scope.resource, "rootResource": scope.root, "context": focus})
        return _boolean(result)

    return check


def _no_trace(*args: Any) -> None:
    """``trace()`` writes nothing (fhirpathpy prints to stdout by default)."""


def _boolean(result: Any) -> bool | None:
    """A constraint's result: one boolean is itself; empty is unknown (None); other items count as true."""
    items = result if isinstance(result, list) else [result]
    if not items:
        return None
    if len(items) == 1 and isinstance(_data(items[0]), bool):
        return bool(_data(items[0]))
    return True


def _data(item: Any) -> Any:
    from fhirpathpy.engine.nodes import ResourceNode

    return item.data if isinstance(item, ResourceNode) else item


def _has_value(inputs: list[Any]) -> list[bool]:
    """FHIR's ``hasValue()``: one primitive that has a value (not only extensions)."""
    if len(inputs) != 1:
        return [False]
    data = _data(inputs[0])
    return [data is not None and not isinstance(data, dict | list)]


def _resolve(inputs: list[Any]) -> list[Any]:
    """``resolve()`` without a database: a node of the type a literal reference names (``Practitioner/1`` →
    Practitioner), enough for ``is``/``ofType()`` (ctm-1, the only R4 constraint calling it); nothing otherwise."""
    from fhirpathpy.engine.nodes import ResourceNode

    from fhir_imaging.search.fhirpath import resolved_type_of

    out = []
    for item in inputs:
        data = _data(item)
        kind = resolved_type_of(data)
        if kind:
            out.append(ResourceNode.create_node({"resourceType": kind}, kind))
    return out


def _functions() -> dict[str, Any]:
    return {
        "hasValue": {"fn": _has_value, "arity": {0: []}},
        "resolve": {"fn": _resolve, "arity": {0: []}},
    }
