"""The shape of a QIDO-RS answer, checked before anything reads it: a JSON array of DICOM JSON datasets, each an
object of tags (8 hex digits) to attributes (``{"vr": ..., "Value": [...]}``), each holding the UID of its level.

Pure functions; a fault is a ``MalformedAnswer`` whose message says where (item, tag) and what, never the values
(they are patient data). Spec: DICOM PS3.18 F.2 (the DICOM JSON model), PS3.5 §9 (UIDs), §6.2 (VRs).
"""

from __future__ import annotations

import warnings
from string import hexdigits
from typing import Any

from pydicom import Dataset
from pydicom.valuerep import VR

MAX_SEQUENCE_DEPTH = 8  # nested sequences deeper than this are refused (QIDO-RS answers need one level at most)
MAX_UID_LENGTH = 64
KNOWN_VRS = frozenset(vr.value for vr in VR)
_UID_CHARACTERS = frozenset("0123456789.")


class MalformedAnswer(ValueError):
    """A QIDO-RS answer that is not what the standard says; the message names the fault."""


def kind(value: Any) -> str:
    """The JSON name of ``value``'s type, for messages."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


def is_uid(value: Any) -> bool:
    """A DICOM UID: digits and dots, at most 64 characters (and so safe in a URL path)."""
    return isinstance(value, str) and 0 < len(value) <= MAX_UID_LENGTH and set(value) <= _UID_CHARACTERS


def tag_text(tag: str) -> str:
    return f"({tag[:4]},{tag[4:]})".upper()


def _is_tag(key: Any) -> bool:
    return isinstance(key, str) and len(key) == 8 and all(c in hexdigits for c in key)


def check_dataset(item: Any, where: str, depth: int = 0) -> None:
    """``MalformedAnswer`` unless ``item`` is a DICOM JSON dataset (sequences checked down to
    ``MAX_SEQUENCE_DEPTH``)."""
    if not isinstance(item, dict):
        raise MalformedAnswer(f"{where} is {kind(item)}, not a DICOM JSON dataset (an object)")
    for key, attribute in item.items():
        if not _is_tag(key):
            raise MalformedAnswer(f"{where} has a key that is not a DICOM tag (8 hex digits)")
        at = f"attribute {tag_text(key)} of {where}"
        if not isinstance(attribute, dict):
            raise MalformedAnswer(f"{at} is {kind(attribute)}, not an object")
        if attribute.get("vr") not in KNOWN_VRS:
            raise MalformedAnswer(f"{at} has no valid 'vr' (a DICOM value representation such as UI)")
        values = attribute.get("Value", [])
        if not isinstance(values, list):
            raise MalformedAnswer(f"{at}: 'Value' is {kind(values)}, not an array")
        if attribute["vr"] == "SQ":
            if depth >= MAX_SEQUENCE_DEPTH:
                raise MalformedAnswer(f"{at}: sequences nested deeper than {MAX_SEQUENCE_DEPTH} levels")
            for number, nested in enumerate(values, 1):
                check_dataset(nested, f"item {number} of {at}", depth + 1)
        elif any(isinstance(value, list | dict) for value in values) and attribute["vr"] != "PN":
            raise MalformedAnswer(f"{at}: a value is an array or an object")


def check_page(answer: Any, uid_tag: str, uid_name: str) -> list[tuple[str, dict[str, Any]]]:
    """The (UID, dataset) pairs of one page of a QIDO-RS answer; ``MalformedAnswer`` for anything else."""
    if not isinstance(answer, list):
        raise MalformedAnswer(f"the answer is {kind(answer)}, not an array of DICOM JSON datasets")
    page = []
    for number, item in enumerate(answer, 1):
        where = f"item {number}"
        check_dataset(item, where)
        values = item.get(uid_tag, {}).get("Value") or [None]
        if not is_uid(values[0]):
            raise MalformedAnswer(f"{where} has no valid {uid_name} {tag_text(uid_tag)} (digits and dots, 1 to 64)")
        page.append((values[0], item))
    return page


def to_dataset(attributes: dict[str, Any]) -> Dataset:
    """``attributes`` (checked by ``check_dataset``) as a pydicom Dataset; ``MalformedAnswer`` naming the first
    attribute pydicom cannot read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return Dataset.from_json(attributes)
        except Exception:  # pydicom raises many types for values of the wrong kind
            pass
        for tag, attribute in attributes.items():
            try:
                Dataset.from_json({tag: attribute})
            except Exception as exc:
                raise MalformedAnswer(
                    f"attribute {tag_text(tag)} cannot be read as DICOM JSON ({type(exc).__name__})"
                ) from None
    raise MalformedAnswer("the attributes cannot be read as DICOM JSON")


def count_value(item: dict[str, Any], tag: str) -> int | None:
    """A count attribute (IS or US) as an int, or None when absent or not a count."""
    values = item.get(tag, {}).get("Value") or [None]
    value = values[0]
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit() and len(value) <= 12:
        return int(value.strip())
    return None
