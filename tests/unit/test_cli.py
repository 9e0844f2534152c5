"""imapjmap.cli: check-config, config errors, --version (serve and demo run elsewhere)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from imapjmap import __version__, cli
from imapjmap.cli import main
from imapjmap.config import load_config, parse_config
from imapjmap.store.db import Store

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"


def test_check_config_prints_the_effective_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert parse_config(tomllib.loads(out)) == load_config(EXAMPLE)


def test_check_config_shows_warnings_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[imap]\nhost = "mail.example.org"\nsecurity = "none"\nport = 143\n')
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert 'imapjmap: warning: imap.security = "none"' in err
    assert 'security = "none"' in out


def test_check_config_warns_when_a_plain_login_could_not_send(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[imap]\nhost = "mail.example.org"\n[smtp]\nhost = "mail.example.org"\n')
    assert main(["check-config", str(path)]) == 0
    err = capsys.readouterr().err
    assert "imapjmap: warning: submission: a login that is not an address" in err
    path.write_text(path.read_text() + '[submission]\ndefault_domain = "example.org"\n')
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[imap]\nhost = "h"\nprot = 1\n', "imap.prot: unknown key (did you mean port?)"),
        ("[imap]\nport = 1\n", "imap.host: required key is missing"),
        ("[imap\n", "invalid TOML"),
    ],
)
def test_config_error_exits_2_with_the_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    for argv in (["check-config", str(path)], ["serve", "--config", str(path)]):
        assert main(argv) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert err.startswith(f"imapjmap: config error: {path}: ")
        assert message in err


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.toml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"imapjmap {__version__}\n"


@pytest.mark.parametrize(
    "argv", [[], ["frobnicate"], ["serve"], ["check-config"], ["demo", "--listen", "::1:80"]]
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: imapjmap" in capsys.readouterr().err


def test_demo_outside_a_checkout_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An installed package has no devservers/: the demo explains instead of failing with a
    traceback (and never reaches apt-get)."""
    monkeypatch.setattr(cli, "CHECKOUT", tmp_path)  # a site-packages: no devservers/ beside
    for name in ("devservers", "devservers.demo"):  # and none on the path, even if imported
        monkeypatch.setitem(sys.modules, name, None)
    assert main(["demo", "--listen", "127.0.0.1:1"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "source checkout" in err
    assert "./scripts/run" in err
    assert "imapjmap serve --config FILE" in err
    assert "Traceback" not in err


def test_the_demo_is_found_beside_the_package_of_a_checkout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run from elsewhere (an editable install), the checkout's devservers/ is found."""
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != ROOT])
    for name in [n for n in sys.modules if n == "devservers" or n.startswith("devservers.")]:
        monkeypatch.delitem(sys.modules, name)
    demo = cli._checkout_demo()
    assert demo is not None
    assert Path(str(demo.__file__)) == ROOT / "devservers" / "demo.py"
    assert sys.path[-1] == str(ROOT)  # appended: never ahead of what is installed


def test_importing_the_cli_loads_no_io_library() -> None:
    code = (
        "import sys, imapjmap.cli\n"
        "bad = {'aiohttp', 'aioimaplib', 'aiosmtplib', 'aiosmtpd', 'sqlite3'} & set(sys.modules)\n"
        "sys.exit(', '.join(sorted(bad)) or None)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=EXAMPLE.parent
    )
    assert result.returncode == 0, result.stderr


# --- serve: start-up -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve_config(tmp_path: Path, cache: Path, port: int = 1, **server: object) -> Path:
    lines = [f'listen = "127.0.0.1:{port}"', *(f"{k} = {v!r}" for k, v in server.items())]
    path = tmp_path / "serve.toml"
    path.write_text(
        '[imap]\nhost = "127.0.0.1"\n'
        f"[cache]\npath = {json.dumps(str(cache))}\n"
        "[server]\n" + "\n".join(lines) + "\n"
    )
    return path


def _unusable_caches(tmp_path: Path) -> dict[str, Path]:
    not_a_db = tmp_path / "not-a-db.sqlite3"
    not_a_db.write_bytes(b"this is not an SQLite database, it is a text file" * 100)
    return {
        "missing directory": tmp_path / "no-such-dir" / "cache.sqlite3",
        "a directory": tmp_path,
        "not a database": not_a_db,
    }


