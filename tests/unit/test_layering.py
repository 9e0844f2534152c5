"""The layers contract of the imapjmap package, checked on the AST of every module
(docs/design.md, "Layers").

1. Each I/O library has owners and nobody else imports it: aiosmtplib only in imapjmap.smtp,
   sqlite3 (and aiosqlite) only in imapjmap.store.db, aiohttp only under imapjmap.http,
   aiosmtpd only under devservers.
2. Nothing outside imapjmap.http imports from it, except imapjmap.cli and devservers.demo,
   and those only inside a function (so that importing them loads no aiohttp).
3. Nothing in imapjmap imports from tests.
4. Nothing in imapjmap imports devservers (the throw-away servers of the source checkout,
   which are not installed), except imapjmap.cli inside the function that runs the demo.
5. Layers: each unit (a package of imapjmap, a top-level module, devservers, or a module
   that :data:`MODULE_UNITS` sets apart from its package) imports only
   from itself and from the units :data:`LAYERS` lists for it, which form no cycle (http and
   devservers are rules 2 and 4).  Where today's code breaks the intended rule, the import
   is listed in :data:`IMPORT_DEBT` with its reason; a new one fails, and a listed one that
   is gone fails too, so the list only shrinks.  The seam to the mail server is one such
   narrower entry: handlers and blob reads see it through ``imapjmap.upstream.api`` only,
   never its IMAP implementation (:data:`SEAM`).
6. A server's name (Dovecot, Cyrus, Gmail) appears in code (identifiers, imported names,
   strings other than docstrings, the module's own name; not comments or docstrings) only in
   the modules that tell servers apart and hold their quirks (:data:`QUIRK_HOMES`), and
   where today's code branches on a server elsewhere (:data:`QUIRK_DEBT`, same rules).

``import x``, ``from x import y``, relative imports and ``importlib.import_module("x")`` /
``__import__("x")`` with a literal name all count, wherever they appear.
"""

from __future__ import annotations

import ast
import graphlib
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import imapjmap

PACKAGE_DIR = Path(imapjmap.__file__).resolve().parent
CHECKOUT = PACKAGE_DIR.parent


def _only(*modules: str) -> Callable[[str], bool]:
    return lambda module: module in modules


def _under(package: str) -> Callable[[str], bool]:
    return lambda module: module == package or module.startswith(package + ".")


# library -> (who may import it, as said in the failure message; the test for it)
OWNERS: dict[str, tuple[str, Callable[[str], bool]]] = {
    "aiosmtplib": ("imapjmap.smtp", _only("imapjmap.smtp")),
    "sqlite3": ("imapjmap.store.db", _only("imapjmap.store.db")),
    "aiosqlite": ("imapjmap.store.db", _only("imapjmap.store.db")),
    "aiohttp": ("modules under imapjmap.http", _under("imapjmap.http")),
    "aiosmtpd": ("modules under devservers", _under("devservers")),
    "prometheus_client": ("imapjmap.metrics", _only("imapjmap.metrics")),
}
HTTP = "imapjmap.http"
HTTP_LAZY_IMPORTERS = frozenset({"imapjmap.cli", "devservers.demo"})
DEVSERVERS = "devservers"
DEVSERVERS_LAZY_IMPORTERS = frozenset({"imapjmap.cli"})

