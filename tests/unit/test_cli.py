"""imapjmap.cli: check-config, config errors, --version (serve and demo run elsewhere)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from imapjmap import __version__
from imapjmap.cli import main
from imapjmap.config import load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"


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
