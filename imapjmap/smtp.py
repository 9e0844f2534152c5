"""SMTP submission (RFC 6409): the ONLY module that imports aiosmtplib (docs/design.md, "Layers").

Theory of operation: :func:`submit` sends one message on one connection of its own:
connect (TLS from the first byte, or a STARTTLS upgrade that is required, never skipped,
when the config says so), EHLO, AUTH with the user's own credentials (``smtp.auth =
"user"``: their password, or their OAuth token, Rule 6), MAIL FROM, one RCPT TO per
recipient, DATA, QUIT.  It knows SMTP words only; the JMAP SetErrors are chosen by the
caller from :class:`SubmitRefused` ``.reason``.

Rules
1. Only parameters the server advertised in its EHLO reply are sent.  The ones this module
   adds itself: ``SIZE=`` (with SIZE), ``BODY=8BITMIME`` for 8-bit content (with 8BITMIME),
   ``SMTPUTF8`` for non-ASCII addresses or headers (with SMTPUTF8).  A caller's parameter
   whose extension is not offered (``NOTIFY=`` without DSN, ...) is refused
   (``reason="parameters"``), never sent and never silently dropped.
2. All or nothing: if any recipient is refused, the transaction is reset before DATA and
   nothing is sent (``reason="recipients"`` with every refused recipient and its reply, or
   ``"temporary"`` when every refusal was a 4xx).  A sender refused is ``"sender"``; a
   message too big (552, 5.3.4, or larger than the advertised SIZE) is ``"size"``; a 5.7.x
   refusal at the end of DATA that names the From/Sender is ``"from"``; other 5xx at DATA
   are ``"policy"``; any other 4xx is ``"temporary"``; a refused or impossible login is
   ``"auth"``.  :class:`SubmitRefused` always means nothing was sent.
3. Connection failures and timeouts are :class:`~imapjmap.errors.SmtpUnavailable`; one
   after the message data went out is :class:`SmtpLostDuringData` (it may have been
   delivered).  No aiosmtplib type leaves this module.
4. The password (or token) is used for AUTH and nothing else: never logged, never in an
   exception.
5. :func:`ehlo_extensions` (the session's ``submissionExtensions``) probes the server once
   per process (a failed probe is retried after a minute; calls that come while a probe is
   out share it, so twenty clients fetching the session at once make one connection and
   one warning) and is refreshed by every submission; transport-only keywords (AUTH,
   STARTTLS, PIPELINING, CHUNKING, ...) are hidden, as RFC 8621 §1.3.2 recommends.
6. A :class:`~imapjmap.credentials.BearerToken` in place of the password (a user who logged
   in with ``Authorization: Bearer``) logs in with ``AUTH XOAUTH2`` (Google's "OAuth 2.0
   Mechanism"), never with a password mechanism: the initial response carries the user and
   the token; a refusal comes as a 334 challenge holding a base64 JSON error, answered with
   an empty line, after which the server sends the final 535.  A server that does not
   advertise XOAUTH2 in its EHLO AUTH line is ``reason="auth"`` before anything is sent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import json
import logging
import re
import ssl
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import aiosmtplib

from imapjmap.config import SmtpConfig
from imapjmap.credentials import BearerToken, xoauth2_response
from imapjmap.errors import ProxyError, SmtpUnavailable
from imapjmap.metrics import EVENTS

__all__ = [
    "Params",
    "RecipientResult",
    "RefusalReason",
    "Reply",
    "SmtpLostDuringData",
    "SubmitRefused",
    "SubmitResult",
    "ehlo_extensions",
    "format_reply",
    "oauth_error",
    "smtp_params",
    "submit",
    "visible_extensions",
]

log = logging.getLogger(__name__)

Params = Mapping[str, str | None]
"""ESMTP parameters: name -> value (None for a parameter without a value), not xtext-encoded."""

RefusalReason = Literal[
    "auth",
    "sender",
    "recipients",
    "too-many",
    "size",
    "from",
    "policy",
    "temporary",
    "parameters",
]

# Which EHLO keyword makes a MAIL/RCPT parameter legal; others need a keyword of their name.
_PARAM_EXTENSION: Final[Mapping[str, str]] = {
    "SIZE": "SIZE",
    "BODY": "8BITMIME",
    "SMTPUTF8": "SMTPUTF8",
    "RET": "DSN",
    "ENVID": "DSN",
    "NOTIFY": "DSN",
    "ORCPT": "DSN",
    "BY": "DELIVERBY",
    "HOLDFOR": "FUTURERELEASE",
    "HOLDUNTIL": "FUTURERELEASE",
}
# Keywords about the transport between this proxy and the server: of no use to a client
# (RFC 8621 §1.3.2).  BINARYMIME needs BDAT, which this module does not use.
_HIDDEN: Final = frozenset(
    {
        "AUTH", "STARTTLS", "PIPELINING", "CHUNKING", "BINARYMIME", "HELP",
        "ENHANCEDSTATUSCODES", "ETRN", "VRFY", "EXPN", "TURN", "ATRN", "XCLIENT",
        "XFORWARD", "SEND", "SOML", "SAML",
    }
)  # fmt: skip
_PARAM_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_ENHANCED: Final = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})\b")
_PROBE_TIMEOUT: Final = 5.0  # seconds: a session request must not wait a full smtp.timeout
_RETRY_PROBE_AFTER: Final = 60.0


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply on one line (RFC 8621 §7 ``smtpReply``): ``550 5.1.1 No such user``."""

    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}" if self.text else str(self.code)

    @property
    def enhanced(self) -> str | None:
        """The RFC 3463 enhanced status code (``5.7.1``) the text starts with, if any."""
        match = _ENHANCED.match(self.text)
        return match.group(0) if match else None