# Rule 5.  Top to bottom: the front end; the JMAP handlers; push and the sync engine (the
# cache kept equal to the upstream); the seam to the mail server (upstream); the adapters
# (IMAP, the cache, SMTP); the pure cores;
# the base every layer may use.  Entries are units or narrower module prefixes.
ERRORS, CONFIG, CREDENTIALS = "imapjmap.errors", "imapjmap.config", "imapjmap.credentials"
JMAP, MIME, STORE, IMAP, SMTP = (
    "imapjmap.jmap",
    "imapjmap.mime",
    "imapjmap.store",
    "imapjmap.imap",
    "imapjmap.smtp",
)
SYNC, PUSH, METHODS = "imapjmap.sync", "imapjmap.push", "imapjmap.methods"
BLOBS, ANSWERS, QUERY = "imapjmap.blobs", "imapjmap.answers", "imapjmap.query"
SERVICES = "imapjmap.services"
CLUSTER = "imapjmap.cluster"
MANAGESIEVE = "imapjmap.managesieve"
ADMIN = "imapjmap.admin"
UPSTREAM, PROFILES = "imapjmap.upstream", "imapjmap.upstream.profiles"
# Modules that are units of their own, below their package: the server profiles are a pure
# table the IMAP adapter consults at login, while the rest of upstream/ is built on imap/.
MODULE_UNITS: tuple[str, ...] = (PROFILES,)
# what the JMAP side sees of the mail server: the Protocols and their data, not upstream.imap
SEAM = f"{UPSTREAM}.api"
# the event counters are counted where events happen, in any layer (imapjmap.metrics)
METRICS = "imapjmap.metrics"
# ending background tasks, bounded (imapjmap.tasks): any layer that starts them
TASKS = "imapjmap.tasks"
BASE = (ERRORS, CONFIG, CREDENTIALS, METRICS, TASKS)
SYNC_SEES_OF_IMAP = (f"{IMAP}.models", f"{IMAP}.parse", f"{IMAP}.parse_fetch")
LAYERS: dict[str, tuple[str, ...]] = {
    "devservers": ("imapjmap",),
    "imapjmap.__main__": ("imapjmap.cli",),
    "imapjmap.cli": (
        "imapjmap.__version__",
        ERRORS,
        CONFIG,
        "imapjmap.logsetup",
        "imapjmap.workers",
        "imapjmap.compiled",
        ADMIN,
    ),
    # the operator's commands: the cache read and written directly, the IMAP server counted
    ADMIN: (*BASE, STORE, IMAP),
    HTTP: (
        *BASE,
        "imapjmap.logsetup",
        SERVICES,
        CLUSTER,  # the per-account limits' slots, held over the instances
        METHODS,
        PUSH,
        SYNC,
        BLOBS,
        UPSTREAM,
        IMAP,
        STORE,
        SMTP,
        JMAP,
        MIME,
    ),
    METHODS: (
        *BASE,
        SERVICES,
        PUSH,
        SYNC,
        BLOBS,
        ANSWERS,
        QUERY,
        SEAM,
        PROFILES,
        STORE,
        SMTP,
        JMAP,
        MIME,
    ),
    # builds every long-lived service: the cache, the pools and the seam over them, the
    # syncs, push, the answers
    SERVICES: (*BASE, CLUSTER, PUSH, SYNC, ANSWERS, UPSTREAM, IMAP, STORE),
    # push watches and refreshes through the seam (upstream.api)
    PUSH: (ERRORS, CONFIG, TASKS, CLUSTER, SYNC, SEAM, STORE, JMAP),
    # a refresh reads the server through upstream.refresh_reads, the email sync through
    # upstream.sync_reads: of the IMAP side only its data and the parsing of FETCH records
    SYNC: (ERRORS, CONFIG, CLUSTER, UPSTREAM, PROFILES, *SYNC_SEES_OF_IMAP, STORE, JMAP, MIME),
    # several instances on one cache: locks and messages, nothing of the rest
    CLUSTER: (ERRORS, TASKS),
    # blob ids and uploads, and message octets read through the upstream and kept
    BLOBS: (ERRORS, SEAM, STORE, JMAP, MIME),
    # in-memory answers of recent calls, keyed by the cache's state
    ANSWERS: (JMAP,),
    # a pure planner: a JMAP filter into the cache's query types and the upstream's terms
    QUERY: (ERRORS, JMAP, f"{STORE}.email_queries", f"{UPSTREAM}.search"),
    # the seam handlers see (api) and its implementation over IMAP
    UPSTREAM: (*BASE, PROFILES, IMAP, MANAGESIEVE),
    # the ManageSieve client beside IMAP: a pure protocol core and its one connection
    MANAGESIEVE: (ERRORS,),
    IMAP: (*BASE, PROFILES),
    PROFILES: (ERRORS, CONFIG),
    STORE: (ERRORS, TASKS),
    SMTP: BASE,
    JMAP: (ERRORS, CONFIG),
    # translating an IMAP ENVELOPE / BODYSTRUCTURE record is the one use of the IMAP side
    MIME: (ERRORS, JMAP, "imapjmap.imap.models"),
    CONFIG: (ERRORS,),
    CREDENTIALS: (ERRORS,),
    ERRORS: (),
    METRICS: (),
    TASKS: (),
    "imapjmap.logsetup": (),
    "imapjmap.workers": (),
    # the optional compiled build of the parsing modules, and which of them run compiled
    "imapjmap.compiled": (),
    "imapjmap.build_ext": ("imapjmap.compiled",),
    "imapjmap": ("imapjmap.compiled",),
}
# (module, unit it imports against LAYERS) -> why it does so today
IMPORT_DEBT: dict[tuple[str, str], str] = {
    (CONFIG, JMAP): "two limits' defaults come from jmap.limits, and jmap.session reads Config",
}

