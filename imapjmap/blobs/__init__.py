"""Blobs: their ids, uploads and reading any blob an account can see, and the message
octets fetched on demand and kept in a bounded cache.  Upload rows live in
:mod:`imapjmap.store.blobs`, the HTTP upload and download in :mod:`imapjmap.http`."""
