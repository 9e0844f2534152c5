"""A real SMTP server (aiosmtpd) that records what it receives, for tests and the demo.

:class:`SmtpSink` listens on a free 127.0.0.1 port in a thread of its own.  It accepts AUTH
PLAIN and LOGIN without TLS for the users it is given, AUTH XOAUTH2 for the OAuth tokens it
is given (as Gmail's SMTP server does, Google's "OAuth 2.0 Mechanism": a refused token gets
a 334 challenge holding a base64 JSON error, and the client's empty answer a 535), and the
MAIL/RCPT parameters a submission client sends (``AUTH=``, ``ENVID=``, ``RET=``,
``NOTIFY=``, ``ORCPT=``; stock aiosmtpd answers 555 to them), and advertises DSN.  It can
refuse chosen recipients with a chosen reply, and deliver what it accepts for chosen
recipients into a Dovecot user's INBOX over LMTP.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import dataclasses
import email.message
import email.parser
import email.policy
import itertools
import json
import logging
import smtplib
import socket
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

if TYPE_CHECKING:
    from devservers.dovecot import DovecotServer


class _QuietLoginData(logging.Filter):
    """aiosmtpd 1.4 logs a deprecation warning when *it* sets Session.login_data on AUTH."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Session.login_data is deprecated" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_QuietLoginData())

__all__ = ["ReceivedMessage", "SmtpSink"]

# Parameters that stock aiosmtpd rejects with 555 but a submission client may send:
# RFC 4954 AUTH=, RFC 3461 (DSN) ENVID=, RET= on MAIL; NOTIFY=, ORCPT= on RCPT.
_EXTRA_MAIL_PARAMS = frozenset({"AUTH", "ENVID", "RET"})
_EXTRA_RCPT_PARAMS = frozenset({"NOTIFY", "ORCPT"})
_PORT_ATTEMPTS = 5
# RFC 4954 §4: an AUTH command with its initial response may be 12288 octets long (an OAuth
# token makes a long one; stock aiosmtpd takes 512).
_AUTH_LINE_LIMIT = 12288
# What Gmail's SMTP server sends for a refused token (Google's "OAuth 2.0 Mechanism").
_XOAUTH2_ERROR = {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}
_XOAUTH2_REFUSED = "535 5.7.8 Username and Password not accepted"