# Rule 6.  module -> why a server's name may appear there
SERVER_NAME: re.Pattern[str] = re.compile(r"dovecot|cyrus|gmail", re.IGNORECASE)
QUIRK_HOMES: dict[str, str] = {
    PROFILES: "tells servers apart (ID, CAPABILITY): each one's profile, Gmail mode",
    f"{SYNC}.gmail": "Gmail mode's reading side: labels as mailboxes, grace after writes",
    f"{UPSTREAM}.gmail": "Gmail's search dialect (X-GM-RAW) and label writes (X-GM-LABELS)",
    f"{UPSTREAM}.imap_search": "searches All Mail in Gmail's dialect where labels are mailboxes",
    f"{UPSTREAM}.imap": "opens a holding folder for Gmail's label writes",
    CONFIG: "the operator's imap.gmail switch and the Gmail profile URL for Bearer logins",
}
QUIRK_DEBT: dict[str, str] = {}


@dataclass(frozen=True)
class Import:
    target: str  # absolute dotted name: the module, or module.name for "from module import name"
    line: int
    statement: str
    lazy: bool  # inside a function body


class _Collector(ast.NodeVisitor):
    def __init__(self, package: str) -> None:
        self.package = package  # the package that relative imports start from
        self.depth = 0
        self.found: list[Import] = []

    def _add(self, target: str, node: ast.stmt | ast.expr) -> None:
        self.found.append(Import(target, node.lineno, ast.unparse(node), self.depth > 0))

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parts = self.package.split(".")
            parts = parts[: len(parts) - node.level + 1]
            base = ".".join([*parts, base] if base else parts)
        for alias in node.names:
            self._add(base if alias.name == "*" else f"{base}.{alias.name}", node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        first = node.args[0] if node.args else None
        literal = first.value if isinstance(first, ast.Constant) else None
        # import_module(".x", package) is relative to a runtime value: not followed
        is_import = name in ("import_module", "__import__")
        if is_import and isinstance(literal, str) and not literal.startswith("."):
            self._add(literal, node)
        self.generic_visit(node)


def imports_of(module: str, source: str, *, is_package: bool = False) -> list[Import]:
    collector = _Collector(module if is_package else module.rpartition(".")[0])
    collector.visit(ast.parse(source))
    return collector.found


def unit_of(module: str) -> str:
    """The unit of rule 5 that a module (or an imported name) belongs to."""
    for unit in MODULE_UNITS:
        if _under(unit)(module):
            return unit
    parts = module.split(".")
    return parts[0] if parts[0] != "imapjmap" or len(parts) == 1 else ".".join(parts[:2])


def _layer_break(module: str, target: str) -> str | None:
    """The unit ``target`` belongs to when rule 5 does not let ``module`` import it."""
    own, top = unit_of(module), target.split(".")[0]
    if top not in ("imapjmap", DEVSERVERS) or _under(HTTP)(target) or top == DEVSERVERS:
        return None  # libraries: rule 1; http and devservers: rules 2 and 4
    if unit_of(target) == own or any(_under(a)(target) for a in LAYERS.get(own, ())):
        return None
    return unit_of(target)


def layer_breaks(module: str, source: str, *, is_package: bool = False) -> set[str]:
    """The units ``module`` imports against rule 5, known debt or not."""
    found = (
        _layer_break(module, i.target) for i in imports_of(module, source, is_package=is_package)
    )
    return {unit for unit in found if unit is not None}


def violations(
    module: str, source: str, *, is_package: bool = False, debt: Collection[tuple[str, str]] = ()
) -> list[str]:
    """One message per broken rule, naming the module, the line and the import; rule 5's
    breaks listed in ``debt`` (as module, unit) are not reported."""
    found: list[str] = []
    for imp in imports_of(module, source, is_package=is_package):
        where = f"{module}:{imp.line}: `{imp.statement}`"
        top = imp.target.split(".")[0]
        if top in OWNERS and not OWNERS[top][1](module):
            found.append(f"{where}: only {OWNERS[top][0]} may import {top}")
        if _under(HTTP)(imp.target) and not _under(HTTP)(module):
            if module not in HTTP_LAZY_IMPORTERS:
                found.append(f"{where}: nothing outside {HTTP} imports it (except the CLI)")
            elif not imp.lazy:
                found.append(f"{where}: import {HTTP} inside the function that needs it")
        if top == "tests":
            found.append(f"{where}: the package must not import from tests")
        if top == DEVSERVERS and _under("imapjmap")(module):
            if module not in DEVSERVERS_LAZY_IMPORTERS:
                found.append(f"{where}: the installed package must not import {DEVSERVERS}")
            elif not imp.lazy:
                found.append(f"{where}: import {DEVSERVERS} inside the function that needs it")
        unit = _layer_break(module, imp.target)
        if unit is not None and (module, unit) not in debt:
            own = unit_of(module)
            if own not in LAYERS:
                found.append(f"{where}: {own} is not in LAYERS: say what it may import")
            else:
                found.append(f"{where}: {own} may not import {unit} (see LAYERS)")
    return found


def _docstrings(tree: ast.AST) -> set[int]:
    bodies = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, bodies)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def _code_words(node: ast.AST, docstrings: set[int]) -> str:
    """What of ``node`` is code: a name it binds or uses, or a string that is not a docstring."""
    match node:
        case ast.Name(id=text) | ast.Attribute(attr=text) | ast.arg(arg=text):
            return text
        case ast.FunctionDef(name=text) | ast.AsyncFunctionDef(name=text) | ast.ClassDef(name=text):
            return text
        case ast.keyword(arg=str(text)) | ast.alias(name=text):
            return f"{text} {node.asname or ''}" if isinstance(node, ast.alias) else text
        case ast.Constant(value=str(text)) if id(node) not in docstrings:
            return text
    return ""


