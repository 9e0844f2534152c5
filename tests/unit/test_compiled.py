"""The optional compiled build of the parsing modules (imapjmap.compiled, imapjmap.build_ext):
the same rows as pure Python, and ``IMAPJMAP_PURE`` really running the sources."""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from imapjmap import build_ext, compiled
from imapjmap.sync import parsing
from tests.unit.test_imap_parse import TRANSCRIPT
from tests.unit.test_sync_parsing import FETCH_CASES, uids_of

A = "Aacct"
CHECKOUT = Path(__file__).resolve().parents[2]


def _in_child(code: str, pure: bool) -> str:
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    env.pop(compiled.PURE_ENV, None)
    if pure:
        env[compiled.PURE_ENV] = "1"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_pure_imports_every_parsing_module_from_its_source() -> None:
    code = (
        "import importlib, json\n"
        "from imapjmap import compiled\n"
        "files = [importlib.import_module(m).__file__ for m in compiled.MODULES]\n"
        "print(json.dumps([files, compiled.compiled_modules(), compiled.describe()]))\n"
    )
    files, running, line = json.loads(_in_child(code, pure=True))
    assert [Path(f).suffix for f in files] == [".py"] * len(compiled.MODULES)
    assert running == []
    assert line == "parsing modules pure Python (IMAPJMAP_PURE set)"


def test_without_pure_a_built_tree_runs_every_module_compiled() -> None:
    """All or nothing: one module compiled without the others of its group cannot import."""
    code = "from imapjmap import compiled; print(len(compiled.compiled_modules()))"
    count = int(_in_child(code, pure=False))
    assert count in (0, len(compiled.MODULES))
    assert count == (len(compiled.MODULES) if build_ext.built_files() else 0)


@pytest.mark.parametrize(
    ("running", "pure", "line"),
    [
        (
            list(compiled.MODULES),
            False,
            f"parsing modules compiled (mypyc, {len(compiled.MODULES)} modules)",
        ),
        ([], False, "parsing modules pure Python (no compiled build)"),
        ([], True, "parsing modules pure Python (IMAPJMAP_PURE set)"),
        (
            ["imapjmap.imap.lexer"],
            False,
            "parsing modules partly compiled: imapjmap.imap.lexer (rebuild them)",
        ),
    ],
)
def test_describe_says_how_the_parsing_modules_run(
    running: list[str], pure: bool, line: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compiled, "compiled_modules", lambda: running)
    monkeypatch.setenv(compiled.PURE_ENV, "1" if pure else "0")
    assert compiled.describe() == line


@pytest.mark.parametrize("value", ["", "0"])
def test_pure_is_off_unless_set_to_something_else_than_0(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(compiled.PURE_ENV, value)
    assert not compiled.pure()
    monkeypatch.setenv(compiled.PURE_ENV, "yes")
    assert compiled.pure()


def test_clean_removes_every_extension_of_the_package_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suffix = ".cpython-311-x86_64-linux-gnu.so"
    monkeypatch.setattr(build_ext, "ROOT", tmp_path)
    kept = [tmp_path / "imapjmap/imap/lexer.py", tmp_path / "other__mypyc.so"]
    built = [
        tmp_path / f"imapjmap/imap/lexer{suffix}",
        tmp_path / f"imapjmap/gone/module{suffix}",  # a module no longer compiled
        tmp_path / f"{build_ext.GROUP}__mypyc{suffix}",
    ]
    for path in kept + built:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    monkeypatch.setattr("importlib.machinery.EXTENSION_SUFFIXES", [suffix, ".abi3.so", ".so"])
    assert sorted(build_ext.clean()) == sorted(built)
    assert [p for p in kept + built if p.exists()] == kept


@pytest.fixture(scope="module")
def pure_pool() -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    """A worker process that runs the parsing modules from their sources."""
    context = multiprocessing.get_context("spawn")
    before = os.environ.get(compiled.PURE_ENV)
    os.environ[compiled.PURE_ENV] = "1"  # a spawned worker's environment is the parent's
    try:
        pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=context)
        pool.submit(os.getpid).result(timeout=60)  # started now, with the variable set
    finally:
        if before is None:
            del os.environ[compiled.PURE_ENV]
        else:
            os.environ[compiled.PURE_ENV] = before
    with pool:
        yield pool


def test_the_pure_worker_runs_pure_python(
    pure_pool: concurrent.futures.ProcessPoolExecutor,
) -> None:
    assert pure_pool.submit(compiled.compiled_modules).result(timeout=60) == []


@pytest.mark.parametrize("name", FETCH_CASES)
def test_compiled_rows_equal_pure_rows_on_captured_transcripts(
    name: str, pure_pool: concurrent.futures.ProcessPoolExecutor
) -> None:
    """RFC 8621 §4.1 (Email properties): the build changes the speed, never a row."""
    if not compiled.compiled_modules():
        pytest.skip("no compiled build here (python3 -m imapjmap.build_ext)")
    uids = uids_of(name)
    case = TRANSCRIPT[name]
    mine = parsing.parse_batch(case.untagged, uids, A, True)
    pure = pure_pool.submit(parsing.parse_batch, case.untagged, uids, A, True).result(60)
    assert mine == pure
