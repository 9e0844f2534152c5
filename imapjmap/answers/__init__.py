"""Answers of recent Email/get and Email/query calls, kept in memory to serve the same
again while the cache's state says they still hold."""