@dataclass(frozen=True)
class ReceivedMessage:
    """One accepted SMTP transaction."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    mail_options: tuple[str, ...]  # MAIL FROM parameters, as sent (e.g. "ENVID=abc")
    rcpt_options: tuple[tuple[str, ...], ...]  # RCPT TO parameters, one tuple per recipient
    raw: bytes  # the message as received (CRLF line ends, dots unstuffed)
    auth_user: str | None  # the AUTH login of the session, if it authenticated
    delivered_to: tuple[str, ...] = ()  # Dovecot users it was delivered to over LMTP
    auth_mechanism: str | None = None  # PLAIN, LOGIN or XOAUTH2, if it authenticated

    def parsed(self) -> email.message.EmailMessage:
        parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(self.raw)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed


@dataclass(frozen=True)
class _Login:
    """``Session.auth_data`` of an authenticated session (``login`` is what aiosmtpd reads)."""

    login: bytes
    mechanism: str


def _xoauth2_fields(blob: bytes) -> tuple[str, str]:
    """(user, token) of a decoded XOAUTH2 client response; empty strings when malformed."""
    fields: dict[str, str] = {}
    for part in blob.decode("utf-8", "replace").split("\x01"):
        key, _, value = part.partition("=")
        fields.setdefault(key, value)
    scheme, _, token = fields.get("auth", "").partition(" ")
    user = fields.get("user", "")
    return (user, token) if scheme.lower() == "bearer" and user and token else ("", "")


class _Envelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        self.raw_mail_options: list[str] = []
        self.rcpt_params: list[tuple[str, ...]] = []


def _split_params(arg: str, extra: Collection[str]) -> tuple[str, list[str], list[str]]:
    """``FROM:<a> X=1 ENVID=2`` → (``FROM:<a> X=1``, all parameters, the ``extra`` ones)."""
    if ">" in arg:
        head, _, tail = arg.partition(">")
        head += ">"
    else:
        head, _, tail = arg.strip().partition(" ")
    params = tail.split()
    kept = [p for p in params if p.split("=", 1)[0].upper() not in extra]
    removed = [p for p in params if p.split("=", 1)[0].upper() in extra]
    return " ".join([head, *kept]), params, removed


class _SinkSMTP(SMTP):
    """aiosmtpd's SMTP that also takes the submission/DSN parameters aiosmtpd does not know,
    and AUTH lines as long as RFC 4954 allows."""

    line_length_limit = _AUTH_LINE_LIMIT + 2  # the reader's limit, set by SMTP.__init__

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.line_length_limit = SMTP.line_length_limit  # DATA lines keep theirs
        # an instance dict: aiosmtpd's is shared by every server of the process
        self.command_size_limits = collections.defaultdict(
            lambda: SMTP.command_size_limit, {"AUTH": _AUTH_LINE_LIMIT}
        )

    def _create_envelope(self) -> Envelope:
        return _Envelope()

    async def smtp_MAIL(self, arg: str) -> None:
        envelope = self.envelope
        if not arg or self.session is None or not self.session.extended_smtp:
            await super().smtp_MAIL(arg)
            return
        stripped, params, _ = _split_params(arg, _EXTRA_MAIL_PARAMS)
        already = envelope is not None and envelope.mail_from is not None
        await super().smtp_MAIL(stripped)
        if not already and isinstance(self.envelope, _Envelope) and self.envelope.mail_from:
            self.envelope.raw_mail_options = params

    async def smtp_RCPT(self, arg: str) -> None:
        if not arg or self.session is None or not self.session.extended_smtp:
            await super().smtp_RCPT(arg)
            return
        stripped, params, _ = _split_params(arg, _EXTRA_RCPT_PARAMS)
        envelope = self.envelope
        count = len(envelope.rcpt_tos) if envelope is not None else 0
        await super().smtp_RCPT(stripped)
        if isinstance(envelope, _Envelope) and len(envelope.rcpt_tos) > count:
            envelope.rcpt_params.append(tuple(params))


class _Handler:
    """The aiosmtpd handler: hooks run in the controller's thread and event loop."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-DSN", responses[-1]]

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        """AUTH XOAUTH2: a token of :attr:`SmtpSink.tokens` for the user it names logs in;
        anything else gets the error challenge, and the client's answer the 535."""
        if len(args) == 1:  # no initial response: ask for it
            answer = await server.challenge_auth("", encode_to_b64=False)
            if answer is MISSING:  # 501 sent already
                return AuthResult(success=False, handled=True)
            blob = answer
        else:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        user, token = _xoauth2_fields(blob)
        self.sink.note_xoauth2(user)
        if user and self.sink.tokens.get(token) == user:
            return AuthResult(success=True, auth_data=_Login(user.encode(), "XOAUTH2"))
        answer = await server.challenge_auth(json.dumps(_XOAUTH2_ERROR))
        if answer is MISSING:
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False, message=_XOAUTH2_REFUSED)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.sink.require_auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.sink.rejection(address)
        if reply is not None:
            return reply
        limit = self.sink.max_recipients
        if limit is not None and len(envelope.rcpt_tos) >= limit:
            return "452 4.5.3 Too many recipients"  # RFC 5321 §4.5.3.1.10
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if isinstance(envelope.content, bytes) and not raw:
            raw = envelope.content
        rcpt_params = envelope.rcpt_params if isinstance(envelope, _Envelope) else []
        mail_options = (
            envelope.raw_mail_options if isinstance(envelope, _Envelope) else []
        ) or envelope.mail_options
        auth_user = mechanism = None
        if session.authenticated and isinstance(session.auth_data, _Login):
            auth_user = session.auth_data.login.decode("utf-8", "replace")
            mechanism = session.auth_data.mechanism
        message = ReceivedMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            mail_options=tuple(mail_options),
            rcpt_options=tuple(rcpt_params)
            if len(rcpt_params) == len(envelope.rcpt_tos)
            else tuple(() for _ in envelope.rcpt_tos),
            raw=raw,
            auth_user=auth_user,
            auth_mechanism=mechanism,
        )
        targets = self.sink.delivery_targets(message.rcpt_tos)
        if targets:
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, self.sink.deliver_lmtp, message, targets)
            except (OSError, smtplib.SMTPException) as error:
                return f"451 4.3.0 LMTP delivery failed: {error}"
            message = dataclasses.replace(message, delivered_to=tuple(targets))
        number = self.sink.record(message)
        return f"250 2.0.0 OK: queued as {number}"


