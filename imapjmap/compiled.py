"""The optional compiled build of the modules a first sync's parsing workers run.

``python3 -m imapjmap.build_ext`` compiles :data:`MODULES` with mypyc into extension
modules beside their sources; Python then imports those in place of the ``.py`` files.
They are an optional speed-up of pure Python, not another program: without a C compiler, or
with ``IMAPJMAP_PURE=1`` in the environment (checked when ``imapjmap`` is imported, and
inherited by the parsing workers), the same modules run from their sources.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Final

# what a parsing worker imports and spends its time in (sync.parsing.parse_batch): the
# IMAP lexer and parser, the MIME header decoders and the Email row builder
MODULES: Final = (
    "imapjmap.imap.lexer",
    "imapjmap.imap.parse_fetch",
    "imapjmap.imap.parse",
    "imapjmap.imap.utf7",
    "imapjmap.mime.codec",
    "imapjmap.mime.headers",
    "imapjmap.mime.addresses",
    "imapjmap.mime.envelope",
    "imapjmap.mime.tree",
    "imapjmap.sync.records",
)
PURE_ENV: Final = "IMAPJMAP_PURE"


class _Sources(importlib.abc.MetaPathFinder):
    """Finds :data:`MODULES` as their ``.py`` sources, even where an extension sits beside."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        name = fullname.rpartition(".")[2]
        for entry in path or ():
            source = os.path.join(entry, name + ".py")
            if os.path.isfile(source):
                return importlib.util.spec_from_file_location(fullname, source)
        return None


def pure() -> bool:
    """Whether the environment asks for the pure-Python modules."""
    return os.environ.get(PURE_ENV, "") not in ("", "0")


def install_pure_finder() -> None:
    """With ``IMAPJMAP_PURE`` set, import :data:`MODULES` from their sources (once)."""
    if pure() and not any(isinstance(f, _Sources) for f in sys.meta_path):
        sys.meta_path.insert(0, _Sources())


def is_compiled(module: ModuleType) -> bool:
    origin = getattr(module, "__file__", None) or ""
    return origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def compiled_modules() -> list[str]:
    """Which of :data:`MODULES` this process runs compiled (importing them)."""
    return [name for name in MODULES if is_compiled(importlib.import_module(name))]


def describe() -> str:
    """One line for the log and ``imapjmap --version``: how the parsing modules run."""
    running = compiled_modules()
    if len(running) == len(MODULES):
        return f"parsing modules compiled (mypyc, {len(running)} modules)"
    if not running:
        why = f"{PURE_ENV} set" if pure() else "no compiled build"
        return f"parsing modules pure Python ({why})"
    return f"parsing modules partly compiled: {', '.join(running)} (rebuild them)"
