"""The seam between the JMAP side and a mail server (docs/design.md, "The seam").

``upstream.api`` is all that handlers see of a server: typed Protocols and the plain data
their operations return.  ``upstream.imap`` implements them over an IMAP connection pool.
"""