def server_names(module: str, source: str) -> set[str]:
    """The server names (lower case) in ``module``'s code and in its own name (rule 6)."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    words = [module, *(_code_words(node, docstrings) for node in ast.walk(tree))]
    return {match.lower() for word in words for match in SERVER_NAME.findall(word)}


def package_modules() -> Iterator[tuple[str, Path]]:
    """Every module of imapjmap and of the checkout's devservers."""
    paths = [*PACKAGE_DIR.rglob("*.py"), *(CHECKOUT / DEVSERVERS).rglob("*.py")]
    for path in sorted(paths):
        parts = path.relative_to(CHECKOUT).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


# --- the checker itself --------------------------------------------------------------------

CASES = [
    ("imapjmap.imap.pool", "import aiosmtplib", ["only imapjmap.smtp may import aiosmtplib"]),
    ("imapjmap.imap.pool", "from aiosmtplib import smtp as a", ["may import aiosmtplib"]),
    ("imapjmap.smtp", "import aiosmtplib", []),
    ("imapjmap.methods.submission.handlers", "from aiosmtplib import SMTP", ["only imapjmap.smtp"]),
    ("imapjmap.store.db", "import sqlite3", []),
    ("imapjmap.store.queries", "import sqlite3", ["only imapjmap.store.db may import sqlite3"]),
    ("imapjmap.sync", "def f():\n    import sqlite3", ["may import sqlite3"]),
    ("imapjmap.http.views", "from aiohttp import web", []),
    ("imapjmap.http", "import aiohttp", []),
    ("imapjmap.methods.core", "import aiohttp.web", ["only modules under imapjmap.http"]),
    ("devservers.sink", "from aiosmtpd.controller import Controller", []),
    ("imapjmap.smtp", "import aiosmtpd", ["only modules under devservers may import aiosmtpd"]),
    ("imapjmap.cli", "def f():\n    from imapjmap.http.app import serve", []),
    ("imapjmap.cli", "def f():\n    importlib.import_module('imapjmap.http.app')", []),
    ("devservers.demo", "async def f():\n    from imapjmap.http import app", []),
    ("imapjmap.cli", "from imapjmap.http.app import serve", ["inside the function that needs"]),
    ("imapjmap.methods.core", "from imapjmap.http.app import X", ["nothing outside imapjmap.http"]),
    ("imapjmap.methods.core", "from imapjmap import http", ["nothing outside imapjmap.http"]),
    ("imapjmap.methods.core", "from .. import http", ["nothing outside imapjmap.http"]),
    ("imapjmap.methods", "from ..http import views", ["nothing outside imapjmap.http"]),
    ("imapjmap.sync", "__import__('imapjmap.http.auth')", ["nothing outside imapjmap.http"]),
    ("imapjmap.http.auth", "from . import views", []),
    ("imapjmap.config", "from tests.fakes import FakeMailSource", ["must not import from tests"]),
    ("imapjmap.config", "import tests", ["must not import from tests"]),
    ("imapjmap.config", "import logging, tomllib\nfrom imapjmap.errors import ConfigError", []),
    ("imapjmap.cli", "def f():\n    importlib.import_module('devservers.demo')", []),
    ("imapjmap.cli", "from devservers import demo", ["inside the function that needs it"]),
    ("imapjmap.config", "def f():\n    import devservers", ["must not import devservers"]),
    ("imapjmap.http.app", "from devservers.smtp import SmtpSink", ["must not import devservers"]),
    ("devservers.demo", "from devservers.dovecot import DovecotServer", []),
    ("devservers.demo", "from imapjmap.config import Config", []),
    # rule 5
    (
        "imapjmap.methods.email.set",
        "from imapjmap.imap.session import ImapSession",
        ["imapjmap.methods may not import imapjmap.imap"],
    ),
    (
        "imapjmap.methods.email.set",
        "from ...imap import commands",
        ["may not import imapjmap.imap"],
    ),
    ("imapjmap.methods.email.set", "from imapjmap.sync import writes\nfrom . import core", []),
    (
        "imapjmap.store.queries",
        "from imapjmap.sync.engine import AccountSync",
        ["imapjmap.store may not import imapjmap.sync"],
    ),
    (
        "imapjmap.sync.engine",
        "def f():\n    from imapjmap.push import hub",
        ["imapjmap.sync may not import imapjmap.push"],
    ),
    ("imapjmap.push.watcher", "from imapjmap.sync.engine import AccountSync", []),
    ("imapjmap.sync.parsing", "from imapjmap.imap.parse_fetch import fast_constructor", []),
    (
        "imapjmap.sync.engine",
        "from imapjmap.imap.pool import ImapPool",
        ["imapjmap.sync may not import imapjmap.imap"],
    ),
    (
        "imapjmap.sync.engine",
        "from imapjmap.imap.session import ImapSession",
        ["imapjmap.sync may not import imapjmap.imap"],
    ),
    ("imapjmap.sync.engine", "from imapjmap.upstream.refresh_reads import RefreshReads", []),
    (
        "imapjmap.imap.session",
        "from imapjmap.jmap.errors import MethodError",
        ["imapjmap.imap may not import imapjmap.jmap"],
    ),
    (
        "imapjmap.jmap.dispatch",
        "from imapjmap.methods import REGISTRY",
        ["imapjmap.jmap may not import imapjmap.methods"],
    ),
    ("imapjmap.mime.envelope", "from imapjmap.imap.models import Envelope", []),
    (
        "imapjmap.mime.envelope",
        "from imapjmap.imap.session import ImapSession",
        ["imapjmap.mime may not import imapjmap.imap"],
    ),
    (
        "imapjmap.mime.envelope",
        "from imapjmap.imap import models, parse",
        ["imapjmap.mime may not import imapjmap.imap"],
    ),
    (
        "imapjmap.errors",
        "from imapjmap.config import Config",
        ["imapjmap.errors may not import imapjmap.config"],
    ),
    (
        "imapjmap.config",
        "import importlib\nimportlib.import_module('imapjmap.store.db')",
        ["imapjmap.config may not import imapjmap.store"],
    ),
    ("imapjmap", "from imapjmap.config import Config", ["imapjmap may not import imapjmap.config"]),
    ("imapjmap.cli", "from imapjmap import __version__\nfrom imapjmap.config import Config", []),
    (
        "imapjmap.elsewhere",
        "from imapjmap.imap.pool import ImapPool",
        ["imapjmap.elsewhere is not in LAYERS"],
    ),
    ("imapjmap.elsewhere", "import json", []),
    # a module that is a unit of its own (MODULE_UNITS)
    ("imapjmap.imap.session", "from imapjmap.upstream.profiles import choose", []),
    ("imapjmap.imap.session", "from imapjmap.upstream import profiles", []),
    (
        "imapjmap.imap.pool",
        "from imapjmap.upstream.api import Upstream",
        ["imapjmap.imap may not import imapjmap.upstream"],
    ),
    (
        "imapjmap.upstream.profiles",
        "from imapjmap.imap.session import ImapSession",
        ["imapjmap.upstream.profiles may not import imapjmap.imap"],
    ),
    ("imapjmap.upstream.imap", "from imapjmap.upstream.profiles import Profile", []),
    ("imapjmap.upstream.imap", "from imapjmap.imap.pool import ImapPool", []),
    ("imapjmap.methods.email.set", "from imapjmap.upstream.api import OpenMailbox", []),
    (
        "imapjmap.methods.email.set",
        "from imapjmap.upstream.imap import ImapUpstream",
        ["imapjmap.methods may not import imapjmap.upstream"],
    ),
    (
        "imapjmap.blobs.bodies",
        "from imapjmap.upstream import imap",
        ["imapjmap.blobs may not import imapjmap.upstream"],
    ),
    ("imapjmap.http.auth", "from imapjmap.upstream.imap import ImapUpstream", []),
    ("imapjmap.upstream.api", "from imapjmap.sync import engine", ["may not import imapjmap.sync"]),
    ("devservers.dovecot", "from imapjmap.imap.utf7 import encode", []),
]


