"""``htmlChecks()``: the rules R4 sets for the XHTML of a narrative (``Narrative.div``), as one pure function.

Spec: https://hl7.org/fhir/R4/narrative.html#xhtml and the invariants txt-1 ("only the basic html formatting elements
and attributes …, <a> elements (either name or href), images and internally contained style attributes") and
txt-2 ("some non-whitespace content"), both written ``htmlChecks()`` in the definitions. What is allowed is what
HL7's reference validator allows (its lists of elements and attributes of HTML 4.0 chapters 7-12), so nothing it
accepts is refused here:

- well-formed XML whose root is a ``div`` in the XHTML namespace ``http://www.w3.org/1999/xhtml``;
- only the basic formatting elements (no ``script``, ``form``, ``iframe``, ``object``, ``head``, ``body``, ``link``,
  ``style`` …) and their attributes (no event attributes such as ``onclick``); ``xmlns`` declarations anywhere;
- no document type declaration and no entity but XML's five and the named characters of HTML 4 (``&nbsp;``);
  nothing is ever fetched or expanded beyond those (expat, no DTD);
- no ``javascript:`` (or ``vbscript:``) links or image sources: R4 forbids scripts in a narrative;

txt-2 (some non-whitespace content) is not enforced: four of HL7's own examples have an empty div.

``html_checks(div)`` returns the problems found (an empty list when the XHTML is acceptable); it stops at the first
``MAX_PROBLEMS``.
"""

from __future__ import annotations

from html.entities import name2codepoint
from xml.parsers import expat

XHTML_NS = "http://www.w3.org/1999/xhtml"
MAX_PROBLEMS = 10

ELEMENTS = frozenset(
    (
        "p",
        "br",
        "div",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "a",
        "span",
        "b",
        "em",
        "i",
        "strong",
        "small",
        "big",
        "tt",
        "dfn",
        "q",
        "var",
        "abbr",
        "acronym",
        "cite",
        "blockquote",
        "hr",
        "address",
        "bdo",
        "kbd",
        "sub",
        "sup",
        "ul",
        "ol",
        "li",
        "dl",
        "dt",
        "dd",
        "pre",
        "table",
        "caption",
        "colgroup",
        "col",
        "thead",
        "tr",
        "tfoot",
        "tbody",
        "th",
        "td",
        "code",
        "samp",
        "img",
        "map",
        "area",
    )
)
ATTRIBUTES = frozenset(
    (
        "title",
        "style",
        "class",
        "id",
        "lang",
        "xml:lang",
        "dir",
        "accesskey",
        "tabindex",
        "span",
        "width",
        "align",
        "valign",
        "char",
        "charoff",
        "abbr",
        "axis",
        "headers",
        "scope",
        "rowspan",
        "colspan",
    )
)
ELEMENT_ATTRIBUTES = frozenset(
    (
        "a.href",
        "a.name",
        "img.src",
        "img.border",
        "div.xmlns",
        "blockquote.cite",
        "q.cite",
        "a.charset",
        "a.type",
        "a.hreflang",
        "a.rel",
        "a.rev",
        "a.shape",
        "a.coords",
        "img.alt",
        "img.longdesc",
        "img.height",
        "img.width",
        "img.usemap",
        "img.ismap",
        "map.name",
        "area.shape",
        "area.coords",
        "area.href",
        "area.nohref",
        "area.alt",
        "table.summary",
        "table.width",
        "table.border",
        "table.frame",
        "table.rules",
        "table.cellspacing",
        "table.cellpadding",
        "pre.space",
        "td.nowrap",
    )
)
_LINKS = frozenset({"href", "src", "longdesc", "usemap", "cite"})
_SCRIPT_SCHEMES = ("javascript:", "vbscript:")
_XML_NS = "http://www.w3.org/XML/1998/namespace"
_SEPARATOR = " "  # between a namespace URI and a local name (neither holds a space)


class _Stop(Exception):
    """Enough problems, or a construct that must not be read further (a DTD)."""


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.depth = 0

    def problem(self, text: str) -> None:
        self.problems.append(text)
        if len(self.problems) >= MAX_PROBLEMS:
            raise _Stop

    def start(self, qualified: str, attributes: dict[str, str]) -> None:
        namespace, _, name = qualified.rpartition(_SEPARATOR)
        if self.depth == 0:
            if name != "div":
                self.problem(f"the narrative's root element must be a div, not <{name}>")
            if namespace != XHTML_NS:
                self.problem(f"the div must be in the XHTML namespace ({XHTML_NS}), not {namespace or 'none'!r}")
        elif namespace != XHTML_NS:
            self.problem(f"<{name}> is not in the XHTML namespace")
        self.depth += 1
        if name not in ELEMENTS:
            self.problem(f"<{name}> is not allowed in a narrative")
        for key, value in attributes.items():
            attr_namespace, _, attr = key.rpartition(_SEPARATOR)
            attr_name = f"xml:{attr}" if attr_namespace == _XML_NS else attr
            if attr_namespace not in ("", _XML_NS) or not (
                attr_name in ATTRIBUTES or f"{name}.{attr_name}" in ELEMENT_ATTRIBUTES
            ):
                self.problem(f"the attribute {attr_name!r} is not allowed on <{name}> in a narrative")
            elif attr_name in _LINKS and value.strip().lower().startswith(_SCRIPT_SCHEMES):
                self.problem(f"<{name} {attr_name}> must not hold a script")

    def end(self, qualified: str) -> None:
        self.depth -= 1

    def skipped(self, name: str, is_parameter: int) -> None:
        if is_parameter or name not in name2codepoint:
            self.problem(f"the entity &{name}; is not known")

    def doctype(self, *args: object) -> None:
        self.problem("a narrative must not hold a document type declaration")
        raise _Stop


_PLAIN_OPEN, _PLAIN_CLOSE = f'<div xmlns="{XHTML_NS}">', "</div>"


def _plain(div: str) -> bool:
    """A div of plain text (the usual generated narrative): no markup, entity or CDATA end inside, only printable
    characters and line breaks; such a div is acceptable without parsing it (a parser costs some 10 µs)."""
    if not (div.startswith(_PLAIN_OPEN) and div.endswith(_PLAIN_CLOSE)):
        return False
    text = div[len(_PLAIN_OPEN) : -len(_PLAIN_CLOSE)]
    if "<" in text or "&" in text or "]" in text:
        return False
    return text.isprintable() or text.replace("\n", "").replace("\t", "").replace("\r", "").isprintable()


def html_checks(div: str) -> list[str]:
    """The problems of ``div`` as the XHTML of a narrative (txt-1 and txt-2); [] when there is none."""
    if _plain(div):
        return []
    checker = _Checker()
    parser = expat.ParserCreate(namespace_separator=_SEPARATOR)
    parser.UseForeignDTD(True)  # undefined entities go to ``skipped`` (known HTML names are fine), never fetched
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = checker.start
    parser.EndElementHandler = checker.end
    parser.SkippedEntityHandler = checker.skipped
    parser.StartDoctypeDeclHandler = checker.doctype
    parser.ExternalEntityRefHandler = lambda *args: 1  # the foreign DTD: read nothing
    try:
        parser.Parse(div, True)
    except _Stop:
        return checker.problems
    except expat.ExpatError as exc:
        checker.problems.append(f"the narrative is not well-formed XHTML: {expat.ErrorString(exc.code)}")
        return checker.problems
    return checker.problems
