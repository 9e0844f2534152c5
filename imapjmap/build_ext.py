"""``python3 -m imapjmap.build_ext``: compile the parsing modules with mypyc, in place.

Builds :data:`imapjmap.compiled.MODULES` into extension modules beside their sources (and
one shared library beside the ``imapjmap`` package), which Python then imports instead of
the ``.py`` files; ``--clean`` removes them again.  It needs mypy (the ``dev`` extra: mypyc
ships with it), setuptools and a C compiler with the Python headers.  Without them the
proxy runs the same modules as pure Python, only slower: a first sync's parsing workers
spend about 2x the CPU.  Exit status 0 when built (or cleaned), 1 when not.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.machinery
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from imapjmap.compiled import MODULES

ROOT = Path(__file__).resolve().parent.parent  # the directory holding the imapjmap package
GROUP = "imapjmap_parsing"  # the shared library's name: {GROUP}__mypyc.<suffix>


def sources() -> list[str]:
    return [name.replace(".", "/") + ".py" for name in MODULES]


def built_files() -> list[Path]:
    """The extension files a build leaves in the source tree (the package has no others),
    those of modules no longer in :data:`MODULES` included."""
    found: list[Path] = []
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        found += (ROOT / "imapjmap").rglob(f"*{suffix}")
        found += ROOT.glob(f"{GROUP}__mypyc{suffix}")
    return sorted(set(found))


def clean() -> list[Path]:
    removed = built_files()
    for path in removed:
        path.unlink()
    return removed


@contextlib.contextmanager
def _in(directory: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(before)


def build(verbose: bool = False) -> list[Path]:
    """Compile the modules in place; returns the files written.

    Raises:
        ImportError: mypy or setuptools is missing.
        Exception: what mypyc or the C compiler raised (setuptools' errors, SystemExit).
    """
    from mypyc.build import mypycify
    from setuptools import Distribution

    work = Path(tempfile.mkdtemp(prefix="imapjmap-build-ext-"))
    try:
        with _in(ROOT):  # mypyc names the modules after their paths from here
            extensions = mypycify(
                sources(),
                opt_level="3",
                group_name=GROUP,
                target_dir=str(work / "c"),
                verbose=verbose,
            )
            dist = Distribution({"name": "imapjmap-parsing", "ext_modules": extensions})
            command: Any = dist.get_command_obj("build_ext")  # setuptools' build_ext
            command.inplace = True
            command.build_temp = str(work / "temp")
            command.build_lib = str(work / "lib")
            dist.run_command("build_ext")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return built_files()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clean", action="store_true", help="remove the compiled modules")
    parser.add_argument("--verbose", action="store_true", help="show mypyc's and cc's output")
    args = parser.parse_args(argv)
    removed = clean()
    if args.clean:
        print(f"removed {len(removed)} compiled files")
        return 0
    try:
        written = build(args.verbose)
    except (Exception, SystemExit) as exc:  # a missing compiler ends setuptools with SystemExit
        clean()  # no half build: a module compiled without its group would not import
        print(f"not compiled, the modules stay pure Python: {exc}", file=sys.stderr)
        return 1
    print(f"compiled {len(MODULES)} modules with mypyc ({len(written)} files)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
