"""Mailbox/* handlers (RFC 8621 §2)."""