@dataclass(frozen=True, slots=True)
class RecipientResult:
    address: str
    reply: Reply

    @property
    def accepted(self) -> bool:
        return 200 <= self.reply.code < 300


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """The server took the message for every recipient (RCPT replies, then DATA's)."""

    recipients: tuple[RecipientResult, ...]
    data_reply: Reply


class SubmitRefused(ProxyError):
    """The server refused the message (or cannot take it as asked): nothing was sent.

    ``reply`` is the server's reply when there was one; ``refused`` the refused recipients
    (reason ``recipients`` / ``temporary`` at RCPT); ``max_size`` the largest message the
    server takes when known (reason ``size``); ``max_recipients`` how many recipients it took
    before it said there were too many (reason ``too-many``).
    """

    def __init__(
        self,
        reason: RefusalReason,
        description: str,
        *,
        reply: Reply | None = None,
        refused: Sequence[RecipientResult] = (),
        max_size: int | None = None,
        max_recipients: int | None = None,
    ) -> None:
        super().__init__(f"{reason}: {description}" + (f" ({reply})" if reply else ""))
        self.reason: RefusalReason = reason
        self.description = description
        self.reply = reply
        self.refused = tuple(refused)
        self.max_size = max_size
        self.max_recipients = max_recipients


class SmtpLostDuringData(SmtpUnavailable):
    """The connection failed after the message data was sent: it may have been delivered."""


# --- replies and parameters (pure) ---------------------------------------------------------


def format_reply(code: int, message: str) -> Reply:
    """One line from a (multi-line) reply, as RFC 8621 §7 asks for ``smtpReply``: later
    lines lose what they share with the first one (the repeated enhanced code), and the
    lines are joined with a space."""
    lines = [line.strip() for line in message.replace("\r", "").split("\n")]
    lines = [line for line in lines if line]
    if not lines:
        return Reply(code, "")
    first, out = lines[0], [lines[0]]
    for line in lines[1:]:
        shared = 0
        for a, b in zip(first, line, strict=False):
            if a != b:
                break
            shared += 1
        if shared < len(line):  # cut at a word boundary: "5.7.1 likely" vs "5.7.1 Our"
            shared = line.rfind(" ", 0, shared + 1) + 1 if shared else 0
        out.append(line[shared:].strip() or line)
    return Reply(code, " ".join(out))


def _xtext(value: str) -> str:
    """RFC 3461 §4 xtext: ``+``, ``=``, controls, space and non-ASCII as ``+HH``."""
    out: list[str] = []
    for byte in value.encode("utf-8"):
        if 0x21 <= byte <= 0x7E and byte not in (0x2B, 0x3D):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def visible_extensions(esmtp: Mapping[str, str]) -> dict[str, list[str]]:
    """aiosmtplib's parsed EHLO reply as ``submissionExtensions``: KEYWORD -> args."""
    out: dict[str, list[str]] = {}
    for keyword, args in esmtp.items():
        name = keyword.upper()
        if name not in _HIDDEN and _PARAM_NAME.fullmatch(name):
            out[name] = args.split()
    return dict(sorted(out.items()))


