"""The upload endpoint (RFC 8620 §6.1; checklist CORE-BIN-01, CORE-BIN-02).

``POST /jmap/upload/{accountId}/`` with the raw octets as the body.

Rules
1. Authenticated like the API; ``{accountId}`` must be the caller's own account, else 404
   (an account id is not a secret, but another account is simply not there for this user).
2. ``maxSizeUpload`` is enforced while the body streams in: a declared ``Content-Length``
   over it is refused before reading, and a body that grows over it is cut off (413).
3. At most ``maxConcurrentUpload`` uploads per account run at once; one more is refused
   (429) instead of queued, so a client learns its limit at once.  With other instances the
   limit holds over all of them (a cluster slot, :data:`~imapjmap.cluster.api.UPLOAD`,
   given back as soon as the upload ends: a slot kept idle would refuse another
   instance's upload).
4. ``type`` is the request's Content-Type as sent, only normalised (media type lower-cased,
   white space around parameters removed); never sniffed.  No Content-Type, or one whose
   media type is not RFC 2045 ``token/token``, means ``application/octet-stream``.
5. Limit errors are ``urn:ietf:params:jmap:error:limit`` problem documents naming the
   limit, like the API's request-level limits.
6. The account's unexpired uploads may take ``limits.max_upload_bytes_per_account`` octets
   together; an upload over that quota is refused with 413, titled ``overQuota``, its
   ``limit`` being ``maxUploadBytesPerAccount``.  The uploads are counted in the cache, in
   the transaction that stores one, so the quota holds over instances sharing the cache.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Final

from aiohttp import web

from imapjmap.blobs import content as blob_store
from imapjmap.cluster.api import UPLOAD
from imapjmap.http.admission import cluster_slot
from imapjmap.http.views import CONFIG, SERVICES, _authenticate, _json
from imapjmap.jmap.errors import RequestError, RequestErrorType
from imapjmap.jmap.session import UPLOAD_PATH

UPLOADS: Final = web.AppKey("uploads_in_flight", Counter[str])

DEFAULT_TYPE: Final = "application/octet-stream"
_CHUNK: Final = 64 * 1024


# RFC 2045 §5.1: type "/" subtype, each a token; a parameter is attribute "=" value, the
# value a token or a quoted-string.
_TOKEN: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE: Final = re.compile(f"{_TOKEN}/{_TOKEN}")
_PARAMETER: Final = re.compile(f'{_TOKEN}=(?:{_TOKEN}|"(?:[^"\\\\]|\\\\.)*")')


def normalise_type(value: str | None) -> str:
    """The upload's ``type``: the Content-Type as sent, tidied but never guessed (Rule 4).

    A media type that is not ``token/token`` is no type at all: ``application/octet-stream``.
    Parameters that are not ``attribute=value`` are dropped.
    """
    if value is None or not (value.isascii() and value.isprintable()):
        return DEFAULT_TYPE
    media, *params = (piece.strip() for piece in value.split(";"))
    if not _MEDIA_TYPE.fullmatch(media):
        return DEFAULT_TYPE
    kept = [p for p in params if _PARAMETER.fullmatch(p)]
    return "; ".join([media.lower(), *kept])


def _too_big(limit: int) -> RequestError:
    return RequestError(
        RequestErrorType.LIMIT,
        f"the upload is larger than maxSizeUpload ({limit} octets)",
        status=413,
        limit="maxSizeUpload",
    )


def _too_many_uploads(limit: int) -> RequestError:
    return RequestError(
        RequestErrorType.LIMIT,
        f"at most {limit} concurrent uploads per account",
        status=429,
        limit="maxConcurrentUpload",
    )


async def _read_upload(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise _too_big(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise _too_big(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def upload_view(request: web.Request) -> web.StreamResponse:
    who = await _authenticate(request)
    account_id = who.account.account_id
    if request.match_info["accountId"] != account_id:
        raise web.HTTPNotFound(reason="no such account")
    limits = request.app[CONFIG].limits
    in_flight = request.app[UPLOADS]
    if in_flight[account_id] >= limits.max_concurrent_upload:
        raise _too_many_uploads(limits.max_concurrent_upload)
    cluster = request.app[SERVICES].cluster
    token = await cluster_slot(cluster, UPLOAD, account_id, limits.max_concurrent_upload)
    if token is None:  # held on other instances
        raise _too_many_uploads(limits.max_concurrent_upload)
    in_flight[account_id] += 1
    try:
        data = await _read_upload(request, limits.max_size_upload)
        type_ = normalise_type(request.headers.get("Content-Type"))
        row = await blob_store.save_upload(
            request.app[SERVICES].store,
            account_id,
            data,
            type_,
            quota=limits.max_upload_bytes_per_account,
        )
    except blob_store.UploadOverQuota as exc:
        raise RequestError(
            RequestErrorType.LIMIT,
            str(exc),
            status=413,
            limit="maxUploadBytesPerAccount",
            title="overQuota",
        ) from None
    finally:
        in_flight[account_id] -= 1
        if not in_flight[account_id]:
            del in_flight[account_id]
        await cluster.give_slot(UPLOAD, account_id, token, linger=0)
    body = {"accountId": account_id, "blobId": row.id, "type": type_, "size": row.size}
    return _json(body, status=201)


def add_routes(app: web.Application) -> None:
    app[UPLOADS] = Counter()
    app.router.add_post(UPLOAD_PATH, upload_view)
    app.router.add_post(UPLOAD_PATH.rstrip("/"), upload_view)
