"""Cutting FHIRPath text at its top level (outside parentheses and string literals), for the few places that need
a FHIRPath's parts without evaluating it: the registry (``A.b | B.c``) and patch paths (``A.b.where(c = 'x.y')``).
"""

from __future__ import annotations

QUOTES = "'\"`"


def split_top_level(text: str, separator: str) -> list[str]:
    """The stripped parts of ``text`` between top-level ``separator`` characters (empty parts dropped)."""
    parts, depth, start, quote = [], 0, 0, ""
    for index, char in enumerate(text):
        if quote:
            if char == quote:
                quote = ""
        elif char in QUOTES:
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[start:index].strip())
            start = index + 1
    parts.append(text[start:].strip())
    return [part for part in parts if part]
