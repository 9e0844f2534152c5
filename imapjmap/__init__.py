"""imapjmap: a JMAP server (RFC 8620, RFC 8621) whose mail lives on an IMAP account."""

from imapjmap import compiled as _compiled

__version__ = "0.1.0"

_compiled.install_pure_finder()  # before any module it covers is imported
