"""imapjmap: a JMAP server (RFC 8620, RFC 8621) whose mail lives on an IMAP account."""

__version__ = "0.1.0"
