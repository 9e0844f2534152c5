"""A real third-party webmail, in a real headless browser, against the proxy.

The webmail is jmapio's jmap-demo-webmail (MIT, prebuilt static files), kept outside the
repository in ``../shared/clients/jmap-demo-webmail`` next to the checkout (or where
``IMAPJMAP_WEBMAIL_DIR`` says).  It is served on a loopback origin of its own, so every call
it makes to the proxy is a cross-origin request (CORS preflights included), and it listens
for pushes with the browser's native ``EventSource``, as it does against any JMAP server.

Debian's ``chromium`` runs it, driven by Playwright (``executable_path``: Playwright's own
browser download is not used).  A user's steps are taken through the page itself: the login
dialog, clicks on the mailbox list, the message list, the toolbar and the star.  A second
plain IMAP connection checks every write, and APPENDs the message that must arrive by push.
Every page error, and every console error not caused by the offline web fonts and avatars
the webmail loads from the internet, fails the test.  A screenshot of each step is kept in
the test's temporary directory (``screenshots/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.message
import email.policy
import email.utils
import os
import re
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from devservers.samplemail import make_pdf
from imapjmap.config import ServerConfig
from imapjmap.http.app import make_app
from tests.conftest import ImapUser
from tests.integration.clusterkit import behind_nginx
from tests.integration.conftest import proxy_config

pytestmark = pytest.mark.dovecot

WEBMAIL_ENV = "IMAPJMAP_WEBMAIL_DIR"
WEBMAIL = Path("shared") / "clients" / "jmap-demo-webmail"
CHROMIUM_ENV = "IMAPJMAP_CHROMIUM"
STEP_TIMEOUT_MS = 15_000
# Enough for a push to travel: the upstream's NOTIFY, the proxy's sync, the StateChange, the
# webmail's Email/changes and Email/get.
PUSH_TIMEOUT_MS = 15_000


# --- where the webmail and the browser are -------------------------------------------------


def _checkouts(root: Path) -> list[Path]:
    """This checkout, and the main checkout when this one is a linked git worktree (whose
    ``.git`` is a file naming the main repository's ``.git/worktrees/<name>``)."""
    out = [root]
    dot_git = root / ".git"
    if dot_git.is_file():
        line = dot_git.read_text().strip()
        if line.startswith("gitdir:"):
            gitdir = (root / line.removeprefix("gitdir:").strip()).resolve()
            common = gitdir / "commondir"
            if common.is_file():
                out.append((gitdir / common.read_text().strip()).resolve().parent)
    return out


def webmail_dir() -> Path | None:
    override = os.environ.get(WEBMAIL_ENV)
    if override:
        return Path(override)
    root = Path(__file__).resolve().parents[2]
    for checkout in _checkouts(root):
        candidate = checkout.parent / WEBMAIL
        if candidate.is_dir():
            return candidate
    return None


def chromium_path() -> str:
    found = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium")
    assert found, "Debian's chromium is not installed (scripts/test installs it)"
    return found


WEBMAIL_DIR = webmail_dir()
if WEBMAIL_DIR is None:
    pytest.skip(
        f"the third-party webmail is absent: no ../{WEBMAIL} beside the checkout"
        f" and {WEBMAIL_ENV} is not set",
        allow_module_level=True,
    )

from playwright.async_api import async_playwright, expect  # noqa: E402  (after the skip)

expect.set_options(timeout=STEP_TIMEOUT_MS)


# --- the servers -----------------------------------------------------------------------------


def _free_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serving(app: web.Application, sock: socket.socket) -> AsyncIterator[None]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        yield
    finally:
        await runner.cleanup()


def static_app(folder: Path) -> web.Application:
    """The webmail's files; ``/`` is its page (the app reads any other path as a message id)."""
    folder = folder.resolve()

    async def serve(request: web.Request) -> web.StreamResponse:
        name = request.match_info["path"] or "index.html"
        path = (folder / name).resolve()
        if not path.is_relative_to(folder) or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/{path:.*}", serve)
    return app


# --- the mail ----------------------------------------------------------------------------------


def _message(subject: str, sender: str) -> email.message.EmailMessage:
    msg = email.message.EmailMessage(policy=email.policy.SMTP)
    msg["From"] = sender
    msg["To"] = "Webmail User <user@example.test>"
    msg["Subject"] = subject
    msg["Date"] = email.utils.format_datetime(email.utils.localtime())
    msg["Message-ID"] = email.utils.make_msgid(domain="example.test")
    return msg


@dataclasses.dataclass(frozen=True)
class Seeded:
    subject: str
    preview: str  # the start of its text, which the message list shows
    marker: str  # words only this message's rendered body holds
    raw: bytes


KINDS = ("text/plain", "multipart/alternative", "with an attachment")  # seed_messages' order


def seed_messages() -> list[Seeded]:
    """A text/plain, a multipart/alternative and a multipart/mixed with a PDF attached."""
    plain = _message("Plain words", "Alice Plain <alice@example.test>")
    plain.set_content("Only plain text here: the marmalade sandwich.\n")

    alternative = _message("Two ways to read", "Bob Alt <bob@example.test>")
    alternative.set_content("The plain side of the alternative.\n")
    alternative.add_alternative(
        "<html><body><p>The <b>rich side</b> of the lighthouse keeper.</p></body></html>",
        subtype="html",
    )

    attached = _message("Quarterly report attached", "Carol Files <carol@example.test>")
    attached.set_content("The report is attached; see page two about the walrus.\n")
    attached.add_attachment(
        make_pdf("Quarterly report", ["Page one", "Page two"]),
        maintype="application",
        subtype="pdf",
        filename="report.pdf",
    )
    return [
        Seeded("Plain words", "Only plain text", "marmalade sandwich", plain.as_bytes()),
        Seeded(
            "Two ways to read",
            "The plain side",
            "rich side of the lighthouse keeper",
            alternative.as_bytes(),
        ),
        Seeded(
            "Quarterly report attached",
            "The report is attached",
            "about the walrus",
            attached.as_bytes(),
        ),
    ]


def append(user: ImapUser, mailbox: str, raw: bytes, flags: str | None = None) -> None:
    client = user.connect()
    try:
        typ, data = client.append(mailbox, flags, None, raw)
        assert typ == "OK", data
    finally:
        client.logout()


def flags_of(user: ImapUser, mailbox: str, subject: str) -> set[str] | None:
    """The flags of the message with ``subject`` in ``mailbox`` (None: it is not there)."""
    client = user.connect()
    try:
        typ, data = client.select(mailbox, readonly=True)
        assert typ == "OK", data
        typ, data = client.uid("SEARCH", "SUBJECT", f'"{subject}"')
        assert typ == "OK", data
        uids = data[0].split() if data and data[0] else []
        if not uids:
            return None
        assert len(uids) == 1, uids
        typ, data = client.uid("FETCH", uids[0].decode(), "(FLAGS)")
        assert typ == "OK", data
        found = re.search(rb"FLAGS \(([^)]*)\)", data[0] if isinstance(data[0], bytes) else b"")
        assert found is not None, data
        return set(found.group(1).decode().split())
    finally:
        client.logout()


async def imap_eventually(
    check: Callable[[], bool], what: str, timeout: float = STEP_TIMEOUT_MS / 1000
) -> None:
    """Poll the IMAP oracle until ``check`` holds: the webmail writes in the background."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"IMAP never showed: {what}"
        await asyncio.sleep(0.2)


# --- the browser ---------------------------------------------------------------------------


@dataclasses.dataclass
class Console:
    """What the page said: page errors and console messages, and what counts as a failure."""

    origins: tuple[str, ...]  # ours: the webmail's and the proxy's
    page_errors: list[str] = dataclasses.field(default_factory=list)
    messages: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)

    def on_console(self, message: Any) -> None:
        url = (message.location or {}).get("url", "")
        line = f"{message.type}: {message.text} ({url})"
        self.messages.append(line)
        if message.type == "error" and not self._offline_resource(message.text, url):
            self.errors.append(line)

    def _offline_resource(self, text: str, url: str) -> bool:
        """A font or avatar from the internet that could not load (the test runs offline)."""
        return text.startswith("Failed to load resource") and not url.startswith(self.origins)

    def on_page_error(self, error: Any) -> None:
        self.page_errors.append(str(error))

    def check(self) -> None:
        assert not self.page_errors, "page errors:\n" + "\n".join(self.page_errors)
        assert not self.errors, "console errors:\n" + "\n".join(self.errors)


@pytest.fixture
async def webmail() -> AsyncIterator[str]:
    folder = WEBMAIL_DIR
    assert folder is not None
    assert (folder / "index.html").is_file(), f"{folder} holds no webmail"
    sock = _free_socket()
    port = sock.getsockname()[1]
    async with serving(static_app(folder), sock):
        yield f"http://127.0.0.1:{port}/"


@pytest.fixture
async def proxy_url(imap_user: ImapUser, tmp_path: Path) -> AsyncIterator[str]:
    sock = _free_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = ServerConfig(listen=base.removeprefix("http://"), base_url=base)
    cfg = dataclasses.replace(proxy_config(imap_user, tmp_path), server=server)
    async with serving(make_app(cfg), sock):
        yield base


@dataclasses.dataclass
class Webmail:
    """The webmail's page, logged in to the proxy as ``user``, with the mail of
    :func:`seed_messages` in the INBOX."""

    page: Any
    console: Console
    user: ImapUser
    seeded: list[Seeded]
    shots: Path
    count: int = 0

    @property
    def items(self) -> Any:
        return self.page.locator(".v-MailboxItem")

    def item(self, subject: str) -> Any:
        return self.items.filter(has_text=subject)

    async def shot(self, name: str) -> None:
        """A screenshot of this step, and no error so far."""
        self.count += 1
        await self.page.screenshot(path=str(self.shots / f"{self.count:02d}-{name}.png"))
        self.console.check()

    async def open(self, subject: str) -> None:
        await self.item(subject).click()
        await expect(self.page.locator(".v-Thread-title")).to_have_text(subject)


# Overture's run loop catches what its queued functions throw and hands it to
# O.RunLoop.didError, which only console.log()s it: route it to console.error so that an
# exception inside the webmail fails the test as an uncaught one (a page error) does.
_REPORT_RUN_LOOP_ERRORS = """() => {
    const original = O.RunLoop.didError;
    O.RunLoop.didError = function (error) {
        console.error(`O.RunLoop.didError: ${error.name}: ${error.message}\\n${error.stack}`);
        return original.call(this, error);
    };
}"""


@pytest.fixture
async def logged_in(
    webmail: str, proxy_url: str, imap_user: ImapUser, tmp_path: Path
) -> AsyncIterator[Webmail]:
    async with browsing(webmail, proxy_url, imap_user, tmp_path) as mail:
        yield mail  # every test ends with a screenshot, which checks the console


@contextlib.asynccontextmanager
async def browsing(
    webmail: str, proxy_url: str, user: ImapUser, tmp_path: Path, *, private_ca: bool = False
) -> AsyncIterator[Webmail]:
    """The webmail in a new browser, logged in to the proxy at ``proxy_url`` as ``user``
    once :func:`seed_messages` are in the INBOX (``private_ca``: the proxy's certificate
    is from a CA the browser does not know)."""
    seeded = seed_messages()
    for message in seeded:
        await asyncio.to_thread(append, user, "INBOX", message.raw)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    console = Console(origins=(webmail.rstrip("/"), proxy_url))
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path(), args=args)
        try:
            context = await browser.new_context(
                viewport={"width": 1400, "height": 900}, ignore_https_errors=private_ca
            )

            async def offline(route: Any) -> None:
                await route.abort()  # fonts and avatars: no waiting for the internet

            await context.route(lambda url: not url.startswith(console.origins), offline)
            page = await context.new_page()
            page.set_default_timeout(STEP_TIMEOUT_MS)
            page.on("console", console.on_console)
            page.on("pageerror", console.on_page_error)
            mail = Webmail(page, console, user, seeded, shots)
            await log_in(mail, webmail, f"{proxy_url}/.well-known/jmap")
            yield mail
        finally:
            # pytest shows this with a failure: what the webmail said before it
            print("browser console:", *console.messages, *console.page_errors, sep="\n  ")
            print("screenshots:", shots)
            await browser.close()


async def log_in(mail: Webmail, url: str, session_url: str) -> None:
    page = mail.page
    await page.goto(url)
    await page.evaluate(_REPORT_RUN_LOOP_ERRORS)
    login = page.locator(".v-Login-modal")
    inputs = login.locator("input")
    await expect(inputs).to_have_count(3)
    await inputs.nth(0).fill(session_url)
    await inputs.nth(1).fill(mail.user.username)
    await inputs.nth(2).fill(mail.user.password)
    await mail.shot("login")
    await login.get_by_text("Log in").click()
    await expect(login).to_have_count(0)
    await expect(mail.items).to_have_count(len(mail.seeded))


def has_flag(user: ImapUser, subject: str, flag: str, expected: bool) -> Callable[[], bool]:
    def check() -> bool:
        return (flag in (flags_of(user, "INBOX", subject) or set())) == expected

    return check


# --- what a user does, each step checked in the page and over IMAP --------------------------


def inbox_source(mail: Webmail) -> Any:
    return mail.page.locator(".v-MailboxSource").filter(has_text=re.compile(r"^Inbox", re.I))


async def shows_mailboxes_and_the_list(mail: Webmail) -> None:
    page = mail.page
    sources = page.locator(".v-MailboxSource")
    await expect(inbox_source(mail)).to_have_count(1)
    unread = inbox_source(mail).locator(".v-MailboxSource-count")
    await expect(unread).to_have_text(str(len(mail.seeded)))
    for name in ("Drafts", "Sent", "Archive", "Junk", "Trash"):
        await expect(sources.filter(has_text=name)).to_have_count(1)
    await expect(page.locator(".v-MailboxTitle-total").first).to_have_text(str(len(mail.seeded)))
    for message in mail.seeded:
        item = mail.item(message.subject)
        await expect(item).to_have_class(re.compile("is-unread"))
        await expect(item.locator(".v-MailboxItem-preview")).to_contain_text(message.preview)
    await mail.shot("mailboxes-and-list")


async def renders(mail: Webmail, kind: str) -> None:
    message = mail.seeded[KINDS.index(kind)]
    await mail.open(message.subject)
    content = mail.page.locator(".app-content")
    await expect(content.locator(".v-Message-body")).to_contain_text(message.marker)
    await expect(content).not_to_contain_text("Loading…")
    await mail.shot("open-" + re.sub(r"\W+", "-", kind))


async def marks_flags_and_archives(mail: Webmail) -> None:
    """On the first seeded message, which is unread in the open INBOX."""
    page, user = mail.page, mail.user
    plain = mail.seeded[0]
    item = mail.item(plain.subject)
    unread = inbox_source(mail).locator(".v-MailboxSource-count")
    unread_before = int(await unread.inner_text())
    listed_before = await mail.items.count()

    # opening an unread message marks it read after a second
    await mail.open(plain.subject)
    await imap_eventually(has_flag(user, plain.subject, "\\Seen", True), "\\Seen on opening")
    toolbar = page.locator(".v-Toolbar")
    await toolbar.get_by_text("Mark as Unread").click()
    await expect(item).to_have_class(re.compile("is-unread"))
    await imap_eventually(
        has_flag(user, plain.subject, "\\Seen", False), "\\Seen removed by Mark as Unread"
    )
    await mail.shot("marked-unread")
    await toolbar.get_by_text("Mark as Read").click()
    await expect(item).not_to_have_class(re.compile("is-unread"))
    await expect(unread).to_have_text(str(unread_before - 1))
    await imap_eventually(has_flag(user, plain.subject, "\\Seen", True), "\\Seen by Mark as Read")

    # the star in the list flags it, and unflags it
    star = item.locator(".v-MailboxItem-flagButton")
    await star.click()
    await expect(item).to_have_class(re.compile("is-flagged"))
    await imap_eventually(has_flag(user, plain.subject, "\\Flagged", True), "\\Flagged by star")
    await mail.shot("flagged")
    await star.click()
    await expect(item).not_to_have_class(re.compile("is-flagged"))
    await imap_eventually(
        has_flag(user, plain.subject, "\\Flagged", False), "\\Flagged removed by the star"
    )

    # Archive moves it out of the inbox into the archive mailbox
    await toolbar.get_by_text("Archive").click()
    await expect(item).to_have_count(0)
    await expect(mail.items).to_have_count(listed_before - 1)

    def archived() -> bool:
        return (
            flags_of(user, "INBOX", plain.subject) is None
            and flags_of(user, "Archive", plain.subject) is not None
        )

    await imap_eventually(archived, "the archived message in Archive and not in INBOX")
    await page.locator(".v-MailboxSource").filter(has_text="Archive").click()
    await expect(mail.items).to_have_count(1)
    await expect(item).to_have_count(1)
    await mail.shot("archived")


async def shows_a_message_appended_over_imap(mail: Webmail) -> None:
    """In the open INBOX, holding only the seeded messages, all unread."""
    await mail.shot("listening")  # the stream opened at login without an error
    pushed = _message("Arrived by push", "Dave Push <dave@example.test>")
    pushed.set_content("Pushed while the list was open.\n")
    await asyncio.to_thread(append, mail.user, "INBOX", pushed.as_bytes())
    item = mail.item("Arrived by push")
    await expect(item).to_have_count(1, timeout=PUSH_TIMEOUT_MS)
    await expect(mail.items).to_have_count(len(mail.seeded) + 1)
    # the newest, so at the top once the list's slide-in animation has ended
    await expect(item).to_have_attribute("style", re.compile(r"top: 0px;.*transform: none"))
    await expect(item).to_have_class(re.compile("is-unread"))
    unread = inbox_source(mail).locator(".v-MailboxSource-count")
    await expect(unread).to_have_text(str(len(mail.seeded) + 1))
    await mail.shot("pushed")


async def test_webmail_shows_mailboxes_with_counts_and_the_message_list(
    logged_in: Webmail,
) -> None:
    """Mailbox/get with unread counts (RFC 8621 §2) and Email/query + Email/get in the list."""
    await shows_mailboxes_and_the_list(logged_in)


@pytest.mark.parametrize("kind", KINDS)
async def test_webmail_renders_a_message(logged_in: Webmail, kind: str) -> None:
    """Email/get with bodyStructure, bodyValues, textBody/htmlBody (RFC 8621 §4.1.4): the
    webmail walks bodyStructure.subParts, so a multipart message renders only when a
    multipart part carries them whatever bodyProperties asked for."""
    await renders(logged_in, kind)


async def test_webmail_marks_read_and_unread_flags_and_archives(logged_in: Webmail) -> None:
    """Email/set keywords and mailboxIds from the webmail, each checked over IMAP."""
    await marks_flags_and_archives(logged_in)


async def test_webmail_shows_a_message_appended_over_imap_without_reload(
    logged_in: Webmail,
) -> None:
    """EventSource push (RFC 8620 §7.3) through the browser's native EventSource, which
    cannot send an Authorization header: a message another client APPENDs appears in the
    open list."""
    await shows_a_message_appended_over_imap(logged_in)


async def test_webmail_through_two_instances_behind_nginx_on_a_postgresql_cache(
    webmail: str, imap_user: ImapUser, tmp_path: Path, cluster_url: str
) -> None:
    """The same steps against two instances on one PostgreSQL cache behind the nginx
    recipe (round robin, so consecutive requests land on both): the list, a push through
    nginx's EventSource (the push URL one instance signed, opened wherever nginx sends it;
    CORE-PUSH-01), the writes, and each kind of message rendered.

    Nothing logs the user in beforehand: an EventSource that nginx sends to the instance
    that has not seen the login yet opens there all the same (the other instance vouches
    for its push token: imapjmap.http.push_token Rule 6)."""
    api = "POST /jmap/api/ 200"
    async with behind_nginx(imap_user, tmp_path, cluster_url, cache_on_postgresql=True) as (
        cluster,
        front,
    ):
        async with browsing(webmail, front.url, imap_user, tmp_path, private_ca=True) as mail:
            await shows_mailboxes_and_the_list(mail)
            await shows_a_message_appended_over_imap(mail)
            await marks_flags_and_archives(mail)
            await inbox_source(mail).click()
            for kind in KINDS[1:]:  # the first is archived
                await renders(mail, kind)
        served = [it.log().count(api) for it in cluster]
        assert min(served) >= 5, served  # both instances answered the webmail

        def streamed() -> bool:  # nginx logs a request when it ends: the browser is closed
            return 'GET /jmap/eventsource/ HTTP/1.1" 200' in front.access_log.read_text()

        await imap_eventually(streamed, "the EventSource in nginx's access log", timeout=5)
