"""Content negotiation: what we read (Content-Type) and what we write (Accept, ``_format``).

Spec: https://hl7.org/fhir/R4/http.html#mime-type. JSON only for now; XML is answered 406/415 with an
OperationOutcome.
"""

from __future__ import annotations

from fhir_imaging.fhir.outcome import NotAcceptable, UnsupportedMediaType

FHIR_JSON = "application/fhir+json"
PLAIN_JSON = "application/json"
JSON_TYPES = frozenset({FHIR_JSON, PLAIN_JSON, "application/json+fhir", "text/json"})
USUAL_ACCEPT: dict[str | None, str] = {None: FHIR_JSON, "*/*": FHIR_JSON, FHIR_JSON: FHIR_JSON, PLAIN_JSON: PLAIN_JSON}
XML_TYPES = frozenset({"application/fhir+xml", "application/xml", "text/xml", "application/xml+fhir", "xml"})
FORMAT_ALIASES = {"json": FHIR_JSON, FHIR_JSON: FHIR_JSON, PLAIN_JSON: PLAIN_JSON, "application/json+fhir": FHIR_JSON}
FORMAT_REJECTED = {"xml", "html", "text/html", "ttl", "text/turtle", *XML_TYPES}


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def negotiate(accept: str | None, format_param: str | None) -> str:
    """The media type of the response, or NotAcceptable when the client only takes what we cannot write."""
    if format_param is None and accept in USUAL_ACCEPT:  # on every request: the common answers without parsing
        return USUAL_ACCEPT[accept]
    return _negotiate(accept, format_param)


def _negotiate(accept: str | None, format_param: str | None) -> str:
    if format_param:
        wanted = _media_type(format_param)
        if wanted in FORMAT_ALIASES:
            return FORMAT_ALIASES[wanted]
        reason = "XML is not supported" if wanted in FORMAT_REJECTED else "unknown format"
        raise NotAcceptable(f"_format={format_param}: {reason}; use _format=json", "_format")
    if not accept:
        return FHIR_JSON
    offered = []
    for part in accept.split(","):
        media_type = _media_type(part)
        quality = 1.0
        for parameter in part.split(";")[1:]:
            key, _, value = parameter.strip().partition("=")
            if key == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            offered.append(media_type)
    for media_type in offered:
        if media_type == PLAIN_JSON:
            return PLAIN_JSON
        if media_type in JSON_TYPES or media_type in ("*/*", "application/*"):
            return FHIR_JSON
    if not offered:
        return FHIR_JSON
    raise NotAcceptable(f"Accept: {accept}: only {FHIR_JSON} and {PLAIN_JSON} are served", "Accept")


def check_content_type(content_type: str | None) -> None:
    """Raise UnsupportedMediaType unless the request body is declared FHIR JSON (or JSON). A body without a
    Content-Type is refused too: a web page may send one to any server its visitor reaches ("simple" cross-site
    requests carry no Content-Type, or text/plain, form or multipart ones, and need no CORS permission)."""
    if not content_type:
        raise UnsupportedMediaType(f"The request body has no Content-Type: send it as {FHIR_JSON}", "Content-Type")
    media_type = _media_type(content_type)
    if media_type in JSON_TYPES:
        return
    if media_type in XML_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type: {content_type}: XML is not supported; send {FHIR_JSON}", "Content-Type"
        )
    raise UnsupportedMediaType(f"Content-Type: {content_type} is not supported; send {FHIR_JSON}", "Content-Type")
