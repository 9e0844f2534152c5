"""IMAP → cache reconciliation."""
