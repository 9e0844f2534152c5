"""EmailSubmission/* handlers (RFC 8621 §7) and the SMTP envelope."""
