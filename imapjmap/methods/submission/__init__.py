"""EmailSubmission/* handlers (RFC 8621 §7)."""
