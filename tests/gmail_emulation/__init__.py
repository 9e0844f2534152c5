"""An EMULATION of Gmail's IMAP service for tests.  It is not Gmail.

No installable server implements Gmail's X-GM-EXT-1, and the build machines cannot reach
Gmail, so Gmail mode is tested against this scripted loopback server.  It implements what
Google documents, and nothing it does proves how the real service behaves where the
documents are silent.

Sources (Google's public documentation):

* "IMAP Extensions" (developers.google.com/gmail/imap/imap-extensions): ``X-GM-EXT-1`` in
  CAPABILITY; the special-use LIST attributes of ``[Gmail]/All Mail`` (``\\All``), Drafts,
  Important, Sent Mail, Spam (``\\Junk``), Starred (``\\Flagged``) and Trash; ``X-GM-RAW``
  search; ``X-GM-MSGID`` and ``X-GM-THRID`` (64-bit, FETCH and SEARCH); ``X-GM-LABELS``
  (FETCH, STORE ``+``/``-``/replace, SEARCH), system labels as ``\\Inbox``-style atoms.
* "OAuth 2.0 Mechanism" (developers.google.com/gmail/imap/xoauth2-protocol): SASL
  ``XOAUTH2``, initial response ``base64("user=" user ^A "auth=Bearer " token ^A ^A)``, and
  on failure a base64 JSON challenge answered by an empty response, then NO.
* Gmail's IMAP settings (the Gmail API's ``ImapSettings``): what EXPUNGE does; this
  emulation uses "auto-expunge off" and the documented Trash semantics below.
* Gmail API ``users.getProfile`` (``emailAddress`` of the token's user): served over HTTP
  by :meth:`GmailEmulation.start_profile`, for the proxy's Bearer login.

Behaviour that is emulated (see :mod:`tests.gmail_emulation.mailstore` for the model):
labels as folders, each a view with its own UIDs over messages that exist once;
``[Gmail]/All Mail`` shows every message outside Trash and Spam; ``\\Starred`` and
``\\Flagged`` are one; COPY to a label's folder adds the label; MOVE out of a label's
folder removes it; EXPUNGE in a label's folder removes the label, in All Mail moves the
message to the Trash, in Trash or Spam deletes it forever; CONDSTORE modseqs are
account-wide; IDLE reports changes of the selected folder.

Capabilities: the ones in Google's example handshake that are emulated (IMAP4rev1 UNSELECT
IDLE NAMESPACE ID CHILDREN X-GM-EXT-1 LITERAL+) plus UIDPLUS MOVE ENABLE CONDSTORE ESEARCH
SPECIAL-USE, which Gmail advertises today but the extension document does not list.  No
QRESYNC, LIST-STATUS, LIST-EXTENDED or NOTIFY.  XLIST, QUOTA and COMPRESS are not emulated
and not advertised.

Not emulated (unknown or undocumented): Gmail's real eventual consistency, its search
grammar beyond a small X-GM-RAW subset (:mod:`tests.gmail_emulation.search`), which
localised folder names it uses (``add_user(names=...)`` renames the special folders),
per-label "show in IMAP" settings, rate limits, and Gmail's answers to unusual commands.
Two knobs exist only for tests: ``Account.lag`` and ``Account.hide``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any, Final

from tests.gmail_emulation.mailstore import Account, Folder, Message, make_message
from tests.gmail_emulation.server import Connection

__all__ = ["Account", "Folder", "GmailEmulation", "Message", "make_message"]

CAPABILITIES: Final = (
    "IMAP4rev1", "UNSELECT", "IDLE", "NAMESPACE", "ID", "CHILDREN", "X-GM-EXT-1",
    "LITERAL+", "UIDPLUS", "MOVE", "ENABLE", "CONDSTORE", "ESEARCH", "SPECIAL-USE",
)  # fmt: skip
PRE_AUTH: Final = (
    "IMAP4rev1", "UNSELECT", "IDLE", "NAMESPACE", "ID", "CHILDREN", "X-GM-EXT-1",
    "LITERAL+", "SASL-IR", "AUTH=XOAUTH2",
)  # fmt: skip


class GmailEmulation:
    """The loopback server: users, their passwords (app passwords) and OAuth tokens."""

    def __init__(self, capabilities: Iterable[str] = CAPABILITIES) -> None:
        self.capabilities = tuple(capabilities)
        self.pre_auth_capabilities = PRE_AUTH
        self.accounts: dict[str, Account] = {}
        self.passwords: dict[str, str] = {}
        self.tokens: dict[str, str] = {}  # access token -> user
        self.xoauth2_attempts: list[str] = []  # the user of every AUTHENTICATE XOAUTH2
        self.imap_refuses: set[str] = set()  # tokens XOAUTH2 refuses (e.g. IMAP turned off)
        self.host = "127.0.0.1"
        self.port = 0
        self.profile_url = ""
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._profile_runner: Any = None

    def add_user(
        self,
        user: str,
        *,
        password: str | None = None,
        token: str | None = None,
        labels: Iterable[str] = (),
        names: dict[str, str] | None = None,
    ) -> Account:
        account = Account(user, labels, names)
        self.accounts[user] = account
        if password is not None:
            self.passwords[user] = password
        if token is not None:
            self.tokens[token] = user
        return account

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await Connection(self, reader, writer).run()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def start_profile(self) -> str:
        """Serve ``GET /gmail/v1/users/me/profile`` (Gmail API users.getProfile) for the
        tokens of :attr:`tokens`; returns the URL."""
        from aiohttp import web

        async def profile(request: web.Request) -> web.Response:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            user = self.tokens.get(token) if scheme == "Bearer" else None
            if user is None:
                body = {"error": {"code": 401, "message": "Invalid Credentials"}}
                return web.json_response(body, status=401)
            count = len(self.accounts[user].messages)
            return web.json_response(
                {"emailAddress": user, "messagesTotal": count, "historyId": "1"}
            )

        app = web.Application()
        app.router.add_get("/gmail/v1/users/me/profile", profile)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        self._profile_runner = runner
        port = runner.addresses[0][1]
        self.profile_url = f"http://{self.host}:{port}/gmail/v1/users/me/profile"
        return self.profile_url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if self._profile_runner is not None:
            await self._profile_runner.cleanup()
