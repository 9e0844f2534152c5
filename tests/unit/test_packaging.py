"""What ``pip install imapjmap`` installs: the proxy, and nothing that installs Debian
packages or starts throw-away servers (those live in the checkout's devservers/)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _installed_packages() -> list[str]:
    """The packages a wheel gets: as setuptools' ``packages.find`` in pyproject.toml finds
    them, every directory with an ``__init__.py`` whose dotted name an ``include`` pattern
    matches (fnmatch) and no ``exclude`` pattern does."""
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    rules = find["packages"]["find"]
    assert set(rules) <= {"include", "exclude"}, rules  # anything else: update this test
    packages = [".".join(init.parent.relative_to(ROOT).parts) for init in ROOT.rglob("__init__.py")]
    return sorted(
        name
        for name in packages
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in rules.get("include", ["*"]))
        and not any(fnmatch.fnmatchcase(name, pattern) for pattern in rules.get("exclude", []))
    )


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