def smtp_params(params: Params, offered: Mapping[str, Sequence[str]]) -> list[str]:
    """``NAME=xtext`` strings for ``params``, each checked against the EHLO keywords.

    Raises:
        SubmitRefused: ``parameters`` for a malformed name or one whose extension is not
            offered (or not usable by this client: ``BODY=BINARYMIME``).
    """
    out: list[str] = []
    for raw_name, value in params.items():
        name = raw_name.upper()
        if not _PARAM_NAME.fullmatch(name):
            raise SubmitRefused("parameters", f"{raw_name[:40]!r} is not an SMTP parameter name")
        needed = _PARAM_EXTENSION.get(name, name)
        if needed not in offered:
            raise SubmitRefused(
                "parameters", f"the SMTP server does not offer {needed} (parameter {name})"
            )
        if name == "BODY" and (value or "").upper() not in ("7BIT", "8BITMIME"):
            raise SubmitRefused("parameters", "BODY must be 7BIT or 8BITMIME")
        out.append(name if value is None else f"{name}={_xtext(value)}")
    return out


def _max_size(offered: Mapping[str, Sequence[str]]) -> int | None:
    args = offered.get("SIZE") or []
    if args and args[0].isdigit() and int(args[0]) > 0:
        return int(args[0])
    return None


def _headers_8bit(message: bytes) -> bool:
    end = message.find(b"\r\n\r\n")
    if end < 0:
        end = message.find(b"\n\n")
    header = message if end < 0 else message[:end]
    return not header.isascii()


@dataclass(slots=True)
class _Plan:
    """What MAIL FROM / RCPT TO will carry, decided from the EHLO keywords."""

    mail_options: list[str]
    rcpt_options: list[list[str]]
    encoding: str = "ascii"


def _plan(
    offered: Mapping[str, Sequence[str]],
    mail_from: str,
    mail_params: Params,
    rcpts: Sequence[tuple[str, Params]],
    message: bytes,
) -> _Plan:
    """Rule 1.  Raises SubmitRefused (parameters, size, sender, recipients).

    A caller's SIZE is replaced by the real size (or dropped when SIZE is not offered: it
    only announces what the DATA shows anyway)."""
    own = {k.upper(): v for k, v in mail_params.items() if k.upper() != "SIZE"}
    limit = _max_size(offered)
    if limit is not None and len(message) > limit:
        raise SubmitRefused(
            "size", f"the message is {len(message)} octets, the server takes {limit}",
            max_size=limit,
        )  # fmt: skip
    if "SIZE" in offered:
        own["SIZE"] = str(len(message))
    if not message.isascii() and "8BITMIME" in offered and "BODY" not in own:
        own["BODY"] = "8BITMIME"
    wide = not mail_from.isascii() or any(not r.isascii() for r, _ in rcpts)
    if wide and "SMTPUTF8" not in offered:
        if not mail_from.isascii():
            raise SubmitRefused("sender", "the server cannot take a non-ASCII address")
        bad = [
            RecipientResult(r, Reply(553, "5.6.7 the server cannot take non-ASCII addresses"))
            for r, _ in rcpts
            if not r.isascii()
        ]
        raise SubmitRefused("recipients", "non-ASCII addresses need SMTPUTF8", refused=bad)
    if (wide or _headers_8bit(message)) and "SMTPUTF8" in offered:
        own.setdefault("SMTPUTF8", None)
    return _Plan(
        mail_options=smtp_params(own, offered),
        rcpt_options=[smtp_params(params, offered) for _, params in rcpts],
        encoding="utf-8" if wide else "ascii",
    )