@pytest.mark.parametrize(("module", "source", "expected"), CASES)
def test_checker(module: str, source: str, expected: list[str]) -> None:
    found = violations(module, source, is_package=module in ("imapjmap.http", "imapjmap.methods"))
    assert len(found) == len(expected), found
    for message, part in zip(found, expected, strict=True):
        assert message.startswith(f"{module}:"), message
        assert part in message


def test_listed_debt_is_not_reported_and_nothing_else_is_hidden() -> None:
    source = "from imapjmap.imap.pool import ImapPool\nfrom imapjmap.http import views\n"
    debt = [("imapjmap.methods.context", "imapjmap.imap")]
    assert layer_breaks("imapjmap.methods.context", source) == {"imapjmap.imap"}
    (message,) = violations("imapjmap.methods.context", source, debt=debt)
    assert "nothing outside imapjmap.http" in message
    assert len(violations("imapjmap.methods.mailbox.get", source, debt=debt)) == 2


NAME_CASES = [
    ('"""Dovecot opens a mailbox to answer STATUS."""\n# Cyrus too\nx = 1\n', set()),
    ("def f():\n    'On Gmail, labels.'\n    return 1\n", set()),
    ("if session.is_dovecot:\n    pass\n", {"dovecot"}),
    ("from imapjmap.sync import gmail\n", {"gmail"}),
    ("import imapjmap.sync.gmail as labels\n", {"gmail"}),
    ("log.info('Cyrus said %s', x)\n", {"cyrus"}),
    ("def f(gmail_mode: bool) -> None:\n    pass\n", {"gmail"}),
    ("f(in_gmail=True)\n", {"gmail"}),
    ("class DovecotAnchor:\n    pass\n", {"dovecot"}),
    ("X_GM_MSGID = b'X-GM-MSGID'  # an extension's items name no server\n", set()),
]


