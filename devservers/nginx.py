"""Debian's nginx running the deployment recipe ``deploy/nginx/imapjmap.conf``, for tests
and for the live client suites.

:func:`recipe_front` serves the recipe in a private prefix with only its addresses and
certificate paths replaced: its ``upstream`` block names one or several proxy instances
(nginx's default balancing, round robin), its https listener is on a loopback port with a
certificate from a private CA (:func:`private_certificate`, trustme), and its plain-http
listener too.  The package's own service is never started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from devservers._host import free_port
from devservers._host import tail as _tail

__all__ = [
    "FRONT_PACKAGES",
    "RECIPE",
    "Certificate",
    "Front",
    "NginxError",
    "main_config",
    "nginx",
    "private_certificate",
    "recipe_front",
    "site_config",
]

FRONT_PACKAGES = ("nginx",)
RECIPE = Path(__file__).resolve().parents[1] / "deploy" / "nginx" / "imapjmap.conf"
_TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
START_TIMEOUT = 10.0


class NginxError(RuntimeError):
    """nginx is missing, refused the configuration or did not start listening."""


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def site_config(
    proxy_ports: Sequence[int], https_port: int, http_port: int, cert: Path, key: Path, log: Path
) -> str:
    """The recipe with its deployment-specific values replaced, and nothing else: one
    ``server`` line in the ``upstream`` block per proxy port."""
    text = RECIPE.read_text()
    upstreams = "\n    ".join(f"server 127.0.0.1:{port};" for port in proxy_ports)
    replacements = {
        "server 127.0.0.1:8080;": upstreams,
        "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "/etc/letsencrypt/live/jmap.example.com/fullchain.pem": str(cert),
        "/etc/letsencrypt/live/jmap.example.com/privkey.pem": str(key),
        "/var/log/nginx/imapjmap.access.log": str(log),
    }
    for old, new in replacements.items():
        if text.count(old) != 1:
            raise NginxError(f"the recipe no longer holds {old!r} once")
        text = text.replace(old, new)
    # IPv6 listeners are not needed (and may not exist) on a test machine
    return "\n".join(line for line in text.splitlines() if "listen [::]" not in line)


def main_config(prefix: Path, site: Path) -> str:
    """What Debian's /etc/nginx/nginx.conf provides around a site, in a private prefix."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the temp files
    temp = "\n".join(f"    {kind}_temp_path {prefix / kind};" for kind in _TEMP_KINDS)
    return f"""{user}worker_processes 1;
daemon off;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 256; }}
http {{
    access_log {prefix / "access.log"};
{temp}
    include {site};
}}
"""


@contextlib.contextmanager
def nginx(prefix: Path, site_text: str, https_port: int) -> Iterator[Path]:
    """nginx serving ``site_text`` from ``prefix`` until the block ends; yields its error log."""
    binary = nginx_binary()
    if not os.path.exists(binary):
        raise NginxError("nginx is not installed (Debian: apt-get install nginx)")
    for kind in _TEMP_KINDS:
        (prefix / kind).mkdir(parents=True, exist_ok=True)
    site = prefix / "imapjmap.conf"
    site.write_text(site_text)
    conf = prefix / "nginx.conf"
    conf.write_text(main_config(prefix, site))
    check = subprocess.run(
        [binary, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True
    )
    if check.returncode != 0:
        raise NginxError(f"nginx refused its configuration: {check.stderr}")
    process = subprocess.Popen(
        [binary, "-p", str(prefix), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", https_port), timeout=1),
            ):
                break
            if process.poll() is not None:
                raise NginxError(f"nginx exited: {_tail(prefix / 'error.log')}")
            if time.monotonic() > deadline:
                raise NginxError("nginx did not start listening")
            time.sleep(0.05)
        yield prefix / "error.log"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class Certificate:
    cert_file: Path  # the chain nginx presents
    key_file: Path
    ca_file: Path  # what a client trusts


def private_certificate(directory: Path, host: str = "127.0.0.1") -> Certificate:
    """A certificate for ``host`` from a new private CA, written into ``directory``."""
    import trustme  # a test dependency: imported only where a front is made

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert(host)
    made = Certificate(directory / "cert.pem", directory / "key.pem", directory / "ca.pem")
    cert.cert_chain_pems[0].write_to_path(str(made.cert_file))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(made.cert_file), append=True)
    cert.private_key_pem.write_to_path(str(made.key_file))
    ca.cert_pem.write_to_path(str(made.ca_file))
    return made


@dataclass(frozen=True)
class Front:
    host: str  # "127.0.0.1:port" of nginx's https listener
    http_port: int  # its plain-http listener
    ca_file: str
    error_log: Path
    access_log: Path

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    def tls(self) -> ssl.SSLContext:
        """A client context that trusts the private CA."""
        return ssl.create_default_context(cafile=self.ca_file)


@contextlib.contextmanager
def recipe_front(
    directory: Path, proxy_ports: Sequence[int], https_port: int | None = None
) -> Iterator[Front]:
    """The recipe in front of the proxies listening on ``proxy_ports`` (round robin)."""
    https_port = https_port or free_port()
    http_port = free_port()
    certificate = private_certificate(directory / "tls")
    prefix = directory / "nginx"
    access_log = prefix / "imapjmap.access.log"
    site = site_config(
        proxy_ports,
        https_port,
        http_port,
        certificate.cert_file,
        certificate.key_file,
        access_log,
    )
    with nginx(prefix, site, https_port) as error_log:
        yield Front(
            f"127.0.0.1:{https_port}",
            http_port,
            str(certificate.ca_file),
            error_log,
            access_log,
        )