# --- the wire ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _tls_context(cfg: SmtpConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cfg.ca_file)
    if not cfg.verify_certificates:
        # only ever by explicit configuration (smtp.verify_certificates = false)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _client(cfg: SmtpConfig, timeout: float) -> aiosmtplib.SMTP:
    secure = cfg.security != "none"
    return aiosmtplib.SMTP(
        hostname=cfg.host,
        port=cfg.port,
        timeout=timeout,
        use_tls=cfg.security == "tls",
        start_tls=cfg.security == "starttls",
        validate_certs=cfg.verify_certificates,
        tls_context=_tls_context(cfg) if secure else None,
    )


def _lost(
    cfg: SmtpConfig, what: str, exc: BaseException, *, data_sent: bool = False
) -> SmtpUnavailable:
    """Rule 3.  aiosmtplib's timeouts are TimeoutErrors and its lost or refused connections
    (and TLS failures) OSErrors, so these two catch every connection-level failure."""
    cls = SmtpLostDuringData if data_sent else SmtpUnavailable
    why = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
    return cls(f"SMTP {what} at {cfg.host}:{cfg.port}: {why}")


def _reply_of(exc: aiosmtplib.SMTPResponseException) -> Reply:
    return format_reply(exc.code, exc.message)


async def _open(client: aiosmtplib.SMTP, cfg: SmtpConfig) -> dict[str, list[str]]:
    """Connect (TLS / STARTTLS as configured) and EHLO; the visible EHLO keywords."""
    try:
        await client.connect()
        await client.ehlo()  # STARTTLS made the client forget the first EHLO (RFC 3207 §4.2)
    except (TimeoutError, OSError) as exc:
        raise _lost(cfg, "connect", exc) from exc
    except aiosmtplib.SMTPException as exc:  # EHLO refused, STARTTLS required but not offered
        raise SmtpUnavailable(f"SMTP connect at {cfg.host}:{cfg.port}: {exc}") from exc
    offered = visible_extensions(client.esmtp_extensions)
    _remember(cfg, offered)
    return offered


async def _login(client: aiosmtplib.SMTP, cfg: SmtpConfig, username: str, password: str) -> None:
    if not client.supports_extension("auth"):
        raise SubmitRefused("auth", "the SMTP server offers no AUTH on this connection")
    if isinstance(password, BearerToken):
        await _xoauth2(client, cfg, username, password)
        return
    try:
        await client.login(username, password)
    except (TimeoutError, OSError) as exc:
        raise _lost(cfg, "AUTH", exc) from exc
    except aiosmtplib.SMTPResponseException as exc:
        reply = _reply_of(exc)
        if reply.code < 500 and not isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            raise SubmitRefused("temporary", "the login failed for now", reply=reply) from None
        raise SubmitRefused("auth", "the SMTP server refused the login", reply=reply) from None
    except aiosmtplib.SMTPException:
        raise SubmitRefused("auth", "no AUTH mechanism in common with the server") from None


def oauth_error(challenge: str) -> str:
    """What an XOAUTH2 error challenge (base64 JSON, ``{"status":"401","schemes":"bearer",
    "scope":"https://mail.google.com/"}``) says, as ``status 401, scope ...``; ``""`` when
    it says nothing readable.  Only short printable values are kept."""
    try:
        body = json.loads(base64.b64decode(challenge.strip(), validate=True))
    except (binascii.Error, ValueError):
        return ""
    if not isinstance(body, dict):
        return ""
    said = [
        f"{key} {value}"
        for key in ("status", "scope")
        if isinstance(value := body.get(key), str | int)
        and len(str(value)) <= 100
        and str(value).isprintable()
    ]
    return ", ".join(said)


async def _xoauth2(client: aiosmtplib.SMTP, cfg: SmtpConfig, username: str, token: str) -> None:
    """Rule 6: ``AUTH XOAUTH2`` with the initial response; the token is in no log line and
    no exception."""
    if "xoauth2" not in client.server_auth_methods:
        log.warning(
            "smtp: %s:%d does not offer AUTH XOAUTH2: users logged in with a Bearer token "
            "cannot send",
            cfg.host,
            cfg.port,
        )
        raise SubmitRefused(
            "auth",
            "you logged in with an OAuth token, and the SMTP server takes no token (it does "
            "not offer AUTH XOAUTH2): log in with a password to send",
        )
    said = ""
    try:
        response = await client.execute_command(
            b"AUTH", b"XOAUTH2", xoauth2_response(username, token)
        )
        if response.code == 334:  # the error challenge: answer empty, then comes the 535
            said = oauth_error(response.message)
            response = await client.execute_command(b"")
    except (TimeoutError, OSError) as exc:
        raise _lost(cfg, "AUTH", exc) from exc
    if response.code == 235:
        return
    reply = format_reply(response.code, response.message)
    if response.code < 500 and response.code != 334:
        raise SubmitRefused("temporary", "the login failed for now", reply=reply)
    refused = "the SMTP server refused the OAuth token" + (f": {said}" if said else "")
    raise SubmitRefused("auth", refused, reply=reply)