@pytest.mark.parametrize(("source", "expected"), NAME_CASES)
def test_server_names_are_found_in_code_only(source: str, expected: set[str]) -> None:
    assert server_names("imapjmap.sync.x", source) == expected


def test_a_module_named_after_a_server_is_a_place_of_its_name() -> None:
    assert server_names("imapjmap.sync.gmail", "x = 1\n") == {"gmail"}


def test_messages_name_module_line_and_import() -> None:
    (message,) = violations("imapjmap.sync", "import os\nimport aiosmtplib\n")
    assert message == (
        "imapjmap.sync:2: `import aiosmtplib`: only imapjmap.smtp may import aiosmtplib"
    )


# --- the package ---------------------------------------------------------------------------


def test_the_walker_sees_the_package() -> None:
    modules = dict(package_modules())
    assert {"imapjmap", "imapjmap.config", "imapjmap.cli", "imapjmap.http"} <= set(modules)
    assert {"devservers", "devservers.demo", "devservers.smtp"} <= set(modules)
    assert not [name for name in modules if name.startswith("imapjmap.demo")]
    cli = imports_of("imapjmap.cli", modules["imapjmap.cli"].read_text())
    assert any(i.target.startswith("imapjmap.config.") and not i.lazy for i in cli)
    assert any(i.target == "imapjmap.http.app" and i.lazy for i in cli)


