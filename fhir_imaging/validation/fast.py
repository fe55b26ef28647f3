"""A yes/no pass over a resource: is it free of every issue the full walk of ``validator.py`` would report?

Spec: the same rules as ``validator.py`` (https://hl7.org/fhir/R4/validation.html, https://hl7.org/fhir/R4/json.html).

``Validator.validate`` runs this first and returns no issues when it says yes; otherwise the full walk runs and
reports every issue with its location. So the pass must never say yes where the walk reports anything (an error or
a warning); it may say no for a clean resource (the walk then finds nothing), which it does for rare shapes it does
not follow: ``null`` items in primitive arrays.

Each ``Structure`` is compiled once into a Python function checking one JSON object, generated from its table (no
paths, issues or lists are built): a chain of ``key == "…"`` tests with the primitive tests inlined for structures
with few elements (Coding, Reference, ImagingStudy.series.instance…), a dict from key to a per-element function for
the others, then the required elements, the choice groups and primitive arrays against their ``_x`` arrays.
Structures reach each other by name in one namespace per compilation, so recursive types need no indirection.
Functions are compiled under a lock, every structure a resource can reach at once, and published when complete;
they are immutable afterwards and shared between threads (the primitive memo sets only grow or are cleared).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

from fhir_imaging.validation.bundles import bundle_issues
from fhir_imaging.validation.extensions import CORE
from fhir_imaging.validation.primitives import INT_MAX, compile_tests
from fhir_imaging.validation.schema import EXTENSION_OF, PRIMITIVE, RESOURCE, Prop, Schema, Structure
from fhir_imaging.validation.values import attachment_ok

Ok = Callable[[Any], bool]

CHAIN_MAX = 8  # structures with at most this many ordinary elements get the inline ``if key == …`` chain
_RARE = frozenset({"id", "extension", "modifierExtension"})  # left to the dict in a chain: seldom present


class FastPass:
    """``clean(resource)``: True only when ``Validator`` would report no issue for ``resource``; thread-safe."""

    def __init__(self, schema: Schema, relative_reference: Callable[[str], Any]) -> None:
        self._schema = schema
        self._match_reference = relative_reference  # the fullmatch of references.html#literal (validator.py)
        self._tests = compile_tests(schema.primitive_table)
        self._objects: dict[Structure, Ok] = {}  # published object checks
        self._resources: dict[str, Ok] = {}  # resource type → object check of its root structure
        self._lock = threading.RLock()
        self._names = itertools.count()

    def clean(self, resource: Any) -> bool:
        """True when ``resource`` has no issue at all (errors or warnings)."""
        if type(resource) is not dict:
            return False
        type_name = resource.get("resourceType")
        if type(type_name) is not str:
            return False
        check = self._resources.get(type_name)
        if check is None:
            struct = self._schema.resource(type_name)
            if struct is None:
                return False
            check = self._resources[type_name] = self._object_check(struct)
        return check(resource) and (type_name != "Bundle" or not bundle_issues(resource, type_name))

    def _object_check(self, struct: Structure) -> Ok:
        check = self._objects.get(struct)
        if check is None:
            with self._lock:
                check = self._objects.get(struct) or _Compilation(self).run(struct)
        return check


class _Compilation:
    """One batch: the source of every structure reachable from a root and not yet compiled, executed together."""

    def __init__(self, owner: FastPass) -> None:
        self.owner = owner
        self.namespace: dict[str, Any] = {"_never": _never, "_always": _always}
        self.names: dict[Structure, str] = {}
        self.queue: list[Structure] = []
        self.sources: list[str] = []
        self.fixups: list[tuple[dict[str, Ok], str, str]] = []  # (handlers, key, name of its generated function)

    def run(self, root: Structure) -> Ok:
        self.struct_name(root)
        while self.queue:
            self.sources.append(self.source(self.queue.pop()))
        exec("\n".join(self.sources), self.namespace)  # generated from the package tables only
        for handlers, key, function in self.fixups:
            handlers[key] = self.namespace[function]
        compiled: dict[Structure, Ok] = {struct: self.namespace[name] for struct, name in self.names.items()}
        self.owner._objects.update(compiled)  # publish the whole batch at once
        return compiled[root]

    def const(self, value: Any, hint: str = "c") -> str:
        name = f"{hint}{next(self.owner._names)}"
        self.namespace[name] = value
        return name

    def struct_name(self, struct: Structure) -> str:
        name = self.names.get(struct)
        if name is None:
            done = self.owner._objects.get(struct)
            name = self.names[struct] = self.const(done, "s") if done is not None else f"s{next(self.owner._names)}"
            if done is None:
                self.queue.append(struct)
        return name

    # -- source ---------------------------------------------------------------------------------------------------

    def source(self, struct: Structure) -> str:
        name, props = self.names[struct], struct.props
        handlers: dict[str, Ok] = {"resourceType": _always} if struct.is_resource else {}  # checked by ``clean``
        required = {key for _, keys in struct.required for key in keys}  # always present: tested first
        chain = sorted((key for key in props if key[0] != "_" and key not in _RARE), key=lambda k: k not in required)
        if len(chain) > CHAIN_MAX:
            chain = []
        lines = [f"def {name}(obj):", "    if type(obj) is not dict or not obj:", "        return False"]
        if struct.name == "Extension":  # a core extension: checked against its definition by the walk only
            lines += [f"    if {self.const(_core_url, 'core')}(obj):", "        return False"]
        lines.append("    for key, value in obj.items():")
        for n, key in enumerate(chain):
            lines.append(f"        {'elif' if n else 'if'} key == {key!r}:")
            lines.extend("            " + line for line in self.test(props[key], "value"))
        indent = "            " if chain else "        "
        lines += ["        else:"] if chain else []
        lines += [f"{indent}if not {self.const(handlers, 'h')}.get(key, _never)(value):", f"{indent}    return False"]
        for _, keys in struct.required:
            ordered = sorted(keys, key=lambda k: k[0] == "_")  # the plain key first: the one usually present
            lines += [f"    if {' and '.join(f'{k!r} not in obj' for k in ordered)}:", "        return False"]
        choices = {key: p.choice for key, p in props.items() if p.choice and p.kind != EXTENSION_OF}
        if choices:
            lines += [f"    if not {self.const(_one_per_choice(choices))}(obj):", "        return False"]
        pairs = tuple((key, "_" + key) for key, p in props.items() if p.kind == PRIMITIVE and p.array)
        if pairs:
            lines += [f"    if not {self.const(_same_lengths(pairs))}(obj):", "        return False"]
        lines.append("    return True")
        for key, prop in props.items():
            if key not in chain:
                function = f"{name}_{len(self.fixups)}"
                lines += [f"def {function}(value):", *("    " + line for line in self.test(prop, "value"))]
                lines.append("    return True")
                self.fixups.append((handlers, key, function))
        return "\n".join(lines)

    def test(self, prop: Prop, var: str) -> list[str]:
        """Statements returning False unless ``var`` is a valid value of ``prop`` (an array for repeating ones)."""
        if not prop.array:
            return [f"if not ({self.expression(prop, var)}):", "    return False"]
        return [
            f"if type({var}) is not list or not {var}:",
            "    return False",
            f"for item in {var}:",
            f"    if not ({self.expression(prop, 'item')}):",
            "        return False",
        ]

    def expression(self, prop: Prop, var: str) -> str:
        """A boolean expression: ``var`` is one valid (non-null) value of ``prop``."""
        if prop.kind == PRIMITIVE:
            test = self.owner._tests[prop.type_code]
            ok = self.const(test.ok, "ok")
            if prop.codes is not None:
                return f"{ok}({var}) and {var} in {self.const(prop.codes, 'codes')}"
            if test.int_least is not None:
                return f"type({var}) is int and {test.int_least} <= {var} <= {INT_MAX}"
            if test.fullmatch is not None:
                match = self.const(test.fullmatch, "match")
                return f'type({var}) is str and {var} != "" and {match}({var})'
            if test.memo is not None:
                return f"(type({var}) is str and {var} in {self.const(test.memo, 'memo')}) or {ok}({var})"
            return f"{ok}({var})"
        if prop.kind == RESOURCE:
            return f"{self.const(self.owner.clean, 'clean')}({var})"
        check = f"{self.struct_name(self.owner._schema.resolve(prop))}({var})"
        if prop.type_ref == "Attachment":
            return f"{check} and {self.const(attachment_ok, 'attachment')}({var})"
        if prop.system_codes is not None:
            return f"{check} and {self.const(_coded(prop), 'coded')}({var})"
        if prop.targets is not None or prop.type_code == "Reference":
            return f"{check} and {self.const(self.reference(prop.targets), 'ref')}({var})"
        return check

    def reference(self, targets: frozenset[str] | None) -> Ok:
        """No warning: a relative literal reference names a type the element allows (or is not relative)."""
        types = self.owner._schema.resource_types
        allowed = types if targets is None else targets & types
        match = self.owner._match_reference

        def ok(value: dict[str, Any]) -> bool:
            reference = value.get("reference")
            # When the pattern matches, its type is the text before the first "/".
            return type(reference) is not str or reference.partition("/")[0] in allowed or not match(reference)

        return ok


def _core_url(extension: dict[str, Any]) -> bool:
    url = extension.get("url")
    return type(url) is str and url.startswith(CORE)


def _always(value: Any) -> bool:
    return True


def _never(value: Any) -> bool:
    return False  # an unknown element


def _one_per_choice(choices: dict[str, str]) -> Ok:
    """At most one type of each choice element (``valueString`` and ``valueBoolean`` together are an issue)."""
    choice_of = choices.get

    def ok(obj: dict[str, Any]) -> bool:
        groups = [group for key in obj if (group := choice_of(key)) is not None]
        return len(groups) < 2 or len(set(groups)) == len(groups)

    return ok


def _same_lengths(pairs: tuple[tuple[str, str], ...]) -> Ok:
    """A primitive array and its ``_x`` array (when that is an array) have the same length."""

    def ok(obj: dict[str, Any]) -> bool:
        for key, partner_key in pairs:
            partner = obj.get(partner_key)
            if type(partner) is list and key in obj and len(partner) != len(obj[key]):
                return False
        return True

    return ok


def _coded(prop: Prop) -> Ok:
    """After the structure passed: a CodeableConcept with a coding from the value set (when it has codings) or a
    Coding from it."""
    codes, system_codes = prop.codes, prop.system_codes
    assert codes is not None and system_codes is not None
    concept = prop.type_code == "CodeableConcept"

    def ok(value: dict[str, Any]) -> bool:
        codings = value.get("coding") if concept else [value]
        if type(codings) is not list:
            return True
        found = False
        for coding in codings:
            if type(coding) is not dict or type(code := coding.get("code")) is not str:
                continue
            found = True
            system = coding.get("system")
            if (system, code) in system_codes or (system is None and code in codes):
                return True
        return not found

    return ok
