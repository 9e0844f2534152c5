"""Import rules for the imapjmap package, checked on the AST of every module.

1. Each I/O library has owners and nobody else imports it: aioimaplib only in
   imapjmap.imap.session, aiosmtplib only in imapjmap.smtp, sqlite3 (and aiosqlite) only in
   imapjmap.store.db, aiohttp only under imapjmap.http, aiosmtpd only under devservers.
2. Nothing outside imapjmap.http imports from it, except imapjmap.cli and devservers.demo,
   and those only inside a function (so that importing them loads no aiohttp).
3. Nothing in imapjmap imports from tests.
4. Nothing in imapjmap imports devservers (the throw-away servers of the source checkout,
   which are not installed), except imapjmap.cli inside the function that runs the demo.

``import x``, ``from x import y``, relative imports and ``importlib.import_module("x")`` /
``__import__("x")`` with a literal name all count, wherever they appear.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
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
    "aioimaplib": ("imapjmap.imap.session", _only("imapjmap.imap.session")),
    "aiosmtplib": ("imapjmap.smtp", _only("imapjmap.smtp")),
    "sqlite3": ("imapjmap.store.db", _only("imapjmap.store.db")),
    "aiosqlite": ("imapjmap.store.db", _only("imapjmap.store.db")),
    "aiohttp": ("modules under imapjmap.http", _under("imapjmap.http")),
    "aiosmtpd": ("modules under devservers", _under("devservers")),
}
HTTP = "imapjmap.http"
HTTP_LAZY_IMPORTERS = frozenset({"imapjmap.cli", "devservers.demo"})
DEVSERVERS = "devservers"
DEVSERVERS_LAZY_IMPORTERS = frozenset({"imapjmap.cli"})


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


def violations(module: str, source: str, *, is_package: bool = False) -> list[str]:
    """One message per broken rule, naming the module, the line and the import."""
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
    return found


def package_modules() -> Iterator[tuple[str, Path]]:
    """Every module of imapjmap and of the checkout's devservers."""
    paths = [*PACKAGE_DIR.rglob("*.py"), *(CHECKOUT / DEVSERVERS).rglob("*.py")]
    for path in sorted(paths):
        parts = path.relative_to(CHECKOUT).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


# --- the checker itself --------------------------------------------------------------------

CASES = [
    ("imapjmap.imap.session", "import aioimaplib", []),
    (
        "imapjmap.imap.pool",
        "import aioimaplib",
        ["only imapjmap.imap.session may import aioimaplib"],
    ),
    ("imapjmap.imap.pool", "from aioimaplib import aioimaplib as a", ["may import aioimaplib"]),
    ("imapjmap.smtp", "import aiosmtplib", []),
    ("imapjmap.methods.submission", "from aiosmtplib import SMTP", ["only imapjmap.smtp"]),
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
]


@pytest.mark.parametrize(("module", "source", "expected"), CASES)
def test_checker(module: str, source: str, expected: list[str]) -> None:
    found = violations(module, source, is_package=module in ("imapjmap.http", "imapjmap.methods"))
    assert len(found) == len(expected), found
    for message, part in zip(found, expected, strict=True):
        assert message.startswith(f"{module}:"), message
        assert part in message


def test_messages_name_module_line_and_import() -> None:
    (message,) = violations("imapjmap.sync", "import os\nimport aioimaplib\n")
    assert message == (
        "imapjmap.sync:2: `import aioimaplib`: only imapjmap.imap.session may import aioimaplib"
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
        for message in violations(module, path.read_text(), is_package=path.stem == "__init__")
    ]
    assert not found, "import rules broken:\n" + "\n".join(found)
