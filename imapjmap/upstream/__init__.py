"""The seam between the JMAP side and the mail server (docs/design.md, "The seam")."""
