"""Every blob an account can read: uploads, whole messages, body parts, parts of parts.

This extends the scheme of :mod:`imapjmap.blobs.ids` (``G`` message blobs, ``P`` part
blobs of an Email) with two more kinds, each told apart by its first letter:

- ``"U" + base32(sha256(content))`` (lower case, no padding): an uploaded blob (RFC 8620
  §6.1, RFC 9404 Blob/upload), stored in the cache, scoped to its account.  The id depends
  only on the content, so the same octets uploaded twice get the same id (CORE-BIN-02).
- ``"B" + base + "_" + p'``: body part ``p`` (written as in ``P`` ids, dots as dashes) of the
  message held by blob ``base``, whatever kind ``base`` is.  Email/parse gives these to the
  parts of a parsed blob (an upload, or an attached message/rfc822 part), so that every
  blobId it returns is downloadable (CORE-BIN-05).  ``p'`` holds no ``_``, so the LAST
  ``_`` separates it from ``base``; a part of a ``G`` blob is written as the equivalent
  ``P`` id instead.

Lifetime of uploads: a blob expires :data:`UPLOAD_LIFETIME` seconds after it was last
uploaded or used (read by the download endpoint, Email/import, Email/parse, Blob/get, or
used as a Blob/upload data source).  Expired rows are invisible at once and deleted lazily
on the account's next upload.

Quota: the unexpired uploads of one account hold at most ``quota`` octets together
(``limits.max_upload_bytes_per_account``).  An upload that would go over it is refused
(:class:`UploadOverQuota`); uploading content the account already holds costs nothing.  The
check and the write are one transaction, so concurrent uploads cannot overshoot together.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass
from typing import Final

from imapjmap.blobs import ids as blobs
from imapjmap.blobs.bodies import fetch_message
from imapjmap.errors import ProxyError
from imapjmap.jmap.wire import is_id
from imapjmap.mime.body import part_content
from imapjmap.store import blobs as stored
from imapjmap.store import emails as em
from imapjmap.store.db import Store, Tx
from imapjmap.upstream.api import BodyReads

UPLOAD_PREFIX: Final = "U"
SUB_PREFIX: Final = "B"
UPLOAD_LIFETIME: Final = 24 * 3600.0
MESSAGE_TYPE: Final = "message/rfc822"

_PART_ID: Final = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_PART_TOKEN: Final = re.compile(r"[0-9]+(?:-[0-9]+)*")
_MAX_DEPTH: Final = 16  # B ids nest; an Id is at most 255 octets anyway


@dataclass(frozen=True, slots=True)
class Blob:
    """A blob's octets and media type."""

    data: bytes
    type: str


def upload_blob_id(data: bytes) -> str:
    """The id of an uploaded blob: a function of its content only."""
    digest = base64.b32encode(hashlib.sha256(data).digest()).decode("ascii")
    return UPLOAD_PREFIX + digest.rstrip("=").lower()


def sub_blob_id(base: str, part_id: str) -> str:
    """The blob id of body part ``part_id`` of the message in blob ``base``.

    Raises:
        ValueError: ``part_id`` is not a section number, or the id would be over 255 octets.
    """
    ref = blobs.parse_blob_id(base)
    if ref is not None and ref.part_id is None:
        return blobs.part_blob_id(ref.email_id, part_id)
    if not _PART_ID.fullmatch(part_id):
        raise ValueError(f"not a section-number partId: {part_id[:40]!r}")
    blob_id = SUB_PREFIX + base + "_" + part_id.replace(".", "-")
    if not is_id(blob_id):
        raise ValueError("the part blob id would not be a valid Id")
    return blob_id


def split_sub_blob_id(blob_id: str) -> tuple[str, str] | None:
    """(base blob id, partId) of a ``B`` id, or None when it is not one."""
    if not blob_id.startswith(SUB_PREFIX) or not is_id(blob_id):
        return None
    base, sep, token = blob_id[1:].rpartition("_")
    if not sep or not base or not _PART_TOKEN.fullmatch(token):
        return None
    return base, token.replace("-", ".")


def is_upload_id(blob_id: str) -> bool:
    return blob_id.startswith(UPLOAD_PREFIX) and is_id(blob_id)


def email_of(blob_id: str) -> str | None:
    """The Email whose message holds this blob (``G``, ``P``, and ``B`` ids built on them)."""
    for _ in range(_MAX_DEPTH):
        ref = blobs.parse_blob_id(blob_id)
        if ref is not None:
            return ref.email_id
        sub = split_sub_blob_id(blob_id)
        if sub is None:
            return None
        blob_id = sub[0]
    return None


