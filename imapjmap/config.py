"""Configuration: frozen dataclasses read once from TOML (stdlib ``tomllib``).

Every key is optional except ``imap.host``; defaults are the ones documented in
``config.example.toml``.  Validation errors are :class:`~imapjmap.errors.ConfigError` whose
message names the key path and the problem (``imap.security: must be one of tls, starttls,
none``).  Unknown keys and tables are errors too: a typo must not silently fall back to a
default.  Tests derive variants with :func:`dataclasses.replace`.

Loading (:func:`load_config` for a file, :func:`parse_config` for parsed TOML):

1. One generic walker checks every table against the dataclass fields and their type hints:
   ``bool`` wants a TOML boolean, ``int`` an integer (a boolean is not an integer), ``float``
   an integer or float, ``str`` a string, ``Literal[...]`` one of its strings, and
   ``X | None`` an ``X`` (TOML has no null: leave the key out instead).
2. Ranges follow from the field: ``port`` is 1-65535; other integers are at least 1 and the
   ``limits`` at least their RFC 8620 §2 suggested minimum; numbers of seconds are finite and
   positive (``auth.credential_cache_seconds`` may be 0: no caching, and
   ``limits.concurrent_request_wait_seconds`` 0: no waiting); strings are not empty.
3. An array of tables (``[[submission.identities]]``) is a tuple of dataclasses, each entry
   checked like a table (paths such as ``submission.identities[0].email``); a field
   without a default is required in each entry.  An array of strings
   (``push.allowed_url_prefixes``, ``server.trusted_proxies``, ``server.cors_origins``)
   is a tuple of ``str``, each item checked like a string key (paths such as
   ``push.allowed_url_prefixes[0]``).
4. A few keys have a shape of their own: ``server.listen`` is ``host:port`` (an IPv6 address
   in brackets), ``server.base_url`` an absolute http(s) URL (a trailing ``/`` is stripped;
   when only ``listen`` is given it defaults to ``http://<listen>``, and it is required
   when ``listen`` is ``0.0.0.0`` or ``[::]``, which no client can reach),
   ``server.log_level`` one of debug, info, warning, error, ``server.log_format`` text or
   json, ``server.trusted_proxies`` entries an IP address or CIDR network,
   ``server.cors_origins`` entries a web origin (``scheme://host[:port]``, kept
   lower-case), and the upstream hosts are a host name or IP address without a port,
   ``submission.default_domain`` a domain name and an identity's ``email`` an address
   (``*@domain`` allowed).
5. ``[[upstreams]]`` entries (several mail providers, chosen by the login's domain:
   :meth:`Config.upstream_for`) take the same tables as the top level's default upstream
   ([imap], [smtp], [sieve]), checked as those are (``upstreams[1].imap.host`` as
   ``imap.host``);
   a domain may be in one entry only, names are unique.  Without [imap] beside them there
   is no default upstream (``Config.default_upstream`` False).
6. Every problem found is reported, joined by ``; ``.  A missing file or invalid TOML is a
   ConfigError naming the file (tomllib's message carries the line and column).

Risky but legal settings (plaintext IMAP/SMTP to a non-loopback host, unverified certificates,
a plain-http ``base_url`` for a non-loopback host) are not errors: :func:`config_warnings`
lists them and the CLI logs them at start.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import date, datetime, time
from pathlib import Path
from types import UnionType
from typing import Any, Final, Literal, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from imapjmap.errors import ConfigError
from imapjmap.jmap.limits import DEFAULT_MAX_PROPERTIES, MAX_FILTER_DEPTH

GMAIL_PROFILE_URL: Final = "https://gmail.googleapis.com/gmail/v1/users/me/profile"
Security = Literal["tls", "starttls", "none"]
GmailMode = Literal["auto", "on", "off"]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: str = "127.0.0.1:8080"  # host:port; [v6]:port for IPv6
    base_url: str = "http://127.0.0.1:8080"  # absolute URLs in the session resource
    log_level: str = "info"  # debug | info | warning | error
    log_format: str = "text"  # text (one line a record) | json (one JSON object a line)
    # built-in TLS: PEM certificate chain and private key, re-read on SIGHUP (both or neither)
    tls_certificate: str | None = None
    tls_key: str | None = None
    header_timeout: float = 10.0  # seconds for a request's headers, from its first byte
    body_timeout: float = 30.0  # seconds a request body may stall (no byte) before a 408
    max_connections_per_address: int = 100  # open connections from one client address
    # reverse proxies (addresses or CIDR networks) whose X-Forwarded-For is believed
    trusted_proxies: tuple[str, ...] = ()
    # browser origins (scheme://host[:port]) given credentialed CORS; others get "*"
    cors_origins: tuple[str, ...] = ()
    # processes serving listen together (SO_REUSEPORT), to use more than one core; more
    # than one are several instances on one cache, so they need cluster.url
    workers: int = 1

    @property
    def host(self) -> str:
        host, _, _ = self.listen.rpartition(":")
        return host.strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


@dataclass(frozen=True, slots=True)
class ImapConfig:
    host: str = "127.0.0.1"
    port: int = 993
    security: Security = "tls"
    verify_certificates: bool = True  # verify the upstream certificate and host name
    ca_file: str | None = None  # extra CA bundle (PEM) to trust, e.g. a private CA
    pool_size: int = 4  # IMAP connections per account at most
    searches_per_account: int = 1  # UID SEARCHes one account may have running upstream at once
    connect_timeout: float = 10.0  # seconds: TCP + TLS + greeting
    command_timeout: float = 60.0  # seconds for any one command
    idle_timeout: float = 300.0  # seconds an unused pooled connection is kept open
    gmail: GmailMode = "auto"  # Gmail bridge mode: "auto" = when the server has X-GM-EXT-1


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str = "127.0.0.1"
    port: int = 587
    security: Security = "starttls"
    verify_certificates: bool = True
    ca_file: str | None = None
    auth: Literal["user", "none"] = "user"  # "user": AUTH with the JMAP login's credentials
    timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    """One identity offered to the user ``username`` (RFC 8621 §6), not deletable by them."""

    username: str  # the login (IMAP username) the identity belongs to
    email: str  # the From address; "*@example.org" allows any address at that domain
    name: str = ""  # display name
    text_signature: str = ""
    html_signature: str = ""


@dataclass(frozen=True, slots=True)
class SubmissionConfig:
    """Identities and the addresses a user may send from (Identity, EmailSubmission)."""

    default_domain: str | None = None  # login "bob" -> default identity bob@<default_domain>
    identities_any_from: bool = False  # True: any From / MAIL FROM / Identity address
    identities: tuple[IdentityConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class CacheConfig:
    path: str = "imapjmap-cache.sqlite3"  # SQLite file; ":memory:" for a throw-away cache
    changes_retention_days: int = 30  # tombstones older than this are purged
    readers: int = 4  # read-only connections serving the JMAP methods' reads
    readers_per_account: int = 1  # of them one account may use at once (at most readers)
    # processes for the reads whose work is mostly Python (a big filter or sort); 0: none,
    # such reads run on the reader threads and share the event loop's GIL
    read_processes: int = 2
    # a read transaction running longer is rolled back and its method call fails
    max_transaction_seconds: float = 5.0
    # a PostgreSQL database instead of the SQLite file (several instances share it); its
    # password comes from the environment (PGPASSWORD, ~/.pgpass) or password_file
    url: str | None = None
    password_file: str | None = None


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """The RFC 8620 §2 core capability limits, advertised in the session and enforced;
    then the bounds on one query's filter and sort (no session field: enforced only)."""

    max_size_upload: int = 50_000_000
    max_concurrent_upload: int = 4
    max_size_request: int = 10_000_000
    max_concurrent_requests: int = 8
    # seconds a request over max_concurrent_requests waits for a slot before the limit
    # error (0: refused at once), and how many of one account's requests may wait (64:
    # 50 clients of one account, each with a request in flight, are all served)
    concurrent_request_wait_seconds: float = 5.0
    max_waiting_requests: int = 64
    max_calls_in_request: int = 32
    max_objects_in_get: int = 1000
    max_objects_in_set: int = 1000
    max_filter_conditions: int = 100  # operators, condition properties and list items
    max_filter_depth: int = 10  # nesting of FilterOperators; at most MAX_FILTER_DEPTH
    max_filter_string_length: int = 1000  # characters of one string in a filter
    max_sort_comparators: int = 10
    max_search_terms: int = 5  # distinct text/body/header conditions of one Email/query
    max_properties: int = DEFAULT_MAX_PROPERTIES  # distinct entries of a /get's properties
    # octets one account's uploads (kept 24 hours after their last use) may take together
    max_upload_bytes_per_account: int = 200_000_000


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """How long a verified login is remembered (in memory only, as a salted hash), and
    where the user of an HTTP Bearer token is found."""

    credential_cache_seconds: float = 300.0
    # HTTP Bearer logins (XOAUTH2 upstream): where the token's user is looked up (Gmail
    # API users.getProfile; any JSON with "emailAddress" or "email" works)
    bearer_profile_url: str = GMAIL_PROFILE_URL
    # failed logins the proxy lets through to the IMAP server per client address and per
    # username within the given seconds; more get HTTP 429 without asking it
    failed_logins_per_address: int = 20
    failed_logins_per_address_seconds: float = 300.0
    failed_logins_per_username: int = 5
    failed_logins_per_username_seconds: float = 300.0
    # seconds a push token (the credential in the session's eventSourceUrl and WebSocket
    # url, for browsers) stays valid for opening a stream; each session fetch gives a new one
    push_token_seconds: float = 43200.0
    # file holding the key that signs push tokens (at least 32 bytes); unset: a random key
    # per process.  Instances behind one load balancer need the same key.
    push_token_key_file: str | None = None


