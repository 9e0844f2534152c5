"""Configuration: frozen dataclasses read once from TOML (stdlib ``tomllib``).

Every key is optional except ``imap.host``; defaults are the ones documented in
``config.example.toml``.  Validation errors are :class:`~imapjmap.errors.ConfigError` whose
message names the key path and the problem (``imap.security: must be one of tls, starttls,
none``).  Unknown keys and tables are errors too: a typo must not silently fall back to a
default.  Tests derive variants with :func:`dataclasses.replace`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Security = Literal["tls", "starttls", "none"]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: str = "127.0.0.1:8080"  # host:port; [v6]:port for IPv6
    base_url: str = "http://127.0.0.1:8080"  # absolute URLs in the session resource
    log_level: str = "info"  # debug | info | warning | error

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
    connect_timeout: float = 10.0  # seconds: TCP + TLS + greeting
    command_timeout: float = 60.0  # seconds for any one command
    idle_timeout: float = 300.0  # seconds an unused pooled connection is kept open


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
class CacheConfig:
    path: str = "imapjmap-cache.sqlite3"  # SQLite file; ":memory:" for a throw-away cache
    changes_retention_days: int = 30  # tombstones older than this are purged


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """The RFC 8620 §2 core capability limits, advertised in the session and enforced."""

    max_size_upload: int = 50_000_000
    max_concurrent_upload: int = 4
    max_size_request: int = 10_000_000
    max_concurrent_requests: int = 4
    max_calls_in_request: int = 32
    max_objects_in_get: int = 1000
    max_objects_in_set: int = 1000


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """How long a verified login is remembered (in memory only, as a salted hash)."""

    credential_cache_seconds: float = 300.0


@dataclass(frozen=True, slots=True)
class Config:
    imap: ImapConfig = field(default_factory=ImapConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