class UploadOverQuota(ProxyError):
    """Storing an upload would take the account's uploads over its quota."""

    def __init__(self, quota: int, used: int, size: int) -> None:
        super().__init__(
            f"the account's uploads would take {used + size} octets, over its quota of"
            f" {quota} (maxUploadBytesPerAccount); uploads expire"
            f" {UPLOAD_LIFETIME / 3600:g} hours after their last use"
        )
        self.quota = quota
        self.used = used
        self.size = size


async def save_upload(
    store: Store,
    account_id: str,
    data: bytes,
    type_: str,
    *,
    quota: int,
    now: float | None = None,
) -> stored.BlobRow:
    """Store an upload (or refresh the same content's row); purge the account's expired ones.

    Raises:
        UploadOverQuota: the account's unexpired uploads and this one exceed ``quota`` octets.
    """
    at = time.time() if now is None else now
    row = stored.BlobRow(
        account_id, upload_blob_id(data), type_, len(data), data, at, at + UPLOAD_LIFETIME
    )

    def write(tx: Tx) -> stored.BlobRow:
        stored.purge_expired(tx, account_id, now=at)
        if not stored.exists(tx, account_id, row.id, now=at):
            used = stored.total_size(tx, account_id, now=at)
            if used + row.size > quota:
                raise UploadOverQuota(quota, used, row.size)
        return stored.put(tx, row)

    return await store.run(write, account=account_id)


async def _read_upload(store: Store, account_id: str, blob_id: str, now: float) -> Blob | None:
    def read(tx: Tx) -> stored.BlobRow | None:
        row = stored.blob(tx, account_id, blob_id, now=now)
        if row is not None:
            stored.touch(tx, account_id, blob_id, now + UPLOAD_LIFETIME)
        return row

    row = await store.run(read, account=account_id)  # touch() extends the upload's life
    return None if row is None else Blob(row.data, row.type)


def _part(raw: bytes, part_id: str) -> Blob | None:
    try:
        content, type_, _ = part_content(raw, part_id)
    except KeyError:
        return None
    return Blob(content, type_)


async def read(
    store: Store, upstream: BodyReads, account_id: str, blob_id: str, *, now: float | None = None
) -> Blob | None:
    """The blob ``blob_id`` of this account, or None when there is no such blob.

    A message blob is the exact ``BODY[]`` octets; a part blob is the part's content after
    Content-Transfer-Encoding decoding (RFC 8621 §4.1.4); an upload is what was uploaded.
    Reading an upload counts as a use and keeps it another :data:`UPLOAD_LIFETIME`.
    """
    at = time.time() if now is None else now
    return await _read(store, upstream, account_id, blob_id, at, _MAX_DEPTH)


async def _read(
    store: Store, upstream: BodyReads, account_id: str, blob_id: str, now: float, depth: int
) -> Blob | None:
    if not is_id(blob_id) or depth <= 0:
        return None
    if blob_id.startswith(UPLOAD_PREFIX):
        return await _read_upload(store, account_id, blob_id, now)
    ref = blobs.parse_blob_id(blob_id)
    if ref is not None:
        raw = await fetch_message(store, upstream, account_id, ref.email_id)
        if raw is None:
            return None
        return Blob(raw, MESSAGE_TYPE) if ref.part_id is None else _part(raw, ref.part_id)
    sub = split_sub_blob_id(blob_id)
    if sub is None:
        return None
    base = await _read(store, upstream, account_id, sub[0], now, depth - 1)
    return None if base is None else _part(base.data, sub[1])


async def read_blob(
    store: Store, upstream: BodyReads, account_id: str, blob_id: str
) -> tuple[bytes, str] | None:
    """(octets, media type) of a blob of this account, or None: for the download view."""
    found = await read(store, upstream, account_id, blob_id)
    return None if found is None else (found.data, found.type)


async def exists(
    store: Store, upstream: BodyReads, account_id: str, blob_id: str, *, now: float | None = None
) -> bool:
    """Whether the account can read ``blob_id``; uploads and messages need no IMAP round trip."""
    at = time.time() if now is None else now
    if blob_id.startswith(UPLOAD_PREFIX):
        return is_id(blob_id) and await store.read(
            lambda tx: stored.exists(tx, account_id, blob_id, now=at), account=account_id
        )
    ref = blobs.parse_blob_id(blob_id)
    if ref is not None and ref.part_id is None:
        row = await store.read(
            lambda tx: em.email(tx, account_id, ref.email_id), account=account_id
        )
        return row is not None
    return await read(store, upstream, account_id, blob_id, now=at) is not None