@dataclass(frozen=True, slots=True)
class SieveConfig:
    """ManageSieve (RFC 5804), for VacationResponse and SieveScript; the login, the
    certificate checks and the timeouts are IMAP's."""

    enabled: bool = True  # false: never look for ManageSieve (no vacation, no filters)
    host: str | None = None  # default: imap.host
    port: int = 4190
    # default: "none" when imap.security is "none", else "starttls"
    security: Security | None = None

    def where(self, imap: ImapConfig) -> tuple[str, int, Security]:
        """(host, port, security) of the ManageSieve server of an account on ``imap``."""
        security = self.security or ("none" if imap.security == "none" else "starttls")
        return self.host or imap.host, self.port, security


@dataclass(frozen=True, slots=True)
class PushConfig:
    """Push (RFC 8620 §7): the upstream poll without NOTIFY, and PushSubscription URLs."""

    # URLs starting with one of these are always accepted as PushSubscription urls (e.g. a
    # push gateway on the local network); others must be https:// to a public address
    allowed_url_prefixes: tuple[str, ...] = ()
    poll_interval: float = 60.0  # seconds between full refreshes when NOTIFY is missing
    # seconds between the watcher's LIST-STATUS comparisons when NOTIFY is missing, or
    # between its refreshes when NOTIFY is there (0: off; NOTIFY re-armed every 240 s)
    status_interval: float = 2.0
    max_subscriptions: int = 20  # PushSubscriptions per account


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Several instances sharing one cache: their coordinator."""

    # postgresql://host/db (the password from PGPASSWORD or ~/.pgpass, not here): locks and
    # push between the instances; unset: the cache's PostgreSQL (cache.url), else this
    # instance shares its cache with nobody
    url: str | None = None
    # seconds a request waits for another instance's sync of its account before answering
    # from the cache as that sync left it
    sync_wait: float = 10.0
    # seconds between attempts to take over a watcher or a delivery whose instance died
    takeover_interval: float = 1.0


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Prometheus metrics at ``/metrics``."""

    enabled: bool = True
    # host:port of a listener of their own (e.g. 127.0.0.1:9464): then /metrics is served
    # there only, not on server.listen
    listen: str | None = None


