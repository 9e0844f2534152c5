"""Reaching the running proxy at its configured listen address, from the same machine."""

from __future__ import annotations

import http.client
import ssl

from imapjmap.config import Config, split_listen

# a wildcard listen address is reached on the loopback interface
_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def address(cfg: Config) -> tuple[str, int]:
    host, port = split_listen(cfg.server.listen)
    return _WILDCARDS.get(host, host), port


def connection(cfg: Config, timeout: float, *, pinned: bool = False) -> http.client.HTTPConnection:
    """A connection to the proxy, over TLS when it serves TLS itself.

    Its certificate names the public host, not the address dialled here, so the host name
    is not checked.  ``pinned``: the peer must show the configured certificate (the file
    is trusted as it is, a leaf included), for requests that carry credentials; without
    it, whoever answers is asked (a health check reveals nothing).
    """
    host, port = address(cfg)
    certificate = cfg.server.tls_certificate
    if certificate is None:
        return http.client.HTTPConnection(host, port, timeout=timeout)
    context = ssl.create_default_context()
    context.check_hostname = False
    if pinned:
        context.load_verify_locations(cafile=str(certificate))
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    else:
        context.verify_mode = ssl.CERT_NONE
    return http.client.HTTPSConnection(host, port, timeout=timeout, context=context)


def ask(cfg: Config, path: str, timeout: float) -> tuple[int, str]:
    """GET ``path``: the status and the body's text.  Raises OSError when nothing answers."""
    conn = connection(cfg, timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace").strip()
    finally:
        conn.close()


def answers(cfg: Config, timeout: float = 2.0) -> bool:
    """Whether a proxy answers ``/healthz`` at the configured address."""
    try:
        status, _ = ask(cfg, "/healthz", timeout)
    except OSError:
        return False
    return status == 200