@pytest.mark.parametrize("case", ["missing directory", "a directory", "not a database"])
def test_serve_with_an_unusable_cache_exits_with_one_line(tmp_path: Path, case: str) -> None:
    cache = _unusable_caches(tmp_path)[case]
    lines = _serve_fails(_serve_config(tmp_path, cache))
    assert len(lines) == 2, lines  # "starting", then the error
    assert " ERROR " in lines[1]
    assert f"cannot use the cache {str(cache)!r}: " in lines[1]
    # the start says how the parsing modules run (imapjmap.compiled)
    assert "; parsing modules " in lines[0]


def _serve_fails(config: Path) -> list[str]:
    """Run ``imapjmap serve`` expecting it to give up; its stderr lines."""
    result = subprocess.run(
        [sys.executable, "-m", "imapjmap", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=EXAMPLE.parent,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stderr
    return result.stderr.splitlines()


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[None]:
    """Make ``path`` read-only, even for root (whom file modes do not stop)."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        yield
        return
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a file read-only for root here: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_serve_with_a_read_only_cache_exits_with_one_line(tmp_path: Path) -> None:
    """A read-only cache opens (and, in WAL mode, even begins a transaction): only a write
    tells, and serve tries one before it listens."""
    cache = tmp_path / "cache.sqlite3"

    async def create() -> None:
        await (await Store.open(str(cache))).aclose()

    asyncio.run(create())
    with _read_only(cache):
        lines = _serve_fails(_serve_config(tmp_path, cache))
    assert len(lines) == 2, lines  # "starting", then the error
    assert f"cannot use the cache {str(cache)!r}: it cannot be written: " in lines[1]
    assert "readonly" in lines[1]


def test_serve_guards_slow_headers_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    config = _serve_config(tmp_path, tmp_path / "cache.sqlite3", port, header_timeout=0.3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "imapjmap", "serve", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=EXAMPLE.parent,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "listening on" in line:
                break
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /.well-known/jmap HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            reply = sock.recv(4096)
            assert reply.startswith(b"HTTP/1.1 408 "), reply
            assert time.monotonic() - started < 5
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def test_serve_on_a_busy_port_exits_with_one_line_naming_the_address(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        lines = _serve_fails(_serve_config(tmp_path, tmp_path / "cache.sqlite3", port))
    errors = [line for line in lines if " ERROR " in line]
    assert len(errors) == 1, lines
    assert f"cannot listen on 127.0.0.1:{port}: " in errors[0]
    assert lines[-1] == errors[0]


@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "[::]:8080"])
def test_listening_everywhere_without_base_url_is_refused(tmp_path: Path, listen: str) -> None:
    """The session would advertise http://0.0.0.0:8080, which no client can reach."""
    config = tmp_path / "everywhere.toml"
    config.write_text(f'[imap]\nhost = "127.0.0.1"\n[server]\nlisten = "{listen}"\n')
    for command in (["serve", "--config"], ["check-config"]):
        result = subprocess.run(
            [sys.executable, "-m", "imapjmap", *command, str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=EXAMPLE.parent,
        )
        assert result.returncode == 2, result.stderr
        assert "server.base_url: required when server.listen is" in result.stderr
        assert "Traceback" not in result.stderr
    config.write_text(
        f'[imap]\nhost = "127.0.0.1"\n[server]\nlisten = "{listen}"\n'
        'base_url = "https://jmap.example.org"\n'
    )
    assert main(["check-config", str(config)]) == 0


def test_serve_with_an_unusable_push_token_key_file_exits_with_one_line(tmp_path: Path) -> None:
    key = tmp_path / "push.key"
    key.write_text("too short\n")
    config = _serve_config(tmp_path, tmp_path / "cache.sqlite3", _free_port())
    config.write_text(
        config.read_text() + f"[auth]\npush_token_key_file = {json.dumps(str(key))}\n"
    )
    lines = _serve_fails(config)
    errors = [line for line in lines if " ERROR " in line]
    assert len(errors) == 1, lines
    assert "auth.push_token_key_file: " in errors[0] and "at least 32 bytes" in errors[0]
    assert "too short" not in "\n".join(lines)