def test_package_follows_the_import_rules() -> None:
    found = [
        message
        for module, path in package_modules()
        for message in violations(
            module, path.read_text(), is_package=path.stem == "__init__", debt=IMPORT_DEBT
        )
    ]
    assert not found, "import rules broken:\n" + "\n".join(found)


def test_every_listed_import_debt_is_still_owed() -> None:
    owed = {
        (module, unit)
        for module, path in package_modules()
        for unit in layer_breaks(module, path.read_text(), is_package=path.stem == "__init__")
    }
    paid = sorted(set(IMPORT_DEBT) - owed)
    assert not paid, f"no longer imported: remove from IMPORT_DEBT: {paid}"


def test_the_layers_form_no_cycle() -> None:
    graph = {unit: {unit_of(a) for a in allowed} for unit, allowed in LAYERS.items()}
    for unit, allowed in graph.items():
        allowed.discard(unit)
    order = list(graphlib.TopologicalSorter(graph).static_order())  # CycleError on a cycle
    assert order.index(ERRORS) < order.index(STORE) < order.index(SYNC) < order.index(METHODS)


def test_every_unit_of_the_package_is_in_the_layers() -> None:
    units = {unit_of(module) for module, _ in package_modules()}
    assert units - set(LAYERS) == set()
    assert set(LAYERS) - units == set(), "LAYERS names a unit that no longer exists"


def test_server_names_only_where_quirks_live() -> None:
    places = {
        module: names
        for module, path in package_modules()
        if module.startswith("imapjmap") and (names := server_names(module, path.read_text()))
    }
    elsewhere = {m: n for m, n in places.items() if m not in QUIRK_HOMES and m not in QUIRK_DEBT}
    assert not elsewhere, f"a server's name outside QUIRK_HOMES (and QUIRK_DEBT): {elsewhere}"
    paid = sorted(set(QUIRK_DEBT) - set(places))
    assert not paid, f"no server's name left there: remove from QUIRK_DEBT: {paid}"
    assert not set(QUIRK_HOMES) & set(QUIRK_DEBT)
