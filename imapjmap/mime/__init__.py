"""RFC 5322/MIME bytes → JMAP Email properties (RFC 8621 §4.1).  Pure: no I/O, no logging.

Modules, bottom up:

- :mod:`.codec` — charsets, Content-Transfer-Encoding, RFC 2047 encoded words.
- :mod:`.headers` — the raw header block and the parsed header forms (§4.1.2-§4.1.3).
- :mod:`.addresses` — the ``asAddresses`` / ``asGroupedAddresses`` parser.
- :mod:`.tree` — the MIME splitter: bytes → :class:`~.tree.Part` tree numbered like IMAP.
- :mod:`.body` — EmailBodyPart, textBody/htmlBody/attachments (§4.1.4), bodyValues, preview.
- :mod:`.email` — the top level used by Email/get and Email/parse.
- :mod:`.envelope` — the same answers from cached IMAP ENVELOPE/BODYSTRUCTURE records.

Nothing here raises on malformed mail: every decoder is best effort and reports problems as
data (``isEncodingProblem``, ``null`` parsed forms).  Only the property-name validators raise
(``ValueError``), which the method layer turns into ``invalidArguments``.
"""
