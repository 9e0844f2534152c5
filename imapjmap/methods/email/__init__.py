"""Email/* and SearchSnippet/get handlers (RFC 8621 §4, §5) and what they share."""
