"""Message encryption for Web Push (RFC 8291) in the ``aes128gcm`` content coding (RFC 8188).

A PushSubscription with ``keys`` (RFC 8620 §7.2) gets every message encrypted to the user
agent's P-256 key ``p256dh`` with its authentication secret ``auth``:

1. a fresh P-256 key pair per message; ``ecdh_secret`` = ECDH(ours, theirs);
2. ``IKM`` = HKDF(salt=auth, ikm=ecdh_secret, info="WebPush: info" 0x00 ua_public as_public,
   32 octets) (RFC 8291 §3.4);
3. a random 16-octet salt; ``CEK`` = HKDF(salt, IKM, "Content-Encoding: aes128gcm" 0x00, 16)
   and ``NONCE`` = HKDF(salt, IKM, "Content-Encoding: nonce" 0x00, 12) (RFC 8188 §2.2, §2.3);
4. ONE record: AES-128-GCM(CEK, NONCE, plaintext || 0x02) (0x02: the last record's padding
   delimiter, no padding);
5. the body is the header ``salt || rs (uint32) || idlen || keyid`` (keyid = our public key,
   65 octets) followed by that record.

Every HKDF output here is at most 32 octets, so HKDF-Expand is one HMAC-SHA-256 block.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

RECORD_SIZE: Final = 4096
_AUTH_LEN: Final = 16
_POINT_LEN: Final = 65  # an uncompressed P-256 point


@dataclass(frozen=True, slots=True)
class PushKeys:
    """A subscription's validated ``keys`` (RFC 8620 §7.2, RFC 8291 §2)."""

    p256dh: bytes  # the user agent's public key, uncompressed point
    auth: bytes  # the 16-octet authentication secret


def _b64url(text: str) -> bytes:
    """URL-safe base64 (RFC 4648 §5), padding optional; anything else is an error."""
    padded = text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4)
    return base64.b64decode(padded.encode(), altchars=b"-_", validate=True)


def parse_keys(value: object) -> PushKeys:
    """Validate a ``keys`` object: ``{"p256dh": <base64url>, "auth": <base64url>}``.

    Raises:
        ValueError: the message says what is wrong.
    """
    if not isinstance(value, dict) or set(value) != {"p256dh", "auth"}:
        raise ValueError("keys must be an object with exactly p256dh and auth")
    if not all(isinstance(v, str) for v in value.values()):
        raise ValueError("keys.p256dh and keys.auth must be Strings")
    try:
        p256dh, auth = _b64url(value["p256dh"]), _b64url(value["auth"])
    except (binascii.Error, ValueError):
        raise ValueError("keys must be URL-safe base64") from None
    if len(auth) != _AUTH_LEN:
        raise ValueError("keys.auth must be 16 octets")
    if len(p256dh) != _POINT_LEN or p256dh[0] != 4:
        raise ValueError("keys.p256dh must be an uncompressed P-256 point (65 octets)")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
    except ValueError:
        raise ValueError("keys.p256dh is not a point on P-256") from None
    return PushKeys(p256dh, auth)


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()[:length]


def encrypt(plaintext: bytes, keys: PushKeys, *, salt: bytes | None = None) -> bytes:
    """The ``aes128gcm`` body carrying ``plaintext`` to the holder of ``keys``."""
    ua_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), keys.p256dh)
    ours = ec.generate_private_key(ec.SECP256R1())
    as_public = ours.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    ecdh_secret = ours.exchange(ec.ECDH(), ua_key)
    key_info = b"WebPush: info\x00" + keys.p256dh + as_public
    ikm = _hkdf(keys.auth, ecdh_secret, key_info, 32)
    salt = salt if salt is not None else os.urandom(16)
    cek = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    record = AESGCM(cek).encrypt(nonce, plaintext + b"\x02", None)
    record_size = max(RECORD_SIZE, len(record))
    header = salt + record_size.to_bytes(4, "big") + bytes([len(as_public)]) + as_public
    return header + record
