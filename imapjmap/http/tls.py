"""Built-in TLS for the JMAP listener (``server.tls_certificate`` / ``server.tls_key``).

One :class:`ssl.SSLContext` serves every connection; :meth:`ServerTls.reload` (on SIGHUP)
loads a renewed certificate into it, so new connections use it at once and open ones keep
theirs.  The files are first loaded into a scratch context: a half-written certificate or
a key that does not match never reaches the live one (OpenSSL would otherwise keep the new
certificate with the old key, and every handshake would fail).
"""

from __future__ import annotations

import ssl


class ServerTls:
    """The listener's TLS context, built from the configured files.

    Raises:
        OSError, ssl.SSLError: a file cannot be read, or is not a certificate chain and its
        private key (from the constructor).
    """

    def __init__(self, certificate: str, key: str) -> None:
        self.certificate = certificate
        self.key = key
        self.context = self._new_context()
        self.context.load_cert_chain(certificate, key)

    @staticmethod
    def _new_context() -> ssl.SSLContext:
        # TLS 1.2 at least, the library's secure ciphers; no client certificates
        return ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)

    def reload(self) -> str | None:
        """Load the files again; None when the live context now holds them, else why not
        (the live context is then unchanged)."""
        try:
            self._new_context().load_cert_chain(self.certificate, self.key)
            self.context.load_cert_chain(self.certificate, self.key)
        except (OSError, ssl.SSLError) as exc:
            return " ".join(str(exc).split()) or type(exc).__name__
        return None
