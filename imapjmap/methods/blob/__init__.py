"""Blob/* handlers (RFC 8620 §6.3, RFC 9404) and the blob ids and uploads they read."""