class _SinkController(Controller):
    def factory(self) -> SMTP:
        kwargs = dict(self.SMTP_kwargs)
        if not self.handler.sink.offer_xoauth2:  # read for each connection
            kwargs["auth_exclude_mechanism"] = ["XOAUTH2"]
        return _SinkSMTP(self.handler, **kwargs)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(eq=False)
class SmtpSink:
    """A recording SMTP server on 127.0.0.1.  Use :meth:`start` (or ``with SmtpSink.start()``).

    ``users``: logins accepted by AUTH PLAIN/LOGIN (no TLS needed).  ``tokens``: OAuth access
    token → the user AUTH XOAUTH2 accepts it for; ``offer_xoauth2 = False`` leaves XOAUTH2
    out of the EHLO AUTH line (from the next connection); ``xoauth2_attempts`` lists the user
    named by every XOAUTH2 attempt.  ``require_auth``: refuse MAIL FROM before AUTH.
    ``reject``: recipient address → reply (``550`` or ``"550 5.1.1 No such user"``) for RCPT
    TO.  ``max_recipients``: RCPT TO beyond that many in one transaction gets ``452 4.5.3 Too
    many recipients``.  ``deliver_to``: recipient address → Dovecot
    username whose INBOX gets the message over LMTP (``"*"`` matches every recipient); needs
    ``dovecot``.  Addresses compare case-insensitively.  All of these may be changed while
    the sink runs; :meth:`reset` forgets recorded messages, rejections and deliveries.
    The sink never logs a password or a token.
    """

    users: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    offer_xoauth2: bool = True
    xoauth2_attempts: list[str] = field(default_factory=list)
    require_auth: bool = False
    reject: dict[str, str | int] = field(default_factory=dict)
    max_recipients: int | None = None
    deliver_to: dict[str, str] = field(default_factory=dict)
    dovecot: DovecotServer | None = None
    host: str = "127.0.0.1"
    port: int = 0
    _messages: list[ReceivedMessage] = field(default_factory=list, repr=False)
    _changed: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _controller: Controller | None = field(default=None, repr=False)
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1), repr=False)

    @classmethod
    def start(
        cls,
        *,
        users: Mapping[str, str] | None = None,
        tokens: Mapping[str, str] | None = None,
        require_auth: bool = False,
        reject: Mapping[str, str | int] | None = None,
        deliver_to: Mapping[str, str] | None = None,
        dovecot: DovecotServer | None = None,
    ) -> SmtpSink:
        sink = cls(
            users=dict(users or {}),
            tokens=dict(tokens or {}),
            require_auth=require_auth,
            reject={k.lower(): v for k, v in (reject or {}).items()},
            deliver_to={k.lower(): v for k, v in (deliver_to or {}).items()},
            dovecot=dovecot,
        )
        if sink.deliver_to and dovecot is None:
            raise ValueError("deliver_to needs the DovecotServer to deliver to")
        last_error: Exception | None = None
        for _ in range(_PORT_ATTEMPTS):
            port = _free_port()
            controller = _SinkController(
                _Handler(sink),
                hostname=sink.host,
                port=port,
                server_hostname="smtp-sink.localhost",
                authenticator=sink._authenticate,
                auth_require_tls=False,
                enable_SMTPUTF8=True,
                ready_timeout=10.0,
            )
            try:
                controller.start()
            except Exception as error:  # aiosmtpd re-raises the bind error as it was
                last_error = error
                with contextlib.suppress(Exception):
                    controller.stop()
                continue
            sink.port, sink._controller = port, controller
            return sink
        raise RuntimeError(f"could not start the SMTP sink: {last_error}")

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> SmtpSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---------------------------------------------------------------------------- state

    @property
    def messages(self) -> list[ReceivedMessage]:
        """The messages accepted so far, oldest first (a copy)."""
        with self._changed:
            return list(self._messages)

    def reset(self) -> None:
        """Forget recorded messages, rejections, deliveries and XOAUTH2 attempts, and offer
        XOAUTH2 again (users and tokens stay)."""
        with self._changed:
            self._messages.clear()
            self.reject.clear()
            self.max_recipients = None
            self.deliver_to.clear()
            self.xoauth2_attempts.clear()
            self.require_auth = False
            self.offer_xoauth2 = True

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Wait until at least ``count`` messages are recorded; return them all."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(self._messages)} of {count} messages after {timeout}s"
                    )
                self._changed.wait(left)
            return list(self._messages)

    def add_user(self, username: str, password: str) -> None:
        self.users[username] = password

    def add_token(self, username: str, token: str) -> None:
        """Accept ``token`` for ``username`` with AUTH XOAUTH2."""
        self.tokens[token] = username

    def note_xoauth2(self, user: str) -> None:
        with self._changed:
            self.xoauth2_attempts.append(user)

    def reject_recipient(self, address: str, reply: str | int = 550) -> None:
        self.reject[address.lower()] = reply

    def deliver(self, address: str, username: str) -> None:
        """Deliver mail for ``address`` (``"*"``: any) into Dovecot user ``username``."""
        if self.dovecot is None:
            raise ValueError("this sink has no DovecotServer to deliver to")
        self.deliver_to[address.lower()] = username

    # ---------------------------------------------------------------------------- hooks

    def record(self, message: ReceivedMessage) -> int:
        with self._changed:
            self._messages.append(message)
            self._changed.notify_all()
            return next(self._counter)

    def rejection(self, address: str) -> str | None:
        reply = self.reject.get(address.lower())
        if reply is None:
            return None
        if isinstance(reply, int):
            return f"{reply} {'5.1.1' if reply >= 500 else '4.2.0'} <{address}>: Recipient rejected"
        return reply

    def delivery_targets(self, rcpt_tos: Collection[str]) -> list[str]:
        targets: list[str] = []
        for address in rcpt_tos:
            username = self.deliver_to.get(address.lower()) or self.deliver_to.get("*")
            if username is not None and username not in targets:
                targets.append(username)
        return targets

    def deliver_lmtp(self, message: ReceivedMessage, usernames: Collection[str]) -> None:
        """Deliver over LMTP, one transaction per user (stdlib LMTP reads one DATA reply)."""
        assert self.dovecot is not None
        with smtplib.LMTP(self.dovecot.host, self.dovecot.lmtp_port, timeout=30) as lmtp:
            for username in usernames:
                refused = lmtp.sendmail(message.mail_from, [username], message.raw)
                if refused:
                    raise smtplib.SMTPRecipientsRefused(refused)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode("utf-8", "replace")
            password = auth_data.password.decode("utf-8", "replace")
            if login in self.users and self.users[login] == password:
                return AuthResult(success=True, auth_data=_Login(auth_data.login, mechanism))
        return AuthResult(success=False, handled=False)
