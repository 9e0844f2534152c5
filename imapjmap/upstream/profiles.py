"""What the proxy does differently for each kind of upstream server: one :class:`Profile`,
chosen at login from the server's CAPABILITY and RFC 2971 ID answer.

This module is the one place where a server's name or quirk is decided (docs/design.md,
"Servers").  The rest of the proxy reads the profile's plain attributes and never asks
which server it talks to: a fifth kind of server is a new row in :func:`choose`, not a
branch in every layer.

Rules
1. The profile is a pure function of the capabilities after login, the ID fields and the
   configuration (:func:`choose`); it does no I/O and is chosen once per connection, so
   a hot path (every refresh) reads attributes only.
2. A capability decides what a capability can tell (RFC 8474 OBJECTID, X-GM-EXT-1,
   NOTIFY, LIST-STATUS, CONDSTORE); the ID's name decides only what no capability
   advertises: Dovecot's ``X-GUID`` items and the behaviour measured on Dovecot (the
   anchor, docs/design.md "Freshness").
3. Gmail bridge mode (labels as mailboxes) is :attr:`Profile.labels`: ``imap.gmail =
   "on"``, or ``"auto"`` and X-GM-EXT-1.  It is the only way the proxy asks "Gmail
   mode?".
4. A server the profile does not recognise gets the behaviour its capabilities allow
   (``generic``, or ``bare`` when it offers none of the extensions the proxy uses): an
   unknown name is never an error.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from imapjmap.config import GMAIL_PROFILE_URL, Config, GmailMode, ImapConfig

Kind = Literal["generic", "bare", "dovecot", "cyrus", "gmail"]
MailboxIdItem = Literal["MAILBOXID", "X-GUID", ""]
# How the push watcher learns of changes (docs/design.md, "Push"):
# "notify": RFC 5465 NOTIFY on every mailbox, INBOX selected (and IDLE where offered);
# "idle": IDLE on INBOX, LIST-STATUS compared for the rest where :attr:`Profile.push_lists`;
# "idle-all": IDLE on the \All mailbox, which shows every message and label change;
# "poll": neither: a refresh every push.poll_interval.
PushStrategy = Literal["notify", "idle", "idle-all", "poll"]

#: The extensions whose absence makes a server ``bare`` (the proxy's fallbacks for each are
#: in docs/design.md, "Servers").
EXTENSIONS: Final = ("CONDSTORE", "QRESYNC", "LIST-STATUS", "MOVE", "UIDPLUS")
_STATUS_ITEMS: Final = "MESSAGES UIDNEXT UIDVALIDITY UNSEEN"


@dataclass(frozen=True, slots=True)
class Profile:
    """How to treat one upstream server.  Every attribute is decided by :func:`choose`."""

    kind: Kind  # for logs and tests: what the proxy believes the server is
    labels: bool  # Gmail bridge mode (Rule 3): labels are mailboxes, writes are label STOREs
    # FETCH items naming a message and its thread (EMAILID THREADID, X-GM-MSGID X-GM-THRID,
    # X-GUID), then the ones every new message also needs (X-GM-LABELS in Gmail mode)
    message_items: tuple[str, ...]
    # FETCH items asked with FLAGS when looking for changes: a label change moves MODSEQ
    # like a flag change does
    flag_items: tuple[str, ...]
    # the STATUS item that names a mailbox stably, asked on its own (never next to items
    # that open the mailbox: Cyrus 3.6 answers garbage then); "" when there is none
    mailbox_id_item: MailboxIdItem
    # the STATUS items of every refresh: counts, CONDSTORE's HIGHESTMODSEQ, and X-GUID
    # where the server answers it even in LIST-STATUS
    status_items: str
    # keep the biggest mailbox selected on the refresh connection and NOOP behind the LIST
    # (docs/design.md, "Freshness"): measured on Dovecot with LIST-STATUS
    anchor: bool
    push: PushStrategy
    push_lists: bool  # with "idle": compare LIST-STATUS answers for the other mailboxes
    # the login names one mail store whatever its case (the account's key folds it)
    folded_logins: bool


def labels_mode(mode: GmailMode, capabilities: Collection[str]) -> bool:
    """Rule 3: ``imap.gmail`` "on", or "auto" and X-GM-EXT-1."""
    return mode == "on" or (mode == "auto" and "X-GM-EXT-1" in capabilities)


def _kind(capabilities: Collection[str], name: str) -> Kind:
    if "X-GM-EXT-1" in capabilities or name == "gimap":
        return "gmail"
    if name == "dovecot":
        return "dovecot"
    if name.startswith("cyrus"):
        return "cyrus"
    if not any(extension in capabilities for extension in EXTENSIONS):
        return "bare"
    return "generic"


def _push(capabilities: Collection[str], labels: bool) -> PushStrategy:
    if "NOTIFY" in capabilities:
        return "notify"
    if "IDLE" not in capabilities:
        return "poll"
    return "idle-all" if labels else "idle"


def choose(
    capabilities: Collection[str], id_fields: Mapping[str, str], config: ImapConfig
) -> Profile:
    """The profile of a server that advertises ``capabilities`` (upper case, as
    :attr:`imapjmap.imap.session.ImapSession.capabilities` holds them) and answered ID
    with ``id_fields`` (empty when it did not: Rule 4)."""
    name = next((v for k, v in id_fields.items() if k.lower() == "name"), "").strip().lower()
    kind = _kind(capabilities, name)
    labels = labels_mode(config.gmail, capabilities)
    guid = kind == "dovecot" and "OBJECTID" not in capabilities  # Rule 2
    ids: tuple[str, ...] = ()
    if "OBJECTID" in capabilities:
        ids = ("EMAILID", "THREADID")
    elif "X-GM-EXT-1" in capabilities or labels:
        ids = ("X-GM-MSGID", "X-GM-THRID")
    elif guid:
        ids = ("X-GUID",)
    flag_items = ("X-GM-LABELS",) if labels else ()
    status_items = _STATUS_ITEMS
    if "CONDSTORE" in capabilities:
        status_items += " HIGHESTMODSEQ"
    if guid:
        status_items += " X-GUID"  # Dovecot answers it in LIST-STATUS too
    mailbox_id_item: MailboxIdItem = (
        "MAILBOXID" if "OBJECTID" in capabilities else ("X-GUID" if guid else "")
    )
    push = _push(capabilities, labels)
    return Profile(
        kind=kind,
        labels=labels,
        message_items=ids + flag_items,
        flag_items=flag_items,
        mailbox_id_item=mailbox_id_item,
        status_items=status_items,
        anchor=kind == "dovecot" and "LIST-STATUS" in capabilities and not labels,
        push=push,
        push_lists=push == "idle" and "LIST-STATUS" in capabilities,
        folded_logins=labels,
    )


def bearer_possible(config: Config, capabilities: Collection[str] | None) -> bool | None:
    """Whether an HTTP Bearer token can log in upstream (SASL XOAUTH2) and be told whose it
    is: always in Gmail mode (Google's profile endpoint names the token's user); elsewhere
    only where the server offers XOAUTH2 and ``auth.bearer_profile_url`` names an endpoint
    of the operator's own.  None: cannot tell before asking the server's capabilities."""
    if config.imap.gmail == "on":
        return True
    if capabilities is None:
        return None
    if labels_mode(config.imap.gmail, capabilities):
        return True
    own_profile_url = config.auth.bearer_profile_url != GMAIL_PROFILE_URL
    return "AUTH=XOAUTH2" in capabilities and own_profile_url