DEFAULT_UPSTREAM: Final = "default"


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """One mail provider among several (``[[upstreams]]``): the servers of the logins whose
    domain (``alice@example.org``: example.org) is one of ``domains``.  An entry takes the
    same upstream tables as the top level, whose own [imap], [smtp] and [sieve] are the
    default upstream, for every other login."""

    domains: tuple[str, ...]  # "example.org" (exactly) or "*.example.org" (its subdomains)
    imap: ImapConfig
    name: str = ""  # in logs, /readyz and `imapjmap accounts`; default: the first domain
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    # ManageSieve of this entry's logins; without it, on the entry's IMAP host
    sieve: SieveConfig = field(default_factory=SieveConfig)

    def match(self, domain: str) -> int:
        """How closely ``domain`` (lower case) is one of ours: 0 not at all, else the length
        of the matching entry, an exact domain beating every pattern."""
        best = 0
        for entry in self.domains:
            if entry == domain:
                return 1_000
            if entry.startswith("*.") and domain.endswith(entry[1:]):
                best = max(best, len(entry))
        return best


@dataclass(frozen=True, slots=True)
class Config:
    imap: ImapConfig = field(default_factory=ImapConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)
    push: PushConfig = field(default_factory=PushConfig)
    sieve: SieveConfig = field(default_factory=SieveConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    upstreams: tuple[UpstreamConfig, ...] = ()
    # whether [imap] and [smtp] serve the logins no upstreams entry claims (False: there is
    # no [imap] beside the [[upstreams]] entries, and such logins are refused)
    default_upstream: bool = True

    @property
    def default(self) -> UpstreamConfig | None:
        """The top-level [imap], [smtp] and [sieve] as an upstream; None without a default."""
        if not self.default_upstream:
            return None
        return UpstreamConfig((), self.imap, DEFAULT_UPSTREAM, self.smtp, self.sieve)

    def all_upstreams(self) -> tuple[UpstreamConfig, ...]:
        """The default (when there is one) and then each [[upstreams]] entry."""
        default = self.default
        return (default, *self.upstreams) if default is not None else self.upstreams

    def upstream_for(self, login: str) -> UpstreamConfig | None:
        """The upstream serving ``login``: the entry naming its domain (an exact domain
        before a pattern, a longer pattern before a shorter), else the default, else None.
        A login without ``@`` has no domain: the default's."""
        _, at, domain = login.rpartition("@")
        domain = domain.rstrip(".").lower() if at else ""
        best, chosen = 0, None
        for entry in self.upstreams if domain else ():
            score = entry.match(domain)
            if score > best:
                best, chosen = score, entry
        return chosen if chosen is not None else self.default

    def upstream_named(self, name: str) -> UpstreamConfig | None:
        return next((u for u in self.all_upstreams() if u.name == name), None)

    def smtp_for(self, upstream: str) -> SmtpConfig:
        """The SMTP server of the upstream named ``upstream`` (an account's)."""
        found = self.upstream_named(upstream)
        return found.smtp if found is not None else self.smtp

    def sieve_for(self, upstream: str) -> SieveConfig:
        """The ManageSieve settings of the upstream named ``upstream`` (an account's)."""
        found = self.upstream_named(upstream)
        return found.sieve if found is not None else self.sieve


# --- loading and validation ----------------------------------------------------------------

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("text", "json")
REQUIRED: Final = frozenset({"imap.host"})  # in [[upstreams]] entries too
# The tables an [[upstreams]] entry takes, as the top level's default upstream does.
_UPSTREAM_TABLES: Final = frozenset(
    name
    for name, hint in get_type_hints(UpstreamConfig).items()
    if hasattr(hint, "__dataclass_fields__")
)

# RFC 8620 §2 "suggested minimum" of each core capability limit.
_RFC_MINIMUMS: Final[Mapping[str, int]] = {
    "limits.max_size_upload": 50_000_000,
    "limits.max_concurrent_upload": 4,
    "limits.max_size_request": 10_000_000,
    "limits.max_concurrent_requests": 4,
    "limits.max_calls_in_request": 16,
    "limits.max_objects_in_get": 500,
    "limits.max_objects_in_set": 500,
}
# Keys with a ceiling: the filter code past the limit checks recurses once per level.
# Integer keys where 0 means "none" (the others must be at least 1).
_MINIMUMS: Final[Mapping[str, int]] = {"cache.read_processes": 0}
_MAXIMUMS: Final[Mapping[str, int]] = {"limits.max_filter_depth": MAX_FILTER_DEPTH}
_ZERO_ALLOWED: Final = frozenset(
    {
        "auth.credential_cache_seconds",
        "push.status_interval",
        "limits.concurrent_request_wait_seconds",
    }
)
_HOSTNAME: Final = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_EXPECTED: Final = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
_TOML_TYPES: Final[Mapping[type, str]] = {
    bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
    dict: "table", datetime: "datetime", date: "date", time: "time",
}  # fmt: skip


class _Invalid(ValueError):
    """A problem with one value; the walker prefixes the key path."""


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML configuration file.

    Raises:
        ConfigError: the file cannot be read, is not UTF-8 TOML, or fails validation; the
            message starts with the file name.
    """
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_config(data: Mapping[str, Any]) -> Config:
    """Validate parsed TOML and build the :class:`Config`.

    Raises:
        ConfigError: one message per problem, each starting with its key path.
    """
    problems: list[str] = []
    tables = {name: hint for name, hint in get_type_hints(Config).items() if _is_table(hint)}
    known = {**tables, "upstreams": UpstreamConfig}
    for key, value in data.items():
        if key not in known:
            problems.append(_unknown(key, key, known, value))
    upstreams = _build_tables(UpstreamConfig, "upstreams", data.get("upstreams", []), problems)
    # [[upstreams]] without [imap]: no default upstream (logins of other domains are refused)
    default = "imap" in data or not upstreams
    sections = _build_top_tables(data, tables, default, problems)
    sections["upstreams"] = _check_upstreams(upstreams, default, problems)
    sections["default_upstream"] = default
    limits = sections.get("limits")
    if limits is not None and limits.max_upload_bytes_per_account < limits.max_size_upload:
        problems.append(
            "limits.max_upload_bytes_per_account: must be at least limits.max_size_upload"
            f" ({limits.max_size_upload}), else the largest upload could never be stored"
        )
    cache = sections.get("cache")
    if isinstance(cache, CacheConfig) and cache.readers_per_account > cache.readers:
        problems.append(
            f"cache.readers_per_account: must be at most cache.readers ({cache.readers})"
        )
    cluster = sections.get("cluster")
    server_section = sections.get("server")
    if (
        isinstance(server_section, ServerConfig)
        and server_section.workers > 1
        and isinstance(cluster, ClusterConfig)
        and cluster.url is None
        and not (isinstance(cache, CacheConfig) and cache.url is not None)
    ):
        problems.append(
            "server.workers: more than 1 needs cluster.url or a PostgreSQL cache.url (the"
            " workers are instances on one cache: they agree on who syncs and who watches"
            " through it)"
        )
    server = data.get("server", {})
    listen = sections.get("server")
    if isinstance(listen, ServerConfig) and "base_url" not in server and _is_wildcard(listen.host):
        # the session's URLs would name an address no client can reach
        problems.append(
            f"server.base_url: required when server.listen is {listen.listen} (every"
            " interface): set the URL clients reach this server at"
        )
    if isinstance(listen, ServerConfig) and (listen.tls_certificate is None) != (
        listen.tls_key is None
    ):
        given, missing = (
            ("tls_certificate", "tls_key")
            if listen.tls_key is None
            else ("tls_key", "tls_certificate")
        )
        problems.append(f"server.{missing}: required with server.{given} (built-in TLS)")
    if problems:
        raise ConfigError("; ".join(problems))
    if "listen" in server and "base_url" not in server:  # follow a moved port by default
        scheme = "https" if sections["server"].tls_certificate else "http"
        sections["server"] = replace(sections["server"], base_url=f"{scheme}://{server['listen']}")
    return Config(**sections)


def _build_top_tables(
    data: Mapping[str, Any], tables: Mapping[str, type], default: bool, problems: list[str]
) -> dict[str, Any]:
    sections: dict[str, Any] = {}
    for name, cls in tables.items():
        raw = data.get(name, {})
        if not isinstance(raw, Mapping):
            problems.append(f"{name}: expected a table, got {_toml_type(raw)}")
            continue
        if not default and name in _UPSTREAM_TABLES:
            if name in data:  # e.g. an [smtp] that nothing would use
                problems.append(
                    f"{name}: the default upstream's table needs [imap] (its host) too;"
                    " without [imap] only the [[upstreams]] entries' domains are served"
                )
            sections[name] = cls()
            continue
        sections[name] = _build_section(cls, name, raw, problems)
    return sections


def _check_upstreams(
    entries: tuple[object, ...], default: bool, problems: list[str]
) -> tuple[UpstreamConfig, ...]:
    """Name each entry, and refuse a domain or a name that two upstreams would share."""
    out: list[UpstreamConfig] = []
    owners: dict[str, str] = {}  # domain or name -> where it was first given
    for index, entry in enumerate(entries):
        assert isinstance(entry, UpstreamConfig)
        where = f"upstreams[{index}]"
        if not entry.domains:
            if not any(p.startswith(f"{where}.domains[") for p in problems):
                problems.append(f"{where}.domains: name at least one domain (e.g. example.org)")
            continue
        for position, domain in enumerate(entry.domains):
            first = owners.setdefault(f"domain {domain}", f"{where}.domains[{position}]")
            if first != f"{where}.domains[{position}]":
                problems.append(f"{where}.domains[{position}]: {domain} is in {first} already")
        name = entry.name or entry.domains[0].removeprefix("*.")
        if name == DEFAULT_UPSTREAM:
            problems.append(
                f'{where}.name: "{DEFAULT_UPSTREAM}" is the name of the top-level [imap] and'
                " [smtp] upstream"
            )
        first = owners.setdefault(f"name {name}", where)
        if first != where:
            problems.append(f"{where}.name: {name!r} names {first} already")
        out.append(replace(entry, name=name))
    return tuple(out)


def _is_table(hint: object) -> bool:
    return isinstance(hint, type) and hasattr(hint, "__dataclass_fields__")


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def split_listen(value: str) -> tuple[str, int]:
    """Split ``host:port`` or ``[v6]:port`` into host (without brackets) and port.

    Raises:
        ValueError: the message says what is wrong.
    """
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise _Invalid("expected host:port, e.g. 127.0.0.1:8080 or [::1]:8080")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _Invalid(f"{host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise _Invalid("an IPv6 address must be in brackets, e.g. [::1]:8080")
    elif not _HOSTNAME.fullmatch(host):
        raise _Invalid(f"{host!r} is not a host name or IPv4 address")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise _Invalid(f"port must be 1-65535 (got {port!r})")
    return host, int(port)


def cache_password(cfg: Config) -> str | None:
    """The PostgreSQL password from ``cache.password_file`` (its first line), if set.

    Raises:
        ConfigError: the file cannot be read (its name is said, never its content).
    """
    name = cfg.cache.password_file
    if name is None:
        return None
    try:
        with open(name, encoding="utf-8") as fh:
            return fh.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8"
        raise ConfigError(f"cache.password_file: cannot read {name}: {reason}") from None


def config_warnings(cfg: Config) -> list[str]:
    """Legal but risky settings, one sentence each, for the CLI to log at start."""
    out: list[str] = []
    servers: list[tuple[str, ImapConfig | SmtpConfig]] = []
    for index, upstream in enumerate(cfg.upstreams):
        servers += [(f"upstreams[{index}].imap", upstream.imap)]
        servers += [(f"upstreams[{index}].smtp", upstream.smtp)]
    if cfg.default_upstream:
        servers[:0] = [("imap", cfg.imap), ("smtp", cfg.smtp)]
    for name, sec in servers:
        if sec.security == "none" and not _is_loopback(sec.host):
            what = "mail" if getattr(sec, "auth", "user") == "none" else "passwords and mail"
            out.append(f'{name}.security = "none": {what} to {sec.host} travel unencrypted')
        elif not sec.verify_certificates:
            out.append(f"{name}.verify_certificates = false: {sec.host} is not authenticated")
    sieves = [(f"upstreams[{i}].sieve", u) for i, u in enumerate(cfg.upstreams)]
    if cfg.default is not None:
        sieves[:0] = [("sieve", cfg.default)]
    out += [warning for name, upstream in sieves if (warning := _sieve_warning(name, upstream))]
    url = urlsplit(cfg.server.base_url)
    if url.scheme == "http" and cfg.server.tls_certificate is not None:
        out.append(
            "server.base_url is plain http, yet the server speaks TLS (server.tls_certificate):"
            " clients following the session's URLs will fail"
        )
    elif url.scheme == "http" and not _is_loopback(url.hostname or ""):
        out.append(
            f"server.base_url is plain http: clients send passwords to {url.hostname} unencrypted"
        )
    profile = urlsplit(cfg.auth.bearer_profile_url)
    if profile.scheme == "http" and not _is_loopback(profile.hostname or ""):
        out.append(
            f"auth.bearer_profile_url is plain http: tokens go to {profile.hostname} unencrypted"
        )
    if (cfg.cluster.url or cfg.cache.url) is not None and cfg.auth.push_token_key_file is None:
        out.append(
            "several instances may share this cache (cluster.url or a PostgreSQL cache.url) but"
            " auth.push_token_key_file is not set: a push URL one instance signs is refused by"
            " the others; give every instance the same key file"
        )
    return out


def _sieve_warning(name: str, upstream: UpstreamConfig) -> str | None:
    host, _, security = upstream.sieve.where(upstream.imap)
    # plaintext IMAP to the same host has had its warning
    said = upstream.imap.security == "none" and host == upstream.imap.host
    if upstream.sieve.enabled and security == "none" and not said and not _is_loopback(host):
        return f"ManageSieve ({name}.security): passwords to {host} travel unencrypted"
    return None


def submission_warnings(cfg: Config) -> list[str]:
    """When SMTP submission is configured (an [smtp] table that is not all defaults), logins
    that would get no Identity: one that is not an address ("bob") gets a default identity
    only from ``submission.default_domain``, and can then send from nothing at all."""
    sub = cfg.submission
    smtp_given = any(u.smtp != SmtpConfig() for u in cfg.all_upstreams())
    if not smtp_given or sub.identities_any_from or sub.default_domain is not None:
        return []
    named = sorted({entry.username for entry in sub.identities}, key=str.casefold)
    only = f", except {', '.join(named)} (named in submission.identities)" if named else ""
    return [
        'submission: a login that is not an address ("bob") gets no Identity and cannot'
        f" send{only}; set submission.default_domain (bob -> bob@<domain>) or name the"
        " login in submission.identities"
    ]


def to_toml(cfg: Config) -> str:
    """The effective configuration as TOML that :func:`parse_config` reads back unchanged."""
    lines: list[str] = []
    for table in fields(cfg):
        section = getattr(cfg, table.name)
        if not _is_table(type(section)):
            continue
        if not cfg.default_upstream and table.name in _UPSTREAM_TABLES:
            lines += [f"# [{table.name}]: no default upstream", ""]
            continue
        lines += _toml_table(f"[{table.name}]", section)
    for upstream in cfg.upstreams:
        lines.append("[[upstreams]]")
        lines += [f"name = {_toml_value(upstream.name)}"]
        lines += [f"domains = {_toml_value(upstream.domains)}", ""]
        for name in sorted(_UPSTREAM_TABLES):
            lines += _toml_table(f"[upstreams.{name}]", getattr(upstream, name))
    return "\n".join(lines)


def _toml_table(header: str, section: object) -> list[str]:
    lines = [header]
    for f in fields(section):  # type: ignore[arg-type]
        value = getattr(section, f.name)
        lines.append(
            f"# {f.name}: not set" if value is None else f"{f.name} = {_toml_value(value)}"
        )
    return [*lines, ""]


def _build_section(
    cls: type, prefix: str, raw: Mapping[str, Any], problems: list[str]
) -> object | None:
    """One table; None when a required key is missing (that is reported in ``problems``)."""
    hints = get_type_hints(cls)
    problems.extend(
        _unknown(f"{prefix}.{key}", key, hints, value)
        for key, value in raw.items()
        if key not in hints
    )
    required = {
        f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
    }
    values: dict[str, object] = {}
    for name, hint in hints.items():
        path = f"{prefix}.{name}"
        if name not in raw:
            if _generic(path) in REQUIRED or name in required:
                what = "table" if _is_table(hint) else "key"
                problems.append(f"{path}: required {what} is missing")
            continue
        if _is_table(hint):  # a table inside an entry, e.g. [upstreams.imap]
            if not isinstance(raw[name], Mapping):
                problems.append(f"{path}: expected a table, got {_toml_type(raw[name])}")
                continue
            built = _build_section(hint, path, raw[name], problems)
            if built is not None:
                values[name] = built
            continue
        if get_origin(hint) is tuple and get_args(hint)[0] is str:  # an array of strings
            values[name] = _build_strings(path, raw[name], problems)
            continue
        if get_origin(hint) is tuple:  # an array of tables, e.g. [[submission.identities]]
            values[name] = _build_tables(get_args(hint)[0], path, raw[name], problems)
            continue
        try:
            values[name] = _check_value(path, name, _coerce(hint, raw[name]))
        except _Invalid as exc:
            problems.append(f"{path}: {exc}")
    return cls(**values) if required <= values.keys() else None


def _build_tables(cls: type, path: str, value: object, problems: list[str]) -> tuple[object, ...]:
    if not isinstance(value, list):
        problems.append(f"{path}: expected an array of tables, got {_toml_type(value)}")
        return ()
    out: list[object] = []
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(item, Mapping):
            problems.append(f"{where}: expected a table, got {_toml_type(item)}")
            continue
        built = _build_section(cls, where, item, problems)
        if built is not None:
            out.append(built)
    return tuple(out)


def _build_strings(path: str, value: object, problems: list[str]) -> tuple[str, ...]:
    if not isinstance(value, list):
        problems.append(f"{path}: expected an array of strings, got {_toml_type(value)}")
        return ()
    out: list[str] = []
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        try:
            out.append(str(_check_value(where, path.rpartition(".")[2], _coerce(str, item))))
        except _Invalid as exc:
            problems.append(f"{where}: {exc}")
    return tuple(out)


def _coerce(hint: Any, value: object) -> object:
    """Check ``value`` against a field's type hint; ints become floats for float fields."""
    origin = get_origin(hint)
    if origin is Literal:
        choices = get_args(hint)
        if not isinstance(value, str) or value not in choices:
            raise _Invalid(f"must be one of {', '.join(choices)} (got {value!r})")
        return value
    if origin in (Union, UnionType):
        (inner,) = (arg for arg in get_args(hint) if arg is not type(None))
        return _coerce(inner, value)
    if hint not in _EXPECTED:
        raise TypeError(f"config field type {hint!r} is not supported")
    ok = isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise _Invalid(f"expected {_EXPECTED[hint]}, got {_toml_type(value)}")
    return value


def _check_value(path: str, name: str, value: object) -> object:
    """Range and shape checks that follow from the field's name, type and path."""
    if name == "port" and isinstance(value, int):
        if not 1 <= value <= 65535:
            raise _Invalid(f"must be 1-65535 (got {value})")
    elif isinstance(value, int) and not isinstance(value, bool):
        minimum = _RFC_MINIMUMS.get(path, _MINIMUMS.get(path, 1))
        if value < minimum:
            why = ", the RFC 8620 §2 suggested minimum" if path in _RFC_MINIMUMS else ""
            raise _Invalid(f"must be at least {minimum}{why} (got {value})")
        maximum = _MAXIMUMS.get(path)
        if maximum is not None and value > maximum:
            raise _Invalid(f"must be at most {maximum} (got {value})")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid(f"must be a finite number (got {value})")
        if value < 0 or (value == 0 and path not in _ZERO_ALLOWED):
            raise _Invalid(f"must be positive (got {value:g})")
    elif isinstance(value, str) and not value.strip():
        raise _Invalid("must not be empty")
    shape = _SHAPES.get(_INDEX.sub("[]", path)) or _SHAPES.get(_generic(path))
    return shape(value) if shape and isinstance(value, str) else value


def _generic(path: str) -> str:
    """The top-level path an upstream entry's key is checked as (``upstreams[2].imap.host``:
    ``imap.host``): an entry's tables take what the default upstream's take."""
    return _INDEX.sub("[]", path).removeprefix("upstreams[].")


def _listen(value: str) -> str:
    split_listen(value)
    return value


def _cache_url(value: str) -> str:
    try:
        url = urlsplit(value)
        password = url.password
    except ValueError:
        url, password = None, None
    if url is None or url.scheme not in ("postgresql", "postgres"):
        raise _Invalid(
            "expected a postgresql:// URL, e.g. postgresql://imapjmap@db.example/imapjmap"
        )
    if password is not None:
        # a URL is shown in logs and process lists; a password never is
        raise _Invalid("must not hold a password: set PGPASSWORD or cache.password_file instead")
    return value


def _base_url(value: str) -> str:
    try:  # urlsplit and .port raise ValueError on bad brackets and ports
        url = urlsplit(value)
        ok = url.scheme in ("http", "https") and bool(url.hostname) and url.port != 0
    except ValueError:
        ok = False
    if not ok or any(c.isspace() for c in value):
        raise _Invalid(f"expected an absolute http:// or https:// URL (got {value!r})")
    if url.query or url.fragment or url.username is not None:
        raise _Invalid("must not contain a query, a fragment or credentials")
    return value.rstrip("/")


def _url(value: str) -> str:
    try:
        url = urlsplit(value)
        ok = url.scheme in ("http", "https") and bool(url.hostname) and url.port != 0
    except ValueError:
        ok = False
    if not ok or any(c.isspace() for c in value) or url.username is not None:
        raise _Invalid(f"expected an absolute http:// or https:// URL (got {value!r})")
    return value


def _url_prefix(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if scheme not in ("http", "https") or not sep or not rest or rest[0] in "/:?#":
        raise _Invalid(f"expected an http:// or https:// URL prefix with a host (got {value!r})")
    if any(c.isspace() for c in value):
        raise _Invalid(f"must not contain white space (got {value!r})")
    return value


def _origin(value: str) -> str:
    """A web origin as browsers send it in ``Origin``, normalised (lower case, no ``/``)."""
    origin = value.strip().rstrip("/").lower()
    try:
        url = urlsplit(origin)
        ok = url.scheme in ("http", "https") and bool(url.hostname) and url.port != 0
    except ValueError:
        ok = False
    if not ok or url.path or url.query or url.fragment or url.username is not None:
        raise _Invalid(f"expected an origin such as https://mail.example.org (got {value!r})")
    if any(c.isspace() for c in origin):
        raise _Invalid(f"must not contain white space (got {value!r})")
    return origin


def _network(value: str) -> str:
    try:
        ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise _Invalid(
            f"expected an IP address or a network such as 10.0.0.0/8 (got {value!r})"
        ) from None
    return value


def _cluster_url(value: str) -> str:
    if urlsplit(value).scheme not in ("postgresql", "postgres"):
        raise _Invalid("must be a postgresql:// URL")
    return value


def _log_level(value: str) -> str:
    if value not in LOG_LEVELS:
        raise _Invalid(f"must be one of {', '.join(LOG_LEVELS)} (got {value!r})")
    return value


def _log_format(value: str) -> str:
    if value not in LOG_FORMATS:
        raise _Invalid(f"must be one of {', '.join(LOG_FORMATS)} (got {value!r})")
    return value


def _host(value: str) -> str:
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        if not _HOSTNAME.fullmatch(value):
            raise _Invalid(
                f"expected a host name or IP address without a port (got {value!r})"
            ) from None
    return value


def _domain(value: str) -> str:
    if not _HOSTNAME.fullmatch(value) or "." not in value.strip("."):
        raise _Invalid(f"expected a domain name such as example.org (got {value!r})")
    return value


def _domain_pattern(value: str) -> str:
    """An upstream's domain: ``example.org``, or ``*.example.org`` for its subdomains; kept
    in lower case, as logins are matched."""
    domain = value.lower().rstrip(".")
    if not _HOSTNAME.fullmatch(domain.removeprefix("*.")) or "*" in domain.removeprefix("*."):
        raise _Invalid(f"expected a domain such as example.org or *.example.org (got {value!r})")
    return domain


def _upstream_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
        raise _Invalid(f"letters, digits, '.', '_' and '-' only (got {value!r})")
    return value


def _address(value: str) -> str:
    local, at, domain = value.rpartition("@")
    if not at or not local or any(c.isspace() or c in '<>(),;:"' for c in local):
        raise _Invalid(f"expected an address such as alice@example.org (got {value!r})")
    if not _HOSTNAME.fullmatch(domain):
        raise _Invalid(f"{domain!r} is not a domain name")
    return value


_INDEX: Final = re.compile(r"\[\d+\]")
_SHAPES: Final[Mapping[str, Callable[[str], str]]] = {
    "server.listen": _listen,
    "metrics.listen": _listen,
    "server.base_url": _base_url,
    "cache.url": _cache_url,
    "server.log_level": _log_level,
    "server.log_format": _log_format,
    "server.trusted_proxies[]": _network,
    "server.cors_origins[]": _origin,
    "imap.host": _host,
    "auth.bearer_profile_url": _url,
    "smtp.host": _host,
    "sieve.host": _host,
    "submission.default_domain": _domain,
    "submission.identities[].email": _address,
    "push.allowed_url_prefixes[]": _url_prefix,
    "cluster.url": _cluster_url,
    "upstreams[].domains[]": _domain_pattern,
    "upstreams[].name": _upstream_name,
}


def _unknown(path: str, key: str, known: Mapping[str, object], value: object) -> str:
    what = "table" if isinstance(value, Mapping) else "key"
    close = difflib.get_close_matches(key, list(known), n=1)
    if close:
        return f"{path}: unknown {what} (did you mean {close[0]}?)"
    if path == key and what == "key":  # a top-level key: the [table] header is missing
        return f"{path}: unknown key (settings belong in a table such as [imap])"
    return f"{path}: unknown {what}"


def _toml_type(value: object) -> str:
    """The TOML name of a parsed value's type (tomllib builds exactly these types)."""
    kind: type = type(value)
    return _TOML_TYPES.get(kind, kind.__name__)


def _toml_value(value: object) -> str:
    if isinstance(value, tuple):  # an array of tables, written inline
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if hasattr(value, "__dataclass_fields__"):
        items = [
            f"{f.name} = {_toml_value(getattr(value, f.name))}"
            for f in fields(value)  # type: ignore[arg-type]
            if f.default is MISSING or getattr(value, f.name) != f.default
        ]
        return "{" + ", ".join(items) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value).replace("\x7f", "\\u007f")
    return repr(value)


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
