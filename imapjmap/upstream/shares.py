"""Other users' and shared folders (RFC 2342 NAMESPACE, RFC 4314 ACL) as accounts of their
own: what is shared with a login, and which of its listed mailboxes belong where.

Rules
1. A login's *personal* account holds the mailboxes of its personal namespace only: a name
   under an Other Users or Shared namespace prefix (or that prefix itself, which servers
   list as a ``\\Noselect`` parent) belongs to a share, never to the personal account.
2. Each owner under an Other Users namespace is one *share* (``shared/alice/``: every
   folder alice lets this login see); the Shared namespace is one share of its own.  A share
   exists while the login can see one selectable mailbox in it: an owner who takes every
   right back (``DELETEACL``) removes the share.
3. A share is read-only when no mailbox of it grants any right that writes (RFC 4314: ``i``
   insert, ``t``/``e`` delete, ``s`` seen, ``w`` keywords, ``k`` create, ``x`` delete
   mailbox); mailboxes whose rights the server does not say count as writable.
4. Nothing here decides account ids: :func:`share_account_id` derives one from the login's
   own account id and the share's prefix, so a share's id is stable, and two logins never
   share one (each has its own cache rows of what it may see).

Pure: :mod:`imapjmap.upstream.imap_shares` asks the server.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from imapjmap.imap.models import ListEntry

__all__ = [
    "WRITE_RIGHTS",
    "Namespaces",
    "Share",
    "ShareSource",
    "find_shares",
    "is_personal",
    "share_account_id",
]

WRITE_RIGHTS: Final = frozenset("itewskxacd")
"""RFC 4314 rights that change a mailbox or its messages (``a``: administer; ``c`` and
``d``: RFC 2086's, which servers still send)."""

Namespace = tuple[str, str | None]  # (prefix, hierarchy delimiter)


@dataclass(frozen=True, slots=True)
class Namespaces:
    """The login's namespaces (RFC 2342): personal, other users', shared."""

    personal: tuple[Namespace, ...] = (("", None),)
    other_users: tuple[Namespace, ...] = ()
    shared: tuple[Namespace, ...] = ()

    @classmethod
    def from_reply(cls, groups: Sequence[Sequence[Namespace]] | None) -> Namespaces:
        """From a parsed NAMESPACE response (None: the server has no NAMESPACE)."""
        if groups is None or len(groups) != 3:
            return cls()
        personal, other, shared = (tuple(g) for g in groups)
        return cls(personal or (("", None),), other, shared)

    def foreign(self) -> tuple[Namespace, ...]:
        """The namespaces whose mailboxes are not the login's own (Rule 1)."""
        return (*self.other_users, *self.shared)


@dataclass(frozen=True, slots=True)
class Share:
    """One account of folders another owner shares with the login (Rule 2)."""

    prefix: str  # every mailbox of the share starts with it ("shared/alice/")
    delimiter: str | None
    kind: Literal["other", "shared"]
    owner: str | None  # the other user (``kind == "other"``)
    read_only: bool  # Rule 3

    @property
    def name(self) -> str:
        """The account's name as the session shows it."""
        if self.owner is not None:
            return self.owner
        return self.prefix.rstrip(self.delimiter or "") or "shared"


def is_personal(name: str, namespaces: Namespaces) -> bool:
    """Whether a listed mailbox belongs to the personal account (Rule 1)."""
    for prefix, delimiter in namespaces.foreign():
        if not prefix:
            continue
        bare = prefix[: -len(delimiter)] if delimiter and prefix.endswith(delimiter) else prefix
        if name.startswith(prefix) or name == bare:
            return False
    return True


def find_shares(
    namespaces: Namespaces,
    entries: Iterable[ListEntry],
    rights: Mapping[str, str | None],
) -> list[Share]:
    """The shares a listing shows (Rule 2), each with its read-only flag (Rule 3);
    ``rights``: the login's MYRIGHTS letters per mailbox name, where known."""
    found: dict[str, tuple[Share, list[str | None]]] = {}
    for entry in entries:
        if entry.has("\\Noselect") or entry.has("\\NonExistent"):
            continue
        share = _share_of(entry.name, namespaces)
        if share is None:
            continue
        _, letters = found.setdefault(share.prefix, (share, []))
        letters.append(rights.get(entry.name))
    out = []
    for share, letters in found.values():
        writable = any(r is None or WRITE_RIGHTS & set(r) for r in letters)
        out.append(
            Share(share.prefix, share.delimiter, share.kind, share.owner, read_only=not writable)
        )
    return sorted(out, key=lambda s: s.prefix)


def _share_of(name: str, namespaces: Namespaces) -> Share | None:
    for prefix, delimiter in namespaces.other_users:
        if not prefix or not name.startswith(prefix) or not delimiter:
            continue
        owner, sep, _ = name[len(prefix) :].partition(delimiter)
        if owner and sep:
            return Share(prefix + owner + delimiter, delimiter, "other", owner, read_only=True)
    for prefix, delimiter in namespaces.shared:
        if prefix and name.startswith(prefix) and len(name) > len(prefix):
            return Share(prefix, delimiter, "shared", None, read_only=True)
    return None


def share_account_id(login_account_id: str, prefix: str) -> str:
    """A share's account id: stable, valid (RFC 8620 §1.2) and the login's own (Rule 4)."""
    text = f"share\0{login_account_id}\0{prefix}"
    digest = hashlib.sha256(text.encode()).digest()
    return "A" + base64.b32encode(digest[:15]).decode().lower()


class ShareSource(Protocol):
    """The login's server, as asked what is shared with the login."""

    async def shares(self) -> Sequence[Share]:
        """Every share the login can see now (one LIST per foreign namespace, and the
        rights of its mailboxes)."""
        ...
