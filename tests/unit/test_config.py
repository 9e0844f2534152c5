"""imapjmap.config: the loader, its error messages, and config.example.toml."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imapjmap.config import (
    AuthConfig,
    CacheConfig,
    Config,
    IdentityConfig,
    ImapConfig,
    LimitsConfig,
    PushConfig,
    ServerConfig,
    SieveConfig,
    SmtpConfig,
    SubmissionConfig,
    UpstreamConfig,
    config_warnings,
    load_config,
    parse_config,
    split_listen,
    submission_warnings,
    to_toml,
)
from imapjmap.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"


def minimal(**tables: dict[str, Any]) -> dict[str, Any]:
    """The smallest valid TOML data, with ``tables`` merged in."""
    data: dict[str, Any] = {"imap": {"host": "imap.example.org"}}
    for name, values in tables.items():
        data[name] = {**data.get(name, {}), **values}
    return data


# --- config.example.toml -------------------------------------------------------------------


def test_example_file_is_exactly_the_defaults() -> None:
    expected = dataclasses.replace(Config(), imap=ImapConfig(host="imap.example.org"))
    assert load_config(EXAMPLE) == expected


def _example_keys() -> dict[tuple[str, str], tuple[bool, list[str]]]:
    """(table, key) -> (commented out?, the comment lines just above it)."""
    keys: dict[tuple[str, str], tuple[bool, list[str]]] = {}
    table = ""
    comments: list[str] = []
    for line in EXAMPLE.read_text().splitlines():
        # a table, or the commented-out [[upstreams]] entry's
        if header := re.fullmatch(r"\[(\w+)\]|# \[\[?([\w.]+)\]\]?", line):
            table, comments = header[1] or header[2], []
        elif key := re.fullmatch(r"(#\s*)?(\w+)\s*=.*", line):
            keys[(table, key[2])] = (key[1] is not None, comments)
            comments = []
        elif line.startswith("#"):
            comments.append(line)
        else:
            comments = []
    return keys


def _tables() -> list[str]:
    """The top-level tables (not ``upstreams``, whose entries take their tables)."""
    hints = typing.get_type_hints(Config)
    return [t.name for t in dataclasses.fields(Config) if dataclasses.is_dataclass(hints[t.name])]


def test_every_field_is_documented_in_the_example_file() -> None:
    keys = _example_keys()
    for table in (Config.__dataclass_fields__[name] for name in _tables()):
        for f in dataclasses.fields(getattr(Config(), table.name)):
            path = f"{table.name}.{f.name}"
            assert (table.name, f.name) in keys, f"{path} is missing from config.example.toml"
            commented, comments = keys[(table.name, f.name)]
            unset = getattr(getattr(Config(), table.name), f.name) is None
            assert commented == unset, f"{path}: comment it out exactly when it has no default"
            assert any("default" in c.lower() for c in comments), f"{path}: say its default"


def test_example_file_has_no_key_the_dataclasses_lack() -> None:
    known = {(t, f.name) for t in _tables() for f in dataclasses.fields(getattr(Config(), t))}
    known |= {("upstreams", f.name) for f in dataclasses.fields(UpstreamConfig)}
    known |= {
        (f"upstreams.{t}", key)
        for t in ("imap", "smtp", "sieve")
        for (table, key) in known
        if table == t
    }
    assert set(_example_keys()) <= known


def test_the_example_upstreams_entry_is_valid_and_its_keys_documented() -> None:
    """The commented-out [[upstreams]] entry, uncommented, loads."""
    text = EXAMPLE.read_text()
    block = text[text.index("# [[upstreams]]") :]
    entry = "\n".join(
        line.removeprefix("# ") for line in block.splitlines() if "=" in line or "[" in line
    )
    entry = "\n".join(line for line in entry.splitlines() if not line.startswith("#"))
    cfg = parse_config({**minimal(), **tomllib.loads(entry)})
    assert cfg.upstreams == (
        UpstreamConfig(
            ("example.net", "*.example.net"),
            ImapConfig(host="imap.example.net"),
            "example-net",
            SmtpConfig(host="smtp.example.net"),
            SieveConfig(host="sieve.example.net"),
        ),
    )
    keys = _example_keys()
    for f in dataclasses.fields(UpstreamConfig):
        if f.name not in ("imap", "smtp", "sieve"):
            commented, comments = keys[("upstreams", f.name)]
            assert commented and any("default" in c.lower() for c in comments), f.name


# --- accepted values -----------------------------------------------------------------------


def test_only_imap_host_is_required() -> None:
    assert parse_config(minimal()) == Config(imap=ImapConfig(host="imap.example.org"))


def test_to_toml_round_trips() -> None:
    cfg = parse_config(
        minimal(
            imap={"ca_file": 'C:\\ca "x".pem', "security": "none"},
            auth={"credential_cache_seconds": 0},
        )
    )
    assert parse_config(tomllib.loads(to_toml(cfg))) == cfg


_HOST = "imap.example.org"
ACCEPTED = [
    (
        {"server": {"base_url": "https://jmap.example/"}},
        ServerConfig(base_url="https://jmap.example"),
    ),
    ({"server": {"base_url": "http://h:81/jmap//"}}, ServerConfig(base_url="http://h:81/jmap")),
    ({"server": {"listen": "[::1]:90"}}, ServerConfig("[::1]:90", base_url="http://[::1]:90")),
    (
        {"server": {"listen": "h:443", "tls_certificate": "c.pem", "tls_key": "k.pem"}},
        ServerConfig("h:443", "https://h:443", tls_certificate="c.pem", tls_key="k.pem"),
    ),
    (
        {"server": {"listen": "[::]:81", "base_url": "https://x"}},
        ServerConfig("[::]:81", "https://x"),
    ),
    ({"imap": {"connect_timeout": 5}}, ImapConfig(host=_HOST, connect_timeout=5.0)),
    ({"imap": {"host": "2001:db8::1"}}, ImapConfig(host="2001:db8::1")),
    ({"imap": {"host": "mail_server"}}, ImapConfig(host="mail_server")),
    ({"imap": {"ca_file": "ca.pem"}}, ImapConfig(host=_HOST, ca_file="ca.pem")),
    ({"auth": {"credential_cache_seconds": 0}}, AuthConfig(credential_cache_seconds=0.0)),
    (
        {"server": {"header_timeout": 2, "body_timeout": 0.5, "max_connections_per_address": 8}},
        ServerConfig(header_timeout=2.0, body_timeout=0.5, max_connections_per_address=8),
    ),
    (
        {"cache": {"readers": 1, "readers_per_account": 1, "max_transaction_seconds": 0.5}},
        CacheConfig(readers=1, readers_per_account=1, max_transaction_seconds=0.5),
    ),
    ({"cache": {"read_processes": 0}}, CacheConfig(read_processes=0)),
    ({"cache": {"read_processes": 3}}, CacheConfig(read_processes=3)),
    (
        {"cache": {"url": "postgresql://imapjmap@db.example/mail", "password_file": "/run/pw"}},
        CacheConfig(url="postgresql://imapjmap@db.example/mail", password_file="/run/pw"),
    ),
    ({"cache": {"url": "postgres://db.example"}}, CacheConfig(url="postgres://db.example")),
]


@pytest.mark.parametrize(("tables", "expected"), ACCEPTED)
def test_accepted_values(tables: dict[str, Any], expected: object) -> None:
    (section,) = tables
    assert getattr(parse_config(minimal(**tables)), section) == expected


def test_int_given_for_a_float_becomes_a_float() -> None:
    timeout = parse_config(minimal(imap={"command_timeout": 30})).imap.command_timeout
    assert type(timeout) is float


# --- errors --------------------------------------------------------------------------------

ERROR_CASES = [
    ({"imap": {"host": "h", "prot": 993}}, "imap.prot: unknown key (did you mean port?)"),
    ({**minimal(), "imapp": {}}, "imapp: unknown table (did you mean imap?)"),
    ({**minimal(), "zzz": {}}, "zzz: unknown table"),
    ({"host": "h"}, "host: unknown key"),
    (minimal(imap={"tls": {"x": 1}}), "imap.tls: unknown table"),
    ({"imap": 5}, "imap: expected a table, got integer"),
    (minimal(imap={"port": "993"}), "imap.port: expected an integer, got string"),
    (minimal(imap={"port": True}), "imap.port: expected an integer, got boolean"),
    (minimal(imap={"pool_size": 2.0}), "imap.pool_size: expected an integer, got float"),
    (minimal(imap={"verify_certificates": 1}), "imap.verify_certificates: expected a boolean"),
    (
        minimal(imap={"command_timeout": "60"}),
        "imap.command_timeout: expected a number, got string",
    ),
    (minimal(imap={"idle_timeout": False}), "imap.idle_timeout: expected a number, got boolean"),
    (minimal(imap={"ca_file": ["a"]}), "imap.ca_file: expected a string, got array"),
    (minimal(cache={"path": {"a": 1}}), "cache.path: expected a string, got table"),
    (minimal(imap={"port": 0}), "imap.port: must be 1-65535"),
    (minimal(smtp={"port": 65536}), "smtp.port: must be 1-65535"),
    (minimal(imap={"pool_size": 0}), "imap.pool_size: must be at least 1"),
    (minimal(imap={"searches_per_account": 0}), "imap.searches_per_account: must be at least 1"),
    (minimal(imap={"connect_timeout": 0}), "imap.connect_timeout: must be positive"),
    (minimal(smtp={"timeout": -1.5}), "smtp.timeout: must be positive"),
    (minimal(imap={"command_timeout": float("inf")}), "imap.command_timeout: must be a finite"),
    (minimal(auth={"credential_cache_seconds": -1}), "auth.credential_cache_seconds: must be"),
    (minimal(cache={"changes_retention_days": 0}), "cache.changes_retention_days: must be at"),
    (minimal(cache={"readers": 0}), "cache.readers: must be at least 1"),
    (minimal(cache={"readers_per_account": 0}), "cache.readers_per_account: must be at least 1"),
    (
        minimal(cache={"readers": 2, "readers_per_account": 3}),
        "cache.readers_per_account: must be at most cache.readers (2)",
    ),
    (minimal(cache={"max_transaction_seconds": 0}), "cache.max_transaction_seconds: must be pos"),
    (minimal(cache={"read_processes": -1}), "cache.read_processes: must be at least 0 (got -1)"),
    (
        minimal(limits={"max_calls_in_request": 15}),
        "limits.max_calls_in_request: must be at least 16",
    ),
    (minimal(limits={"max_size_upload": 1}), "limits.max_size_upload: must be at least 50000000"),
    (minimal(limits={"max_objects_in_get": 0}), "limits.max_objects_in_get: must be at least 500"),
    (minimal(limits={"max_filter_depth": 51}), "limits.max_filter_depth: must be at most 50"),
    (minimal(limits={"max_sort_comparators": 0}), "limits.max_sort_comparators: must be at"),
    (minimal(cache={"path": ""}), "cache.path: must not be empty"),
    (minimal(cache={"url": "mysql://db/x"}), "cache.url: expected a postgresql:// URL"),
    (minimal(cache={"url": "/var/cache.sqlite3"}), "cache.url: expected a postgresql:// URL"),
    (
        minimal(cache={"url": "postgresql://u:secret@db/x"}),
        "cache.url: must not hold a password: set PGPASSWORD or cache.password_file",
    ),
    (minimal(cache={"password_file": ""}), "cache.password_file: must not be empty"),
    (
        minimal(limits={"max_upload_bytes_per_account": 10_000_000}),
        "limits.max_upload_bytes_per_account: must be at least limits.max_size_upload (50000000)",
    ),
    (minimal(imap={"security": "ssl"}), "imap.security: must be one of tls, starttls, none"),
    (minimal(sieve={"security": "ssl"}), "sieve.security: must be one of tls, starttls, none"),
    (minimal(sieve={"port": 0}), "sieve.port: must be 1-65535"),
    (minimal(sieve={"host": "a:4190"}), "sieve.host: "),
    (minimal(sieve={"enabled": "yes"}), "sieve.enabled: expected a boolean"),
    (minimal(smtp={"auth": "login"}), "smtp.auth: must be one of user, none"),
    (minimal(server={"header_timeout": 0}), "server.header_timeout: must be positive"),
    (minimal(server={"body_timeout": "30"}), "server.body_timeout: expected a number"),
    (
        minimal(server={"max_connections_per_address": 0}),
        "server.max_connections_per_address: must be at least 1",
    ),
    (minimal(server={"log_level": "verbose"}), "server.log_level: must be one of debug, info"),
    (minimal(server={"log_format": "xml"}), "server.log_format: must be one of text, json"),
    (
        minimal(server={"tls_certificate": "/c.pem"}),
        "server.tls_key: required with server.tls_certificate",
    ),
    (minimal(server={"tls_key": "/k.pem"}), "server.tls_certificate: required with server.tls_key"),
    (minimal(server={"listen": "0.0.0.0:8080"}), "server.base_url: required when server.listen"),
    (minimal(server={"listen": "[::]:8080"}), "server.base_url: required when server.listen"),
    (minimal(server={"listen": "8080"}), "server.listen: expected host:port"),
    (minimal(server={"listen": "::1:8080"}), "server.listen: an IPv6 address must be in brackets"),
    (minimal(server={"listen": "[nope]:8080"}), "server.listen: 'nope' is not an IPv6 address"),
    (minimal(server={"listen": "localhost:http"}), "server.listen: port must be 1-65535"),
    (minimal(server={"listen": "a b:80"}), "server.listen: 'a b' is not a host name"),
    (minimal(server={"base_url": "jmap.example.org"}), "server.base_url: expected an absolute"),
    (minimal(server={"base_url": "ftp://x"}), "server.base_url: expected an absolute"),
    (minimal(server={"base_url": "http://x:99999"}), "server.base_url: expected an absolute"),
    (minimal(server={"base_url": "http://x/?a=1"}), "server.base_url: must not contain a query"),
    (minimal(server={"base_url": "http://u:p@x"}), "server.base_url: must not contain"),
    (minimal(imap={"host": "imap.example.org:993"}), "imap.host: expected a host name"),
    ({}, "imap.host: required key is missing"),
    ({"server": {}}, "imap.host: required key is missing"),
]


@pytest.mark.parametrize(("data", "message"), ERROR_CASES)
def test_errors_name_the_key_path_and_the_problem(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert message in str(info.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"imap": {"port": 0}, "smtp": {"prot": 1}})
    message = str(info.value)
    for part in ("imap.port:", "smtp.prot:", "imap.host:"):
        assert part in message


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=re.escape(f"{path}: no such file")):
        load_config(path)


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path}: cannot read")):
        load_config(tmp_path)


def test_invalid_toml_names_the_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[imap]\nhost = "h"\nport = = 1\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "invalid TOML" in str(info.value)
    assert "line 3" in str(info.value)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[imap]\nhost = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_validation_errors_from_a_file_name_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[imap]\nhost = "h"\nport = 70000\n')
    with pytest.raises(ConfigError, match=re.escape(f"{path}: imap.port: must be 1-65535")):
        load_config(path)


_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text("ab:/[]1.-_ \n", max_size=12)
)
_TABLE_KEYS = st.sampled_from(["host", "port", "security", "listen", "base_url", "path", "x"])


@given(
    st.dictionaries(
        st.sampled_from(["imap", "server", "smtp", "cache", "limits", "auth", "other"]),
        st.one_of(_SCALARS, st.dictionaries(_TABLE_KEYS, _SCALARS, max_size=4)),
        max_size=4,
    )
)
def test_parse_config_raises_only_config_error(data: dict[str, Any]) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(data)


# --- warnings and helpers ------------------------------------------------------------------


def test_cluster_url_must_be_postgresql() -> None:
    cfg = parse_config(minimal(cluster={"url": "postgresql://db.example.org/imapjmap"}))
    assert cfg.cluster.url == "postgresql://db.example.org/imapjmap"
    assert parse_config(minimal()).cluster.url is None
    for bad in ("mysql://db/x", "db.example.org", ""):
        with pytest.raises(ConfigError, match=r"cluster\.url"):
            parse_config(minimal(cluster={"url": bad}))
    with pytest.raises(ConfigError, match=r"cluster\.sync_wait: must be positive"):
        parse_config(minimal(cluster={"sync_wait": 0}))


def test_several_workers_need_a_cluster() -> None:
    assert parse_config(minimal()).server.workers == 1
    with pytest.raises(ConfigError, match=r"server\.workers: more than 1 needs cluster\.url"):
        parse_config(minimal(server={"workers": 2}))
    on_pg = parse_config(minimal(server={"workers": 2}, cache={"url": "postgresql://db/x"}))
    assert on_pg.server.workers == 2
    cfg = parse_config(minimal(server={"workers": 2}, cluster={"url": "postgresql://db/x"}))
    assert cfg.server.workers == 2
    with pytest.raises(ConfigError, match=r"server\.workers: must be at least 1"):
        parse_config(minimal(server={"workers": 0}))


def test_cluster_without_a_shared_push_token_key_is_a_warning(tmp_path: Path) -> None:
    data = minimal(cluster={"url": "postgresql://db.example.org/imapjmap"})
    data["imap"]["host"] = "imap.example.org"
    [warning] = config_warnings(parse_config(data))
    assert warning.startswith("several instances may share this cache")
    data["auth"] = {"push_token_key_file": str(tmp_path / "key")}
    assert config_warnings(parse_config(data)) == []


@pytest.mark.parametrize(
    ("tables", "warned"),
    [
        ({"imap": {"security": "none", "host": "mail.example.org"}}, ['imap.security = "none"']),
        ({"imap": {"security": "none", "host": "127.0.0.1"}}, []),
        ({"imap": {"security": "none", "host": "localhost"}}, []),
        ({"smtp": {"security": "none", "host": "::1"}}, []),
        (
            {"smtp": {"security": "none", "host": "mx", "auth": "none"}},
            ['smtp.security = "none": mail'],
        ),
        ({"imap": {"verify_certificates": False}}, ["imap.verify_certificates = false"]),
        ({"sieve": {"security": "none"}}, ["ManageSieve (sieve.security): passwords"]),
        ({"sieve": {"security": "none", "host": "::1"}}, []),
        ({"sieve": {"security": "none", "enabled": False}}, []),
        (
            {"imap": {"security": "none"}, "sieve": {"host": "sieve.example.org"}},
            ['imap.security = "none"', "ManageSieve (sieve.security): passwords to sieve.example"],
        ),
        ({"server": {"base_url": "http://jmap.example.org"}}, ["server.base_url is plain http"]),
        ({"server": {"base_url": "https://jmap.example.org"}}, []),
        (
            {
                "server": {
                    "base_url": "http://127.0.0.1:8080",
                    "tls_certificate": "c",
                    "tls_key": "k",
                }
            },
            ["server.base_url is plain http, yet the server speaks TLS"],
        ),
    ],
)
def test_plaintext_to_a_remote_host_is_a_warning(tables: dict[str, Any], warned: list[str]) -> None:
    data = minimal(**tables)
    data["imap"].setdefault("host", "imap.example.org")
    warnings = config_warnings(parse_config(data))
    assert len(warnings) == len(warned)
    for warning, start in zip(warnings, warned, strict=True):
        assert warning.startswith(start)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("localhost:1", ("localhost", 1)),
        ("[::]:65535", ("::", 65535)),
        ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
    ],
)
def test_split_listen(text: str, expected: tuple[str, int]) -> None:
    assert split_listen(text) == expected
    assert (ServerConfig(listen=text).host, ServerConfig(listen=text).port) == expected


# --- [submission]: identities, an array of tables ----------------------------------------


def test_identities_are_an_array_of_tables() -> None:
    data = tomllib.loads(
        '[imap]\nhost = "h"\n[submission]\ndefault_domain = "example.org"\n'
        '[[submission.identities]]\nusername = "alice"\nemail = "sales@example.org"\n'
        'name = "Alice (Sales)"\n'
        '[[submission.identities]]\nusername = "bob"\nemail = "*@example.net"\n'
    )
    sub = parse_config(data).submission
    assert sub == SubmissionConfig(
        default_domain="example.org",
        identities=(
            IdentityConfig("alice", "sales@example.org", name="Alice (Sales)"),
            IdentityConfig("bob", "*@example.net"),
        ),
    )


@pytest.mark.parametrize(
    ("identities", "message"),
    [
        ({"username": "a"}, "submission.identities: expected an array of tables, got table"),
        ([{"username": "a"}], "submission.identities[0].email: required key is missing"),
        ([{"email": "a@b.example"}], "submission.identities[0].username: required key"),
        ([5], "submission.identities[0]: expected a table, got integer"),
        (
            [{"username": "a", "email": "a@b.example", "nmae": "x"}],
            "submission.identities[0].nmae: unknown key (did you mean name?)",
        ),
        ([{"username": "a", "email": "nobody"}], "submission.identities[0].email: expected an"),
        ([{"username": "a", "email": "a b@x.example"}], "identities[0].email: expected an"),
        ([{"username": "a", "email": "a@exa mple"}], "identities[0].email: 'exa mple' is not"),
        ([{"username": "", "email": "a@b.example"}], "identities[0].username: must not be empty"),
    ],
)
def test_identity_errors_name_the_entry(identities: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(minimal(submission={"identities": identities}))
    assert message in str(info.value)


def test_default_domain_must_be_a_domain() -> None:
    with pytest.raises(ConfigError, match=r"submission.default_domain: expected a domain"):
        parse_config(minimal(submission={"default_domain": "localhost"}))


def test_to_toml_round_trips_identities() -> None:
    cfg = parse_config(
        minimal(
            submission={
                "identities_any_from": True,
                "identities": [
                    {"username": "a", "email": "a@x.example", "text_signature": 'a "b"\n-- \n'},
                    {"username": "b", "email": "*@y.example", "name": "B"},
                ],
            }
        )
    )
    assert parse_config(tomllib.loads(to_toml(cfg))) == cfg


def test_every_identity_field_is_documented_in_the_example_file() -> None:
    text = EXAMPLE.read_text()
    start = text.index("[submission]")
    comments = "\n".join(line for line in text[start:].splitlines() if line.startswith("#"))
    for f in dataclasses.fields(IdentityConfig):
        assert re.search(rf"\b{f.name}\b", comments), f"identity field {f.name} is undocumented"
    assert "[[submission.identities]]" in comments


# --- [push]: an array of strings -----------------------------------------------------------


def test_push_url_prefixes_are_an_array_of_strings() -> None:
    prefixes = ["http://127.0.0.1:8081/", "https://push.internal.example/"]
    cfg = parse_config(minimal(push={"allowed_url_prefixes": prefixes, "poll_interval": 5}))
    assert cfg.push == PushConfig(allowed_url_prefixes=tuple(prefixes), poll_interval=5.0)
    assert parse_config(tomllib.loads(to_toml(cfg))) == cfg


@pytest.mark.parametrize(
    ("prefixes", "message"),
    [
        ("http://x", "push.allowed_url_prefixes: expected an array of strings, got string"),
        ([5], "push.allowed_url_prefixes[0]: expected a string, got integer"),
        ([""], "push.allowed_url_prefixes[0]: must not be empty"),
        (["ftp://x/"], "push.allowed_url_prefixes[0]: expected an http:// or https://"),
        (["https:///x"], "push.allowed_url_prefixes[0]: expected an http:// or https://"),
        (["https://a b/"], "push.allowed_url_prefixes[0]: must not contain white space"),
    ],
)
def test_push_url_prefix_errors_name_the_entry(prefixes: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(minimal(push={"allowed_url_prefixes": prefixes}))


def test_push_limits_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"push\.max_subscriptions: must be at least 1"):
        parse_config(minimal(push={"max_subscriptions": 0}))
    with pytest.raises(ConfigError, match=r"push\.poll_interval: must be positive"):
        parse_config(minimal(push={"poll_interval": 0}))
    # the LIST-STATUS comparison may be turned off, not made negative
    assert parse_config(minimal(push={"status_interval": 0})).push.status_interval == 0.0
    assert parse_config(minimal()).push.status_interval == 2.0
    with pytest.raises(ConfigError, match=r"push\.status_interval: must be positive"):
        parse_config(minimal(push={"status_interval": -1}))


def test_trusted_proxies_are_addresses_or_networks() -> None:
    proxies = ["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"]
    cfg = parse_config(minimal(server={"trusted_proxies": proxies}))
    assert cfg.server.trusted_proxies == tuple(proxies)
    assert parse_config(tomllib.loads(to_toml(cfg))) == cfg


@pytest.mark.parametrize(
    ("proxies", "message"),
    [
        ("10.0.0.1", "server.trusted_proxies: expected an array of strings, got string"),
        (["proxy.example"], "server.trusted_proxies[0]: expected an IP address or a network"),
        (["10.0.0.0/33"], "server.trusted_proxies[0]: expected an IP address or a network"),
        ([""], "server.trusted_proxies[0]: must not be empty"),
    ],
)
def test_trusted_proxy_errors_name_the_entry(proxies: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(minimal(server={"trusted_proxies": proxies}))


def test_cors_origins_are_normalised_origins() -> None:
    origins = ["https://Mail.Example.org/", "http://127.0.0.1:8081"]
    cfg = parse_config(minimal(server={"cors_origins": origins}))
    assert cfg.server.cors_origins == ("https://mail.example.org", "http://127.0.0.1:8081")
    assert parse_config(tomllib.loads(to_toml(cfg))) == cfg


@pytest.mark.parametrize(
    ("origins", "message"),
    [
        ("https://a.example", "server.cors_origins: expected an array of strings, got string"),
        (["https://a.example/app"], "server.cors_origins[0]: expected an origin"),
        (["a.example"], "server.cors_origins[0]: expected an origin"),
        (["ftp://a.example"], "server.cors_origins[0]: expected an origin"),
        (["https://a.example?x=1"], "server.cors_origins[0]: expected an origin"),
        (["*"], "server.cors_origins[0]: expected an origin"),
        ([""], "server.cors_origins[0]: must not be empty"),
    ],
)
def test_cors_origin_errors_name_the_entry(origins: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(minimal(server={"cors_origins": origins}))


def test_failed_login_limits_are_checked() -> None:
    cfg = parse_config(
        minimal(auth={"failed_logins_per_address": 3, "failed_logins_per_username_seconds": 60})
    )
    assert cfg.auth.failed_logins_per_address == 3
    assert cfg.auth.failed_logins_per_username_seconds == 60.0
    with pytest.raises(ConfigError, match=r"auth\.failed_logins_per_username: must be at least 1"):
        parse_config(minimal(auth={"failed_logins_per_username": 0}))
    with pytest.raises(ConfigError, match=r"auth\.failed_logins_per_address_seconds: must be pos"):
        parse_config(minimal(auth={"failed_logins_per_address_seconds": 0}))


# --- submission: logins that could not send ------------------------------------------------

_SMTP = {"host": "smtp.example.org"}


@pytest.mark.parametrize(
    ("tables", "warned"),
    [
        ({}, None),  # no [smtp] of its own: submission is not configured
        ({"smtp": _SMTP}, ""),
        ({"smtp": _SMTP, "submission": {"default_domain": "example.org"}}, None),
        ({"smtp": _SMTP, "submission": {"identities_any_from": True}}, None),
        (
            {
                "smtp": _SMTP,
                "submission": {
                    "identities": [
                        {"username": "bob", "email": "b@example.org"},
                        {"username": "Alice", "email": "a@example.org"},
                        {"username": "bob", "email": "*@example.net"},
                    ]
                },
            },
            ", except Alice, bob (named in submission.identities)",
        ),
    ],
)
def test_submission_without_identities_for_plain_logins_is_a_warning(
    tables: dict[str, Any], warned: str | None
) -> None:
    """Identities come from the configuration (RFC 8621 §6): a login that is not an address
    gets one only from default_domain or an identities entry, and without one cannot send."""
    warnings = submission_warnings(parse_config(minimal(**tables)))
    if warned is None:
        assert warnings == []
    else:
        [warning] = warnings
        assert warning.startswith(
            'submission: a login that is not an address ("bob") gets no Identity and cannot'
            f" send{warned}; set submission.default_domain"
        )


def test_push_token_settings() -> None:
    cfg = parse_config(
        minimal(auth={"push_token_seconds": 600, "push_token_key_file": "/etc/imapjmap/key"})
    )
    assert cfg.auth.push_token_seconds == 600.0
    assert cfg.auth.push_token_key_file == "/etc/imapjmap/key"
    assert parse_config(tomllib.loads(to_toml(cfg))) == cfg
    with pytest.raises(ConfigError, match=r"auth\.push_token_seconds: must be positive"):
        parse_config(minimal(auth={"push_token_seconds": 0}))
    with pytest.raises(ConfigError, match=r"auth\.push_token_key_file: must not be empty"):
        parse_config(minimal(auth={"push_token_key_file": ""}))


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"concurrent_request_wait_seconds": -1}, "must be positive"),
        ({"max_waiting_requests": 0}, "must be at least 1"),
        ({"max_concurrent_requests": 3}, "must be at least 4"),
    ],
)
def test_request_queue_settings_are_checked(limits: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(minimal(limits=limits))
    assert parse_config(minimal(limits={"concurrent_request_wait_seconds": 0})).limits == (
        LimitsConfig(concurrent_request_wait_seconds=0.0)
    )


# --- several upstreams ([[upstreams]]) ------------------------------------------------------


def _with(upstreams: object) -> dict[str, Any]:
    return {**minimal(), "upstreams": upstreams}


def _entry(*domains: str, host: str = "imap.example.net", **more: Any) -> dict[str, Any]:
    return {"domains": list(domains), "imap": {"host": host}, **more}


def test_an_upstreams_entry_takes_the_top_level_tables_and_is_named_by_its_first_domain() -> None:
    cfg = parse_config(
        _with(
            [
                _entry("*.Example.NET.", "example.net", smtp={"host": "smtp.example.net"}),
            ]
        )
    )
    assert cfg.default_upstream
    assert cfg.upstreams == (
        UpstreamConfig(
            ("*.example.net", "example.net"),
            ImapConfig(host="imap.example.net"),
            "example.net",
            SmtpConfig(host="smtp.example.net"),
        ),
    )
    assert [u.name for u in cfg.all_upstreams()] == ["default", "example.net"]


def test_without_imap_there_is_no_default_upstream() -> None:
    cfg = parse_config({"upstreams": [_entry("example.net")]})
    assert not cfg.default_upstream
    assert cfg.default is None
    assert [u.name for u in cfg.all_upstreams()] == ["example.net"]
    assert cfg.upstream_for("alice") is None
    assert cfg.upstream_for("alice@example.org") is None


_CHOOSING = parse_config(
    _with(
        [
            _entry("example.net", "*.example.net", name="net"),
            _entry("*.eu.example.net", host="imap.eu.example.net", name="eu"),
            _entry("shop.eu.example.net", host="imap.shop.example.net", name="shop"),
        ]
    )
)


@pytest.mark.parametrize(
    ("login", "chosen"),
    [
        ("alice@example.net", "net"),
        ("ALICE@Example.Net", "net"),  # domains ignore case
        ("alice@example.net.", "net"),  # a trailing dot names the same domain
        ("alice@mx.example.net", "net"),
        ("alice@a.eu.example.net", "eu"),  # the longer pattern wins
        ("alice@shop.eu.example.net", "shop"),  # an exact domain wins over any pattern
        ("alice@eu.example.net", "net"),  # *.eu.example.net is its subdomains only
        ("alice@example.org", "default"),
        ("alice@notexample.net", "default"),  # a pattern matches at a dot
        ("alice", "default"),  # no domain
        ("a@b@example.net", "net"),  # the domain is after the last @
        ("alice@", "default"),
    ],
)
def test_a_login_is_served_by_the_upstream_of_its_domain(login: str, chosen: str) -> None:
    upstream = _CHOOSING.upstream_for(login)
    assert upstream is not None and upstream.name == chosen
    assert _CHOOSING.upstream_named(chosen) == upstream


UPSTREAM_ERRORS = [
    (
        _with([_entry("example.net", imapp={"host": "x"})]),
        "upstreams[0].imapp: unknown table (did you mean imap?)",
    ),
    (
        _with([_entry("example.net", sieve_host="x")]),
        "upstreams[0].sieve_host: unknown key",
    ),
    (
        _with([{"domains": ["example.net"]}]),
        "upstreams[0].imap: required table is missing",
    ),
    (
        _with([{"domains": ["example.net"], "imap": {}}]),
        "upstreams[0].imap.host: required key is missing",
    ),
    (
        _with([{"imap": {"host": "x"}}]),
        "upstreams[0].domains: required key is missing",
    ),
    (
        _with([_entry()]),
        "upstreams[0].domains: name at least one domain",
    ),
    (
        _with([_entry("example.net", host="x:143")]),
        "upstreams[0].imap.host: expected a host name or IP address without a port",
    ),
    (
        _with([_entry("example.net", smtp={"security": "ssl"})]),
        "upstreams[0].smtp.security: must be one of tls, starttls, none",
    ),
    (
        _with([_entry("example.net", imap={"host": "x", "pool_size": 0})]),
        "upstreams[0].imap.pool_size: must be at least 1",
    ),
    (
        _with([_entry("*.*.example.net")]),
        "upstreams[0].domains[0]: expected a domain such as example.org or *.example.org",
    ),
    (
        _with([_entry("exa mple.net")]),
        "upstreams[0].domains[0]: expected a domain",
    ),
    (
        _with([_entry("example.net"), _entry("a.example", "Example.NET", name="b")]),
        "upstreams[1].domains[1]: example.net is in upstreams[0].domains[0] already",
    ),
    (
        _with([_entry("a.example", "a.example")]),
        "upstreams[0].domains[1]: a.example is in upstreams[0].domains[0] already",
    ),
    (
        _with([_entry("a.example", name="x"), _entry("b.example", name="x")]),
        "upstreams[1].name: 'x' names upstreams[0] already",
    ),
    (
        _with([_entry("a.example", name="default")]),
        'upstreams[0].name: "default" is the name of the top-level [imap] and [smtp] upstream',
    ),
    (
        _with([_entry("a.example", name="a b")]),
        "upstreams[0].name: letters, digits",
    ),
    (_with({"domains": []}), "upstreams: expected an array of tables, got table"),
    (
        {"smtp": {"host": "smtp.example.org"}, "upstreams": [_entry("a.example")]},
        "smtp: the default upstream's table needs [imap] (its host) too",
    ),
    # neither a default nor an entry: nothing serves any login
    ({"smtp": {"host": "smtp.example.org"}}, "imap.host: required key is missing"),
]


@pytest.mark.parametrize(("data", "message"), UPSTREAM_ERRORS)
def test_upstreams_errors_name_the_key_path_and_the_problem(
    data: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert message in str(info.value)


@pytest.mark.parametrize("with_default", [True, False])
def test_to_toml_round_trips_upstreams(with_default: bool) -> None:
    data: dict[str, Any] = {
        "upstreams": [
            _entry("example.net", smtp={"host": "smtp.example.net", "port": 465}),
            _entry("*.example.com", name="com", imap={"host": "i", "gmail": "on"}),
        ]
    }
    if with_default:
        data |= minimal(smtp={"host": "smtp.example.org"})
    cfg = parse_config(data)
    assert parse_config(tomllib.loads(to_toml(cfg))) == cfg


def test_an_upstream_entry_s_plaintext_is_a_warning_too() -> None:
    entry = _entry("a.example", smtp={"host": "smtp.a.example", "security": "none"})
    assert config_warnings(parse_config({"upstreams": [entry]})) == [
        'upstreams[0].smtp.security = "none": passwords and mail to smtp.a.example travel'
        " unencrypted"
    ]


@pytest.mark.parametrize(
    ("tables", "where"),
    [
        ({"imap": {"host": "mail.example.org"}}, ("mail.example.org", 4190, "starttls")),
        ({"imap": {"host": "h", "security": "none"}}, ("h", 4190, "none")),
        ({"imap": {"host": "h", "security": "starttls"}}, ("h", 4190, "starttls")),
        (
            {"imap": {"host": "h"}, "sieve": {"host": "s", "port": 2000, "security": "tls"}},
            ("s", 2000, "tls"),
        ),
    ],
)
def test_sieve_defaults_to_the_imap_host(
    tables: dict[str, Any], where: tuple[str, int, str]
) -> None:
    cfg = parse_config(tables)
    assert cfg.sieve.where(cfg.imap) == where


# --- an upstream's ManageSieve ([upstreams.sieve]) -------------------------------------------


@pytest.mark.parametrize(
    ("entry", "login", "where"),
    [
        # no [upstreams.sieve]: the entry's IMAP host, never the top-level [sieve]
        (
            _entry("a.example", host="imap.a.example"),
            "x@a.example",
            ("imap.a.example", 4190, "starttls"),
        ),
        (
            _entry("a.example", host="i", imap={"host": "i", "security": "none"}),
            "x@a.example",
            ("i", 4190, "none"),
        ),
        (
            _entry("a.example", sieve={"host": "s.a.example", "port": 2000, "security": "tls"}),
            "x@a.example",
            ("s.a.example", 2000, "tls"),
        ),
        # the default upstream keeps the top-level [sieve]
        (_entry("a.example", sieve={"port": 2000}), "x@b.example", ("top", 3000, "none")),
        (_entry("a.example", sieve={"port": 2000}), "x", ("top", 3000, "none")),
    ],
)
def test_a_login_s_managesieve_is_its_upstream_s(
    entry: dict[str, Any], login: str, where: tuple[str, int, str]
) -> None:
    top = {"imap": {"host": "h"}, "sieve": {"host": "top", "port": 3000, "security": "none"}}
    cfg = parse_config({**top, "upstreams": [entry]})
    upstream = cfg.upstream_for(login)
    assert upstream is not None
    assert cfg.sieve_for(upstream.name).where(upstream.imap) == where
    assert cfg.sieve_for(upstream.name) == upstream.sieve


def test_an_upstream_s_sieve_can_be_turned_off_alone() -> None:
    cfg = parse_config(_with([_entry("a.example", sieve={"enabled": False})]))
    assert not cfg.sieve_for("a.example").enabled
    assert cfg.sieve_for("default").enabled


@pytest.mark.parametrize(
    ("sieve", "message"),
    [
        ({"security": "ssl"}, "upstreams[0].sieve.security: must be one of tls, starttls, none"),
        ({"port": 0}, "upstreams[0].sieve.port: must be 1-65535"),
        ({"host": "a:4190"}, "upstreams[0].sieve.host: expected a host name"),
        ({"enabled": "yes"}, "upstreams[0].sieve.enabled: expected a boolean"),
        ({"hots": "s"}, "upstreams[0].sieve.hots: unknown key (did you mean host?)"),
        ("s.example", "upstreams[0].sieve: expected a table, got string"),
    ],
)
def test_upstreams_sieve_is_checked_like_sieve(sieve: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_with([_entry("a.example", sieve=sieve)]))
    assert message in str(info.value)


def test_a_sieve_table_without_a_default_upstream_is_an_error() -> None:
    with pytest.raises(ConfigError, match="sieve: the default upstream's table needs"):
        parse_config({"sieve": {"port": 2000}, "upstreams": [_entry("a.example")]})


@pytest.mark.parametrize(
    ("sieve", "warnings"),
    [
        (
            {"security": "none", "host": "s.a.example"},
            ["ManageSieve (upstreams[0].sieve.security)"],
        ),
        ({"security": "none", "host": "127.0.0.1"}, []),
        ({"security": "none", "host": "s.a.example", "enabled": False}, []),
        ({"host": "s.a.example"}, []),
    ],
)
def test_an_upstream_s_plaintext_managesieve_is_a_warning(
    sieve: dict[str, Any], warnings: list[str]
) -> None:
    cfg = parse_config({"upstreams": [_entry("a.example", sieve=sieve)]})
    assert [w.split(":")[0] for w in config_warnings(cfg)] == warnings


def test_to_toml_round_trips_an_upstream_s_sieve() -> None:
    entry = _entry("a.example", sieve={"host": "s", "port": 2000, "enabled": False})
    cfg = parse_config(_with([entry]))
    assert parse_config(tomllib.loads(to_toml(cfg))) == cfg
