"""Settings, declared once as data: each is a command-line flag and a ``FHIR_IMAGING_<NAME>`` variable.

A flag wins over the environment, the environment over the default. A secret (``Setting.secret``) is read from its
variable only and has no flag: a command line shows in ``ps`` and in shell histories. The README's table lists the
same settings (tests/test_docs.py keeps them in step).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

ENV_PREFIX = "FHIR_IMAGING_"


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _size(text: str) -> int:
    """``16777216``, ``16MiB``, ``512KiB``, ``1GiB`` → bytes."""
    units = {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "kb": 1000, "mb": 1000**2, "gb": 1000**3}
    lowered = text.strip().lower()
    for unit, factor in units.items():
        if lowered.endswith(unit):
            return int(float(lowered[: -len(unit)]) * factor)
    return int(lowered)


def _viewer_url(text: str) -> str:
    """A viewer address template: absolute http(s), so that the study browser never makes a ``javascript:`` link of
    it; ``{study_uid}`` is where the Study Instance UID goes."""
    lowered = text.strip().lower()
    if not lowered.startswith(("http://", "https://")):
        raise ValueError(f"not an http:// or https:// address: {text!r}")
    if "{study_uid}" not in text:
        raise ValueError(f"has no {{study_uid}} placeholder: {text!r}")
    return text.strip()


@dataclass(frozen=True, slots=True)
class Setting:
    name: str  # attribute name; the flag is --name-with-dashes, the variable FHIR_IMAGING_NAME
    default: Any
    parse: Callable[[str], Any]
    help: str
    choices: tuple[str, ...] | None = None
    secret: bool = False  # environment only: no flag (``serve --help`` names the variable), never printed or logged
    repeated: bool = False  # a list: the flag may be given several times, the variable holds values separated by spaces

    @property
    def flag(self) -> str:
        """The command-line flag (a secret has none: the parser leaves it out)."""
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "127.0.0.1", str, "interface to listen on (0.0.0.0 for every interface)"),
    Setting("port", 8080, int, "TCP port to listen on"),
    Setting(
        "database",
        "sqlite:///fhir-imaging.db",
        str,
        "database URL: sqlite:///path.db (relative to the working directory; sqlite:////abs/path.db) "
        "or postgresql://user:password@host:port/dbname",
    ),
    Setting("workers", 1, int, "number of server processes"),
    Setting(
        "pool_size",
        20,
        int,
        "PostgreSQL: most database connections each server process opens (workers × machines × this must stay "
        "below the server's max_connections)",
    ),
    Setting(
        "transaction_pooler",
        False,
        _boolean,
        "PostgreSQL is reached through a pooler in transaction mode (PgBouncer pool_mode=transaction): no "
        "server-side prepared statements, the statement timeout set in each transaction",
    ),
    Setting(
        "no_migrate",
        False,
        _boolean,
        "never change the database schema: refuse to start when it is behind this server's (run `fhir-imaging "
        "migrate` first)",
    ),
    Setting(
        "database_replica",
        (),
        str,
        "PostgreSQL: URL of a streaming read replica of --database (repeat the flag for several; the variable holds "
        "them separated by spaces): reads, searches and histories go to a replica that has replayed the client's own "
        "writes, everything else to the primary (see README, Scaling out)",
        repeated=True,
    ),
    Setting(
        "replica_max_lag",
        5.0,
        float,
        "PostgreSQL: seconds a read replica may trail the primary; one that trails more, or cannot be reached, is "
        "skipped (reads go to the primary) until it catches up",
    ),
    Setting(
        "replica_check_interval",
        1.0,
        float,
        "PostgreSQL: seconds between two checks of the read replicas (how far each trails, whether it answers)",
    ),
    Setting(
        "public_url",
        None,
        str,
        "base URL written into Location, fullUrl and Bundle links, e.g. https://fhir.example.org/baseR4 "
        "(default: from the request's scheme and Host)",
    ),
    Setting(
        "enforce_references",
        False,
        _boolean,
        "refuse (400) a write whose literal references to this server name no existing resource",
    ),
    Setting("max_body_size", 16 * 1024**2, _size, "largest request body accepted, in bytes (or 512KiB, 16MiB…)"),
    Setting("default_count", 20, int, "page size of searches and histories when _count is not given"),
    Setting("max_count", 1000, int, "largest _count honoured (larger values are reduced to it)"),
    Setting("max_bundle_entries", 10_000, int, "most entries a batch or transaction Bundle may hold (more: 413)"),
    Setting(
        "bundle_workers",
        0,
        int,
        "processes each server process starts to validate and index the resources of large batch and transaction "
        "Bundles, before their database transaction (0: none, every Bundle is processed in the server process)",
    ),
    Setting(
        "bundle_workers_from",
        20,
        int,
        "with bundle workers: the fewest resources to write a Bundle must hold to go through them (smaller ones "
        "cost less in the server process)",
    ),
    Setting(
        "bundle_workers_timeout",
        60.0,
        float,
        "with bundle workers: seconds a Bundle waits for them; then (or when a worker dies) the Bundle is processed "
        "in the server process and the workers are started afresh",
    ),
    Setting(
        "sqlite_synchronous",
        "full",
        str,
        "SQLite durability: full = every acknowledged write survives a crash of the process or the machine; "
        "normal = survives a crash of the process, may lose the last writes on power loss (faster)",
        ("full", "normal"),
    ),
    Setting("max_search_parameters", 100, int, "most parameters one search may have (more: 400)"),
    Setting(
        "max_search_values",
        200,
        int,
        "most values one search may have, every parameter's comma-separated (OR-ed) values together (more: 400)",
    ),
    Setting("max_sort_keys", 5, int, "most keys of _sort (more: 400)"),
    Setting("max_chain_depth", 4, int, "most links of a chained search parameter (subject.organization.name has 2)"),
    Setting("max_has_depth", 2, int, "most levels of _has nested in _has"),
    Setting(
        "max_include",
        1000,
        int,
        "most resources _include and _revinclude add to one page of a search (the rest are left out, with a warning)",
    ),
    Setting(
        "header_timeout",
        10.0,
        float,
        "seconds a connection has to send a complete request line and headers, from connecting or from its "
        "previous response (then it is closed; 408 when part of a request had arrived)",
    ),
    Setting("body_timeout", 120.0, float, "seconds a request body may take to arrive (then 408)"),
    Setting("keep_alive_timeout", 5.0, float, "seconds an idle connection is kept open for a next request"),
    Setting(
        "max_header_size",
        64 * 1024,
        _size,
        "largest request line plus headers, in bytes (over: 414 when the URL alone is, else 431; URLs over 65535 "
        "bytes are refused whatever this says)",
    ),
    Setting("max_headers", 100, int, "most header fields a request may carry (more: 431)"),
    Setting(
        "max_connections",
        1000,
        int,
        "most open connections per server process; more are closed as soon as they are accepted",
    ),
    Setting(
        "search_timeout",
        30.0,
        float,
        "seconds one database statement of a search may run (then 400 too-costly); PostgreSQL: every statement "
        "but schema migrations",
    ),
    Setting(
        "max_bundle_read_resources",
        10_000,
        int,
        "most resources the GET entries of one batch or transaction may return together (past it: 413 for the "
        "entries left)",
    ),
    Setting(
        "cors_origin",
        None,
        str,
        "web origins allowed to use the API from a browser (CORS), comma-separated, e.g. https://viewer.example.org "
        "(default: none, no cross-origin access)",
    ),
    Setting(
        "auth_issuer",
        None,
        str,
        "OpenID provider whose JWT access tokens (SMART on FHIR scopes) every request must carry, e.g. "
        "https://idp.example.org/realms/imaging; also the iss an introspection answer must name when it names one "
        "(default: none, no authorization: loopback only)",
    ),
    Setting(
        "auth_audience",
        None,
        str,
        "the aud a token must name (default: --public-url, else http://HOST:PORT/baseR4)",
    ),
    Setting(
        "auth_clients",
        None,
        str,
        "JSON file of the backend clients (SMART Backend Services) this server issues access tokens to at "
        "BASE/auth/token: client_id, scope, jwks or jwks_url each (default: none, no token endpoint)",
    ),
    Setting(
        "auth_token_lifetime",
        300,
        int,
        "seconds an access token from the built-in token endpoint is valid",
    ),
    Setting(
        "auth_introspection_url",
        None,
        str,
        "token introspection endpoint (RFC 7662) of the authorization server: bearer tokens that are not JWTs (every "
        "token, without --auth-issuer) are checked by asking it, e.g. "
        "https://idp.example.org/realms/imaging/protocol/openid-connect/token/introspect (default: none); needs "
        "--auth-introspection-client-id and FHIR_IMAGING_INTROSPECTION_SECRET",
    ),
    Setting(
        "auth_introspection_client_id",
        None,
        str,
        "client id this server authenticates to --auth-introspection-url with (HTTP Basic, client_secret_basic); its "
        "secret is read from FHIR_IMAGING_INTROSPECTION_SECRET only",
    ),
    Setting(
        "introspection_secret",
        None,
        str,
        "client secret of --auth-introspection-client-id: from the environment only, never a flag (a command line "
        "shows in ps), never logged",
        secret=True,
    ),
    Setting("tls_cert", None, str, "PEM certificate (chain) to serve HTTPS with; needs --tls-key"),
    Setting("tls_key", None, str, "PEM private key of --tls-cert"),
    Setting(
        "allow_anonymous",
        False,
        _boolean,
        "serve on a non-loopback --host without --auth-issuer or --auth-introspection-url (anyone who reaches the "
        "port reads and writes everything)",
    ),
    Setting(
        "audit_log",
        None,
        str,
        "file to append an AuditEvent of every FHIR interaction to, allowed or refused, one per line (NDJSON, "
        "created readable by its owner only; default: none, no audit trail)",
    ),
    Setting(
        "export_dir",
        "fhir-imaging-export",
        str,
        "folder the NDJSON files of bulk exports ($export) are written to, one subfolder per export (relative to the "
        "working directory)",
    ),
    Setting(
        "export_ttl",
        7200.0,
        float,
        "seconds the files of a finished bulk export are kept (then removed, and the export forgotten)",
    ),
    Setting(
        "export_lease",
        30.0,
        float,
        "seconds a server process holds a running bulk export without renewing it (it renews after every 1,000 "
        "resources); when the process dies, another takes the export over after this long",
    ),
    Setting(
        "export_file_size",
        256 * 1024**2,
        _size,
        "largest NDJSON file of a bulk export, in bytes (a type's resources go on in a next file)",
    ),
    Setting(
        "max_patch_operations",
        1000,
        int,
        "most operations one JSON Patch or FHIRPath Patch may hold (more: 413); a patched resource may not grow past "
        "--max-body-size (413)",
    ),
    Setting(
        "fhirpath_max_length",
        500,
        int,
        "longest FHIRPath a client may send (a FHIRPath Patch path with its where() criteria), in characters (more: "
        "422; fhirpathpy's parser takes 0.4 s on 500 characters, and time that grows with the square of the length)",
    ),
    Setting(
        "fhirpath_max_items",
        100_000,
        int,
        "most items the where() criteria of one FHIRPath Patch may take in and give back, all steps together; a "
        "string counts one item per 100 characters (past it: 422)",
    ),
    Setting(
        "fhirpath_timeout",
        0.5,
        float,
        "seconds the where() criteria and paths of one FHIRPath Patch may take to evaluate (past it: 422)",
    ),
    Setting(
        "viewer_url",
        None,
        _viewer_url,
        "address of a DICOM viewer for one study, {study_uid} standing for its Study Instance UID, e.g. "
        "'https://viewer.example/viewer?StudyInstanceUIDs={study_uid}': the study browser at /app/ links each study "
        "to it (default: none, no viewer links)",
    ),
    Setting(
        "app_client_id",
        None,
        str,
        "client id of the study browser at /app/ at the OpenID provider of --auth-issuer (a public client: "
        "authorization code with PKCE, redirect URI BASE-ORIGIN/app/): the page signs its user in with it (SMART "
        "standalone launch) and sends the access token with every request (default: none, no sign-in)",
    ),
    Setting(
        "app_scope",
        "openid fhirUser user/*.rs",
        str,
        "scopes the study browser asks for when it signs in (space-separated): it only reads and searches",
    ),
    Setting("log_level", "info", str, "log level of the server", ("debug", "info", "warning", "error")),
)
BY_NAME = {setting.name: setting for setting in SETTINGS}


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    database: str = "sqlite:///fhir-imaging.db"
    workers: int = 1
    pool_size: int = 20
    database_replica: tuple[str, ...] = ()
    replica_max_lag: float = 5.0
    replica_check_interval: float = 1.0
    transaction_pooler: bool = False
    no_migrate: bool = False
    public_url: str | None = None
    enforce_references: bool = False
    max_body_size: int = 16 * 1024**2
    default_count: int = 20
    max_count: int = 1000
    max_bundle_entries: int = 10_000
    bundle_workers: int = 0
    bundle_workers_from: int = 20
    bundle_workers_timeout: float = 60.0
    sqlite_synchronous: str = "full"
    max_search_parameters: int = 100
    max_search_values: int = 200
    max_sort_keys: int = 5
    max_chain_depth: int = 4
    max_has_depth: int = 2
    max_include: int = 1000
    header_timeout: float = 10.0
    body_timeout: float = 120.0
    keep_alive_timeout: float = 5.0
    max_header_size: int = 64 * 1024
    max_headers: int = 100
    max_connections: int = 1000
    search_timeout: float = 30.0
    max_bundle_read_resources: int = 10_000
    cors_origin: str | None = None
    auth_issuer: str | None = None
    auth_audience: str | None = None
    auth_clients: str | None = None
    auth_token_lifetime: int = 300
    auth_introspection_url: str | None = None
    auth_introspection_client_id: str | None = None
    introspection_secret: str | None = field(default=None, repr=False)  # never shown in a repr (logs, tracebacks)
    tls_cert: str | None = None
    tls_key: str | None = None
    allow_anonymous: bool = False
    audit_log: str | None = None
    export_dir: str = "fhir-imaging-export"
    export_ttl: float = 7200.0
    export_lease: float = 30.0
    export_file_size: int = 256 * 1024**2
    max_patch_operations: int = 1000
    fhirpath_max_length: int = 500
    fhirpath_max_items: int = 100_000
    fhirpath_timeout: float = 0.5
    viewer_url: str | None = None
    app_client_id: str | None = None
    app_scope: str = "openid fhirUser user/*.rs"
    log_level: str = "info"


def load_settings(flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags (already parsed; None = not given; never a secret), then the environment, then the
    defaults."""
    flags = flags or {}
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if not setting.secret and flags.get(setting.name) is not None:
            value = tuple(flags[setting.name]) if setting.repeated else flags[setting.name]
        elif setting.env in environ:
            try:
                text = environ[setting.env]
                value = tuple(map(setting.parse, text.split())) if setting.repeated else setting.parse(text)
            except ValueError as exc:
                raise ValueError(f"{setting.env}: {exc}") from None
        else:
            value = setting.default
        if setting.choices and value not in setting.choices:
            raise ValueError(f"{setting.flag} must be one of {', '.join(setting.choices)}, not {value!r}")
        values[setting.name] = value
    return Settings(**values)


def to_environ(settings: Settings) -> dict[str, str]:
    """The variables that reproduce ``settings`` in another process (e.g. a worker), secrets included: the
    environment is how a secret reaches this process in the first place."""
    out = {}
    for item in fields(settings):
        value = getattr(settings, item.name)
        if BY_NAME[item.name].repeated:
            out[BY_NAME[item.name].env] = " ".join(value)
        elif value is not None:
            out[BY_NAME[item.name].env] = str(value)
    return out


def usable_cores(limit: int) -> int:
    """The cores this process may use (its CPU affinity on Linux), between 1 and ``limit``: the default of the
    commands that spread work over processes."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(limit, cores))