def _refusal_at_mail(reply: Reply) -> SubmitRefused:
    if reply.code == 552 or reply.enhanced == "5.3.4":
        return SubmitRefused("size", "the message is too large", reply=reply)
    if reply.code == 530 or reply.enhanced == "5.7.0":
        return SubmitRefused("auth", "the SMTP server wants a login", reply=reply)
    if reply.code < 500:
        return SubmitRefused("temporary", "the sender was refused for now", reply=reply)
    return SubmitRefused("sender", "the SMTP server refused the envelope sender", reply=reply)


def _refusal_at_data(reply: Reply) -> SubmitRefused:
    enhanced = reply.enhanced or ""
    if reply.code == 552 or enhanced == "5.3.4":
        return SubmitRefused("size", "the message is too large", reply=reply)
    if reply.code < 500:
        return SubmitRefused("temporary", "the message was refused for now", reply=reply)
    if enhanced.startswith("5.7.") and re.search(r"\b(from|sender)\b", reply.text, re.I):
        return SubmitRefused("from", "the server refused the From address", reply=reply)
    return SubmitRefused("policy", "the SMTP server refused the message", reply=reply)


async def _quietly(client: aiosmtplib.SMTP, command: str) -> None:
    """RSET or QUIT whose failure changes nothing for the caller."""
    with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
        await (client.rset() if command == "RSET" else client.quit())


async def submit(
    cfg: SmtpConfig,
    *,
    username: str,
    password: str,
    mail_from: str,
    mail_params: Params,
    rcpts: Sequence[tuple[str, Params]],
    message: bytes,
) -> SubmitResult:
    """Send ``message`` to ``rcpts`` as ``mail_from`` (see the module rules).

    ``username``/``password`` are used only when ``cfg.auth == "user"``; a
    :class:`~imapjmap.credentials.BearerToken` password logs in with XOAUTH2 (Rule 6).

    Raises:
        SubmitRefused: nothing was sent; ``.reason`` says why.
        SmtpUnavailable: the server cannot be reached, or failed before the data went out.
        SmtpLostDuringData: the connection failed after the data was sent.
    """
    with _counted():
        if not rcpts:
            raise SubmitRefused("recipients", "no recipients")
        client = _client(cfg, cfg.timeout)
        try:
            offered = await _open(client, cfg)
            if cfg.auth == "user":
                await _login(client, cfg, username, password)
            plan = _plan(offered, mail_from, mail_params, rcpts, message)
            try:
                await client.mail(mail_from, options=plan.mail_options, encoding=plan.encoding)
            except (TimeoutError, OSError) as exc:
                raise _lost(cfg, "MAIL FROM", exc) from exc
            except aiosmtplib.SMTPResponseException as exc:
                raise _refusal_at_mail(_reply_of(exc)) from None
            results = [
                await _rcpt(client, cfg, address, options, plan.encoding)
                for (address, _), options in zip(rcpts, plan.rcpt_options, strict=True)
            ]
            refused = [r for r in results if not r.accepted]
            if refused:  # Rule 2: all or nothing
                await _quietly(client, "RSET")
                limit = next((i for i, r in enumerate(results) if _too_many(r.reply)), None)
                if limit is not None:
                    raise SubmitRefused(
                        "too-many",
                        f"the SMTP server takes at most {limit} recipients in one message",
                        reply=results[limit].reply,
                        max_recipients=limit,
                    )
                permanent = any(r.reply.code >= 500 for r in refused)
                raise SubmitRefused(
                    "recipients" if permanent else "temporary",
                    f"the SMTP server refused {len(refused)} of {len(results)} recipients",
                    refused=refused,
                )
            try:
                response = await client.data(message)
            except (TimeoutError, OSError) as exc:
                raise _lost(cfg, "DATA", exc, data_sent=True) from exc
            except aiosmtplib.SMTPResponseException as exc:
                await _quietly(client, "RSET")
                raise _refusal_at_data(_reply_of(exc)) from None
            await _quietly(client, "QUIT")
            log.info("smtp: sent %d octets to %d recipients", len(message), len(results))
            return SubmitResult(tuple(results), format_reply(response.code, response.message))
        finally:
            client.close()


