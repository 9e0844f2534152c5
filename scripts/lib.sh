# Shared by scripts/test and scripts/run (sourced, not run): install what is missing, and
# return quickly when everything is there already.  Meant for a fresh Debian-like machine
# (as root, or with password-less sudo) as well as for a developer's machine.

DOVECOT_PACKAGES=(dovecot-imapd dovecot-lmtpd dovecot-sieve dovecot-managesieved)
# Cyrus IMAP, the tests' second backend: its packages conflict with dovecot-imapd in apt, so
# devservers.cyrus downloads and unpacks them into a prefix outside the checkout; only the
# shared libraries they link, and sasl2-bin (saslpasswd2), are installed.
CYRUS_LIBRARY_PACKAGES=(libical3 libpcre3 libxapian30 sasl2-bin)
# The browser of the webmail test (tests/integration/test_webmail_browser.py), driven by
# Playwright from PyPI (the test extras) with executable_path: Playwright's own browser
# download is never used.  A font, so that pages lay out as they would for a user.
BROWSER_PACKAGES=(chromium fonts-liberation)
# The reverse proxy of the deployment recipe tested in tests/integration/test_deploy_nginx.py
# (run in a private prefix on loopback ports; the package's own service is never started).
FRONT_PACKAGES=(nginx)
# The throw-away PostgreSQL of the tests of several instances and of the PostgreSQL cache
# (initdb, pg_ctl; the package's own service is never started).
POSTGRES_PACKAGES=(postgresql)

say() { printf '%s\n' "$*" >&2; }
die() { say "$(basename "$0"): $*"; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo "$@"
    else
        return 126
    fi
}

# The named Debian packages that are not installed (one a line).
missing_debian_packages() {
    local package
    for package in "$@"; do
        if [ "$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null)" != installed ]; then
            printf '%s\n' "$package"
        fi
    done
}

# apt-get install what is missing, without letting maintainer scripts start services (a
# temporary /usr/sbin/policy-rc.d that exits 101); apt-get update only if apt needs it.
ensure_debian_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        return 0  # not Debian: the tests say what is missing
    fi
    local missing
    mapfile -t missing < <(missing_debian_packages "$@")
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    if ! as_root true; then
        die "missing Debian packages: ${missing[*]}; run as root, or first:
    sudo apt-get install -y --no-install-recommends ${missing[*]}"
    fi
    say "Installing ${missing[*]} ..."
    local policy=/usr/sbin/policy-rc.d saved=""
    if [ -e "$policy" ]; then
        saved="$(mktemp)"
        as_root cp -p "$policy" "$saved"
    fi
    # shellcheck disable=SC2064
    trap "restore_policy_rc_d '$policy' '$saved'" EXIT
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    local status=0
    if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || status=$?
    fi
    if [ "$status" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends "${missing[@]}" >/dev/null || status=$?
    fi
    restore_policy_rc_d "$policy" "$saved"
    trap - EXIT
    [ "$status" -eq 0 ] || die "apt-get failed to install ${missing[*]}"
}

restore_policy_rc_d() {
    if [ -n "$2" ]; then
        as_root mv "$2" "$1"
    else
        as_root rm -f "$1"
    fi
}

# The project's own Python environment: every Python package the scripts install goes into
# this virtual environment in the checkout, never into the system's Python, and every
# Python command they run is "$PY" (this environment's interpreter).
VENV="$PWD/.venv"
PY="$VENV/bin/python"
# what the scripts start (pytest's children, the servers) finds this environment first
export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH"

# python3 (3.11 or newer) and a working .venv made from it; Debian's python3-venv is
# installed when the interpreter cannot make one (Debian leaves ensurepip out of python3).
ensure_python() {
    command -v python3 >/dev/null 2>&1 || die "python3 (3.11 or newer) is not installed"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "python3 is $(python3 -V 2>&1); 3.11 or newer is needed"
    if "$PY" -m pip --version >/dev/null 2>&1; then
        return 0
    fi
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        rm -rf "$VENV"
        ensure_debian_packages python3-venv
        python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
    fi
    "$PY" -m pip --version >/dev/null 2>&1 || die "$VENV has no pip"
    say "Made the project's Python environment in $VENV"
}

# Exit status 0 when this checkout is installed (editable) in .venv with every requirement
# of the project, of the extras named in $1 (comma separated) and of the project
# requirements named in the other arguments (e.g. aiosmtpd, taken from whichever extra lists
# it) satisfied.
python_packages_ok() {
    "$PY" -P - "$PWD" "$@" <<'PY' 2>/dev/null
import importlib.metadata as metadata
import json
import sys
import tomllib
from pathlib import Path

try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement

root, extras, names = Path(sys.argv[1]), [e for e in sys.argv[2].split(",") if e], sys.argv[3:]
project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
optional = project.get("optional-dependencies", {})
wanted = list(project.get("dependencies", []))
for extra in extras:
    wanted += optional[extra]
for name in names:
    wanted += [r for group in optional.values() for r in group if Requirement(r).name == name]
dist = metadata.distribution(project["name"])
direct = json.loads(dist.read_text("direct_url.json") or "{}")
if direct.get("url") != root.as_uri() or not direct.get("dir_info", {}).get("editable"):
    sys.exit(1)
if dist.version != project["version"]:
    sys.exit(1)
for line in wanted:
    requirement = Requirement(line)
    if requirement.marker is not None and not requirement.marker.evaluate():
        continue
    version = metadata.version(requirement.name)
    if not requirement.specifier.contains(version, prereleases=True):
        sys.exit(1)
PY
}

# pip install -e ".[EXTRAS]" (plus named extra requirements) into .venv unless
# python_packages_ok, saying what it installs as it goes (pip's "Collecting" and
# "Installing" lines; its whole output when it fails).
ensure_python_packages() {
    local extras="$1"
    shift
    ensure_python
    if python_packages_ok "$extras" "$@"; then
        return 0
    fi
    export PIP_DISABLE_PIP_VERSION_CHECK=1
    local target="."
    [ -z "$extras" ] || target=".[$extras]"
    local also=()
    if [ "$#" -gt 0 ]; then
        mapfile -t also < <("$PY" - "$@" <<'PY'
import re
import sys
import tomllib

optional = tomllib.load(open("pyproject.toml", "rb"))["project"].get("optional-dependencies", {})
for name in sys.argv[1:]:
    for group in optional.values():
        for line in group:
            if re.match(r"[A-Za-z0-9._-]+", line)[0].lower() == name.lower():
                print(line)
PY
)
    fi
    say "Installing Python packages into $VENV: $target ${also[*]} (the first time takes a minute or two) ..."
    local output status
    output="$(mktemp)"
    {
        "$PY" -m pip install --progress-bar off -e "$target" "${also[@]}" 2>&1
        echo "$?" >"$output.status"
    } | tee "$output" \
        | grep --line-buffered -E '^(Collecting|Building|Installing collected)' \
        | sed -u 's/^/  /' >&2 || true
    status="$(cat "$output.status" 2>/dev/null || echo 1)"
    if [ "$status" -ne 0 ]; then
        tail -n 30 "$output" >&2
        rm -f "$output" "$output.status"
        die "pip install -e '$target' ${also[*]} failed in $VENV"
    fi
    rm -f "$output" "$output.status"
}

# Cyrus for the tests (after ensure_python_packages: the unpacking is done by the project).
ensure_cyrus() {
    ensure_debian_packages "${CYRUS_LIBRARY_PACKAGES[@]}"
    "$PY" -m devservers.cyrus >&2 || die "Cyrus IMAP could not be made available"
}
