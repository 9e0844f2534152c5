"""What ``pip install imapjmap`` installs: the proxy, and nothing that installs Debian
packages or starts throw-away servers (those live in the checkout's devservers/)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]


def _installed_packages() -> list[str]:
    """The packages a wheel gets, found the way pyproject.toml tells setuptools to."""
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return find_packages(where=str(ROOT), **find["packages"]["find"])


def test_the_wheel_holds_the_proxy_only() -> None:
    packages = _installed_packages()
    assert {"imapjmap", "imapjmap.http", "imapjmap.imap", "imapjmap.push"} <= set(packages)
    assert [p for p in packages if p.split(".")[0] != "imapjmap"] == []
    assert "imapjmap.demo" not in packages


def test_nothing_installed_runs_a_package_manager() -> None:
    sources = [
        path
        for package in _installed_packages()
        for path in (ROOT / package.replace(".", "/")).glob("*.py")
    ]
    assert len(sources) > 50
    offenders = [
        str(path.relative_to(ROOT))
        for path in sources
        if any(word in path.read_text() for word in ("apt-get", "dpkg-deb", "DovecotServer"))
    ]
    assert offenders == []