@contextlib.contextmanager
def _counted() -> Iterator[None]:
    """Count a submission by its outcome (``imapjmap_smtp_submissions_total``)."""
    outcome = "cancelled"
    try:
        yield
        outcome = "sent"
    except SubmitRefused:
        outcome = "refused"
        raise
    except SmtpLostDuringData:
        outcome = "lost"  # the data went out: the server may have taken it
        raise
    except SmtpUnavailable:
        outcome = "unavailable"
        raise
    finally:
        EVENTS.smtp_submission(outcome)


def _too_many(reply: Reply) -> bool:
    """RFC 5321 §4.5.3.1.10: "452 too many recipients" (RFC 3463 X.5.3, "Too many
    recipients"); some servers answer 552 or give only the text."""
    if reply.code not in (452, 552):
        return False
    enhanced = reply.enhanced
    if enhanced is not None:
        return enhanced.endswith(".5.3")
    return "too many recipients" in reply.text.lower()


async def _rcpt(
    client: aiosmtplib.SMTP, cfg: SmtpConfig, address: str, options: list[str], encoding: str
) -> RecipientResult:
    try:
        response = await client.rcpt(address, options=options, encoding=encoding)
    except (TimeoutError, OSError) as exc:
        raise _lost(cfg, "RCPT TO", exc) from exc
    except aiosmtplib.SMTPResponseException as exc:
        return RecipientResult(address, _reply_of(exc))
    return RecipientResult(address, format_reply(response.code, response.message))


# --- the session capability ----------------------------------------------------------------

_Server = tuple[str, int, str]  # (host, port, security)
_Keywords = dict[str, list[str]]
# the server -> (monotonic time it was learnt, keywords or None for a failure)
_EHLO: dict[_Server, tuple[float, _Keywords | None]] = {}
_PROBES: dict[_Server, asyncio.Task[_Keywords | None]] = {}  # the probe out, if any


def _remember(cfg: SmtpConfig, offered: _Keywords | None) -> None:
    _EHLO[(cfg.host, cfg.port, cfg.security)] = (time.monotonic(), offered)


def forget_extensions() -> None:
    """Forget every server's EHLO keywords, for a process that starts serving anew (another
    server may now listen where a previous one did)."""
    _EHLO.clear()
    _PROBES.clear()


async def ehlo_extensions(cfg: SmtpConfig) -> dict[str, list[str]]:
    """The EHLO keywords (visible ones) of the configured server; ``{}`` when unreachable.

    Learnt once per process (Rule 5): later calls cost nothing, and calls during the probe
    await it; after a failed probe the next call more than a minute later probes again.
    """
    server = (cfg.host, cfg.port, cfg.security)
    known = _EHLO.get(server)
    if known is not None:
        at, offered = known
        if offered is not None:
            return {k: list(v) for k, v in offered.items()}
        if time.monotonic() - at < _RETRY_PROBE_AFTER:
            return {}
    loop = asyncio.get_running_loop()
    probe = _PROBES.get(server)
    if probe is None or probe.done() or probe.get_loop() is not loop:
        probe = _PROBES[server] = loop.create_task(_probe(cfg))
    # shielded: a caller that goes away (its client disconnected) leaves the probe to the rest
    offered = await asyncio.shield(probe)
    return {} if offered is None else {k: list(v) for k, v in offered.items()}


async def _probe(cfg: SmtpConfig) -> _Keywords | None:
    client = _client(cfg, min(cfg.timeout, _PROBE_TIMEOUT))
    try:
        offered = await _open(client, cfg)
        await _quietly(client, "QUIT")
    except SmtpUnavailable as exc:
        log.warning("smtp: cannot learn the server's extensions: %s", exc)
        _remember(cfg, None)
        return None
    finally:
        client.close()
    return offered
