"""ImapPool under failure injection: a fake connector hands out scripted sessions.

The pool is driven with :class:`SlowSession` stubs (what the pool touches of an
``ImapSession``: ``selected``, ``broken``, ``last_used``, ``capabilities``, ``select()``,
``noop()``, ``close()``) and a fake clock, so every rule of ``imapjmap/imap/pool.py`` is
checked without a socket: the size bound, mailbox affinity, discarding whatever died
mid-command (cancellation, timeout, BAD, lost connection), keeping a connection after a clean
tagged NO, idle expiry and probing, connector failures and shutdown.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from imapjmap.config import ImapConfig
from imapjmap.errors import (
    AuthenticationFailed,
    ImapCommandFailed,
    ImapProtocolViolation,
    ImapUnavailable,
)
from imapjmap.imap.pool import ImapPool, ImapPools
from imapjmap.upstream.profiles import choose

IDLE_TIMEOUT = 300.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclasses.dataclass(frozen=True)
class Selected:
    name: str
    readonly: bool


class SlowSession:
    """A stand-in for ImapSession with scripted delays and failures.

    Like the real session, a command that does not complete (cancelled or timed out) marks
    the session broken, and a tagged NO leaves it usable.
    """

    def __init__(self, server: FakeServer, number: int) -> None:
        self.server = server
        self.number = number
        self.selected: Selected | None = None
        self.broken = False
        self.last_used = server.clock()
        self.capabilities = frozenset({"IMAP4REV1", "CONDSTORE", f"X-CONN-{number}"})
        self.profile = choose(self.capabilities, {}, ImapConfig())
        self.commands: list[str] = []
        self.in_flight = False
        self.closed = False
        self.noop_fails = False
        self.close_gate: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<SlowSession #{self.number}>"

    async def _command(
        self, text: str, seconds: float = 0.0, gate: asyncio.Event | None = None
    ) -> None:
        assert not self.closed, f"{text} on a closed session"
        assert not self.broken, f"{text} on a broken session"
        if self.in_flight:  # what the real session does: the wire would be out of sync
            self.broken = True
            raise ImapProtocolViolation(f"{text}: a command is already in flight")
        self.commands.append(text)
        self.in_flight = True
        try:
            await asyncio.sleep(seconds)
            if gate is not None:
                await gate.wait()
        except BaseException:
            self.broken = True  # the reply never arrived: the wire state is unknown
            raise
        finally:
            self.in_flight = False
            self.last_used = self.server.clock()

    async def select(self, name: str, *, readonly: bool = False) -> None:
        self.selected = None
        await self._command(f"{'EXAMINE' if readonly else 'SELECT'} {name}")
        if name in self.server.missing_mailboxes:
            raise ImapCommandFailed("SELECT", "NONEXISTENT", "Mailbox doesn't exist")
        self.selected = Selected(name, readonly)

    async def noop(self) -> None:
        await self._command("NOOP")
        if self.noop_fails:
            self.broken = True
            raise ImapUnavailable("NOOP: connection lost")

    async def unselect(self) -> None:
        await self._command("UNSELECT", gate=self.server.unselect_gate)
        self.selected = None

    async def slow(self, seconds: float = 3600.0) -> None:
        """A command whose reply takes ``seconds``."""
        await self._command("SLOW", seconds)

    async def close(self) -> None:
        if self.close_gate is not None:
            await self.close_gate.wait()
        self.closed = True
        self.broken = True


class FakeServer:
    """The connector: counts logins, can stall them and make them fail."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sessions: list[SlowSession] = []
        self.connect_gate: asyncio.Event | None = None
        self.connect_error: BaseException | None = None
        self.missing_mailboxes: set[str] = set()
        self.unselect_gate: asyncio.Event | None = None
        self.credentials: list[tuple[str, str]] = []

    async def connect(self, cfg: ImapConfig, username: str, password: str) -> Any:
        self.credentials.append((username, password))
        if self.connect_gate is not None:
            await self.connect_gate.wait()
        if self.connect_error is not None:
            raise self.connect_error
        session = SlowSession(self, len(self.sessions) + 1)
        self.sessions.append(session)
        return session

    @property
    def open_sessions(self) -> list[SlowSession]:
        return [s for s in self.sessions if not s.closed]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> FakeServer:
    return FakeServer(clock)


def make_pool(server: FakeServer, pool_size: int = 2) -> ImapPool:
    cfg = ImapConfig(host="imap.invalid", pool_size=pool_size, idle_timeout=IDLE_TIMEOUT)
    return ImapPool(cfg, "alice", "secret", connector=server.connect, clock=server.clock)


async def settle() -> None:
    """Let every runnable task run until it blocks (or finishes)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(2):
        while not condition():
            await asyncio.sleep(0)
    assert condition(), what


class Borrower:
    """A task that borrows a session, reports it, and holds it until told to let go."""

    def __init__(
        self,
        pool: ImapPool,
        mailbox: str | None = None,
        *,
        readonly: bool = False,
        body: Callable[[Any], Awaitable[None]] | None = None,
    ) -> None:
        self.session: Any = None
        self.got = asyncio.Event()
        self.release = asyncio.Event()

        async def run() -> Any:
            async with pool.session(mailbox, readonly=readonly) as session:
                self.session = session
                self.got.set()
                if body is not None:
                    await body(session)
                await self.release.wait()
                return session

        self.task = asyncio.create_task(run())

    async def finish(self) -> Any:
        self.release.set()
        return await self.task


# --------------------------------------------------------------------------- size bound


async def test_third_borrower_waits_for_a_released_connection(server: FakeServer) -> None:
    pool = make_pool(server, pool_size=2)
    first, second = Borrower(pool), Borrower(pool)
    await wait_for(lambda: first.got.is_set() and second.got.is_set(), "two borrowers served")
    third = Borrower(pool)
    await settle()
    assert not third.got.is_set(), "a third connection was lent beyond pool_size=2"
    assert len(server.sessions) == 2
    assert "busy=2" in repr(pool)

    released = await first.finish()
    await wait_for(third.got.is_set, "the waiting borrower is served after a release")
    assert third.session is released, "the waiter must get the released connection"
    assert len(server.sessions) == 2, "no new login for the waiter"
    await second.finish()
    await third.finish()
    assert not any(s.closed for s in server.sessions)
    assert repr(pool) == "<ImapPool 'alice' idle=2 busy=0>"
    await pool.aclose()


async def test_many_concurrent_borrowers_never_exceed_the_bound(server: FakeServer) -> None:
    pool = make_pool(server, pool_size=3)
    in_use: set[int] = set()
    peak = 0

    async def work(i: int) -> None:
        nonlocal peak
        async with pool.session("INBOX" if i % 2 else "Sent") as session:
            assert id(session) not in in_use, "one connection lent to two borrowers"
            in_use.add(id(session))
            peak = max(peak, len(in_use))
            await asyncio.sleep(0.001 * (i % 3))
            in_use.discard(id(session))

    await asyncio.gather(*(work(i) for i in range(40)))
    assert peak == 3
    assert len(server.sessions) == 3, "healthy connections must be reused, not replaced"
    assert server.open_sessions == server.sessions
    await pool.aclose()


# --------------------------------------------------------------------------- mailbox affinity


async def test_connection_with_the_mailbox_selected_is_reused_without_select(
    server: FakeServer,
) -> None:
    pool = make_pool(server, pool_size=2)
    inbox, sent = Borrower(pool, "INBOX"), Borrower(pool, "Sent")
    await wait_for(lambda: inbox.got.is_set() and sent.got.is_set(), "both served")
    inbox_conn, sent_conn = await inbox.finish(), await sent.finish()
    assert inbox_conn.commands == ["SELECT INBOX"]
    assert sent_conn.commands == ["SELECT Sent"]

    # each mailbox goes back to the connection that has it selected, whatever the idle order
    for wanted, expected in (("Sent", sent_conn), ("INBOX", inbox_conn), ("Sent", sent_conn)):
        async with pool.session(wanted) as session:
            assert session is expected
    # no second SELECT; a NOOP per reuse lets the session hear of other connections' changes
    assert inbox_conn.commands == ["SELECT INBOX", "NOOP"], "no second SELECT"
    assert sent_conn.commands == ["SELECT Sent", "NOOP", "NOOP"], "no second SELECT"
    assert len(server.sessions) == 2
    await pool.aclose()


async def test_a_borrower_that_avoids_a_mailbox_leaves_its_connection_idle(
    server: FakeServer,
) -> None:
    """``avoid``: the one idle connection has INBOX selected, so a new one is made for the
    borrower; one with nothing selected or another mailbox would do."""
    pool = make_pool(server, pool_size=3)
    async with pool.session("INBOX") as keeper:
        pass
    async with pool.session(avoid="INBOX") as other:
        assert other is not keeper
        async with pool.session(prefer="INBOX") as preferred:
            assert preferred is keeper  # still idle, still with INBOX selected
    assert keeper.commands == ["SELECT INBOX"]
    async with pool.session("Sent"):
        pass
    async with pool.session(avoid="INBOX") as again:
        assert again is not keeper  # the idle one with nothing selected
    assert len(server.sessions) == 2
    await pool.aclose()


async def test_read_only_borrow_of_a_read_write_selection_examines(server: FakeServer) -> None:
    pool = make_pool(server, pool_size=1)
    async with pool.session("INBOX") as session:
        pass
    async with pool.session("INBOX", readonly=True) as again:
        assert again is session
        assert again.selected == Selected("INBOX", True)
    assert session.commands == ["SELECT INBOX", "EXAMINE INBOX"]
    await pool.aclose()


async def test_failed_select_keeps_the_connection(server: FakeServer) -> None:
    server.missing_mailboxes.add("Gone")
    pool = make_pool(server, pool_size=1)
    with pytest.raises(ImapCommandFailed) as caught:
        async with pool.session("Gone"):
            pytest.fail("the block must not run when SELECT fails")
    assert caught.value.code == "NONEXISTENT"
    async with pool.session("INBOX") as session:
        assert session is server.sessions[0]
        assert session.selected == Selected("INBOX", False)
    assert len(server.sessions) == 1
    await pool.aclose()


# --------------------------------------------------------------------------- died mid-command


async def test_cancelled_borrower_discards_its_connection_and_frees_the_slot(
    server: FakeServer,
) -> None:
    pool = make_pool(server, pool_size=1)
    stuck = Borrower(pool, "INBOX", body=lambda s: s.slow())
    await wait_for(lambda: stuck.session is not None and "SLOW" in stuck.session.commands, "slow")
    waiter = Borrower(pool)
    await settle()
    assert not waiter.got.is_set()

    stuck.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stuck.task
    await wait_for(waiter.got.is_set, "the slot of the cancelled borrower is freed")
    old = stuck.session
    assert old.broken
    await wait_for(lambda: old.closed, "the interrupted connection is closed")
    assert waiter.session is not old, "a connection that died mid-command was lent again"
    assert len(server.sessions) == 2
    await waiter.finish()
    await pool.aclose()


async def test_timed_out_borrower_discards_its_connection_and_frees_the_slot(
    server: FakeServer,
) -> None:
    pool = make_pool(server, pool_size=1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05), pool.session("INBOX") as session:
            await session.slow()
    old = server.sessions[0]
    await wait_for(lambda: old.closed, "the timed-out connection is closed")
    async with asyncio.timeout(1), pool.session("INBOX") as fresh:
        assert fresh is not old
        assert fresh.commands == ["SELECT INBOX"]
    assert len(server.open_sessions) == 1
    await pool.aclose()


async def test_cancelled_while_connecting_frees_the_slot(server: FakeServer) -> None:
    pool = make_pool(server, pool_size=1)
    server.connect_gate = asyncio.Event()
    connecting = Borrower(pool)
    await wait_for(lambda: len(server.credentials) == 1, "login started")
    connecting.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await connecting.task
    server.connect_gate.set()
    async with asyncio.timeout(1), pool.session() as session:
        assert session is server.sessions[0]
    await pool.aclose()


async def test_timed_out_waiter_does_not_leak_the_slot(server: FakeServer) -> None:
    pool = make_pool(server, pool_size=1)
    holder = Borrower(pool, "INBOX")
    await wait_for(holder.got.is_set, "holder served")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.02), pool.session("INBOX"):
            pytest.fail("lent beyond pool_size=1")
    held = await holder.finish()
    assert not held.closed, "the waiter's timeout must not cost the holder's connection"
    async with asyncio.timeout(1), pool.session("INBOX") as session:
        assert session is held
    assert held.commands == ["SELECT INBOX", "NOOP"]
    await pool.aclose()


@pytest.mark.parametrize(
    "error",
    [
        ImapUnavailable("FETCH: connection lost"),
        ImapProtocolViolation("FETCH: BAD unexpected"),
        RuntimeError("a bug in the caller"),
    ],
    ids=["unavailable", "bad", "bug"],
)
async def test_errors_other_than_a_tagged_no_discard_the_connection(
    server: FakeServer, error: Exception
) -> None:
    pool = make_pool(server, pool_size=1)
    with pytest.raises(type(error)):
        async with pool.session("INBOX"):
            raise error
    old = server.sessions[0]
    await wait_for(lambda: old.closed, "discarded connection closed")
    async with pool.session("INBOX") as session:
        assert session is not old
    await pool.aclose()


async def test_tagged_no_inside_the_block_returns_the_connection(server: FakeServer) -> None:
    pool = make_pool(server, pool_size=1)
    with pytest.raises(ImapCommandFailed):
        async with pool.session("INBOX"):
            raise ImapCommandFailed("UID STORE", "NOPERM", "no write access")
    async with pool.session("INBOX") as session:
        assert session is server.sessions[0]
    assert server.sessions[0].commands == ["SELECT INBOX", "NOOP"], "kept its selection"
    assert not server.sessions[0].closed
    await pool.aclose()


async def test_broken_session_is_never_lent_again(server: FakeServer) -> None:
    pool = make_pool(server, pool_size=2)
    # the borrower caught the failure itself and left the block normally
    async with pool.session() as first:
        first.broken = True
    await wait_for(lambda: first.closed, "the broken connection is closed")
    # one that breaks while idle (the server hung up) is dropped at the next borrow
    async with pool.session() as second:
        assert second is not first
    second.broken = True
    async with pool.session() as third:
        assert third is not second
    await wait_for(lambda: second.closed, "the connection that broke while idle is closed")
    assert server.open_sessions == [third]
    await pool.aclose()


# --------------------------------------------------------------------------- idle connections


async def test_expired_connections_are_closed_and_replaced(
    server: FakeServer, clock: FakeClock
) -> None:
    pool = make_pool(server, pool_size=2)
    a, b = Borrower(pool), Borrower(pool)
    await wait_for(lambda: a.got.is_set() and b.got.is_set(), "served")
    old = [await a.finish(), await b.finish()]
    clock.advance(IDLE_TIMEOUT + 1)
    async with pool.session() as session:
        assert session not in old
    await wait_for(lambda: all(s.closed for s in old), "both expired connections closed")
    assert not any("NOOP" in s.commands for s in old), "expired ones are not probed"
    assert server.open_sessions == [session]
    await pool.aclose()


async def test_closing_expired_connections_neither_delays_nor_leaks(
    server: FakeServer, clock: FakeClock
) -> None:
    pool = make_pool(server, pool_size=2)
    a, b = Borrower(pool), Borrower(pool)
    await wait_for(lambda: a.got.is_set() and b.got.is_set(), "served")
    old = [await a.finish(), await b.finish()]
    gate = asyncio.Event()
    for session in old:
        session.close_gate = gate  # a LOGOUT that hangs
    clock.advance(IDLE_TIMEOUT + 1)
    borrower = Borrower(pool)
    await wait_for(borrower.got.is_set, "a borrower does not wait for old LOGOUTs")
    borrower.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await borrower.task
    gate.set()
    await wait_for(lambda: all(s.closed for s in old), "every expired connection is closed")
    await pool.aclose()


async def test_a_connection_idle_for_a_while_is_probed(
    server: FakeServer, clock: FakeClock
) -> None:
    pool = make_pool(server, pool_size=1)
    async with pool.session() as first:
        pass
    clock.advance(60)
    async with pool.session() as again:
        assert again is first
    assert first.commands == ["NOOP"]
    async with pool.session() as quick:
        assert quick is first
    assert first.commands == ["NOOP"], "a connection used a moment ago is not probed"

    clock.advance(60)
    first.noop_fails = True
    async with pool.session("INBOX") as replaced:
        assert replaced is not first
        assert replaced.commands == ["SELECT INBOX"]
    assert first.closed
    assert server.open_sessions == [replaced]
    await pool.aclose()


# --------------------------------------------------------------------------- release_mailbox


async def test_release_mailbox_unselects_idle_connections(server: FakeServer) -> None:
    pool = make_pool(server, pool_size=2)
    old, other = Borrower(pool, "Old"), Borrower(pool, "Other")
    await wait_for(lambda: old.got.is_set() and other.got.is_set(), "served")
    old_conn, other_conn = await old.finish(), await other.finish()
    await pool.release_mailbox("Old")
    assert old_conn.commands == ["SELECT Old", "UNSELECT"]
    assert old_conn.selected is None and not old_conn.closed
    assert other_conn.commands == ["SELECT Other"], "other selections are left alone"
    assert repr(pool) == "<ImapPool 'alice' idle=2 busy=0>"
    await pool.aclose()


async def test_release_mailbox_does_not_lend_a_connection_mid_unselect(
    server: FakeServer,
) -> None:
    pool = make_pool(server, pool_size=2)
    async with pool.session("Old") as old:
        pass
    server.unselect_gate = asyncio.Event()
    releasing = asyncio.create_task(pool.release_mailbox("Old"))
    await wait_for(lambda: "UNSELECT" in old.commands, "UNSELECT sent")
    async with asyncio.timeout(1), pool.session() as borrowed:
        assert borrowed is not old, "lent while its UNSELECT is in flight"
        await borrowed.noop()
    server.unselect_gate.set()
    await releasing
    assert not old.broken and old.selected is None
    assert repr(pool) == "<ImapPool 'alice' idle=2 busy=0>"
    await pool.aclose()


async def test_release_mailbox_keeps_the_bound(server: FakeServer) -> None:
    pool = make_pool(server, pool_size=1)
    async with pool.session("Old") as old:
        pass
    server.unselect_gate = asyncio.Event()
    releasing = asyncio.create_task(pool.release_mailbox("Old"))
    await wait_for(lambda: "UNSELECT" in old.commands, "UNSELECT sent")
    async with pool.session() as borrowed:  # the slot is free: a second login is allowed
        pass
    server.unselect_gate.set()
    await releasing
    await wait_for(lambda: len(server.open_sessions) == 1, "back to pool_size connections")
    assert repr(pool) == "<ImapPool 'alice' idle=1 busy=0>"
    async with pool.session() as again:
        assert again in (old, borrowed)
    await pool.aclose()


# --------------------------------------------------------------------------- connector failures


@pytest.mark.parametrize(
    "error",
    [ImapUnavailable("cannot connect"), AuthenticationFailed("password changed upstream")],
    ids=["unavailable", "auth"],
)
async def test_failing_connector_raises_and_frees_the_slot(
    server: FakeServer, error: Exception
) -> None:
    pool = make_pool(server, pool_size=1)
    server.connect_error = error
    for _ in range(3):  # a leaked slot would make the second attempt hang
        with pytest.raises(type(error)):
            async with asyncio.timeout(1), pool.session():
                pytest.fail("no session without a connection")
    server.connect_error = None
    async with asyncio.timeout(1), pool.session() as session:
        assert session is server.sessions[0]
    assert server.credentials == [("alice", "secret")] * 4
    await pool.aclose()


async def test_refused_credentials_are_flagged_until_a_fresh_login_is_adopted(
    server: FakeServer,
) -> None:
    """Rule 5: the front end asks the client again instead of trying them upstream."""
    pool = make_pool(server, pool_size=2)
    server.connect_error = ImapUnavailable("cannot connect")
    with pytest.raises(ImapUnavailable):
        async with asyncio.timeout(1), pool.session():
            pass
    assert not pool.refused  # an outage says nothing about the password
    server.connect_error = AuthenticationFailed("password changed upstream")
    with pytest.raises(AuthenticationFailed):
        await pool.open_dedicated()
    assert pool.refused
    server.connect_error = None
    async with asyncio.timeout(1), pool.session():
        pass
    assert pool.refused  # a connection that worked is no verified login of the client
    pool.adopt(await server.connect(ImapConfig(), "alice", "secret"))
    assert not pool.refused
    await pool.aclose()


async def test_capabilities_come_from_the_latest_connection(server: FakeServer) -> None:
    pool = make_pool(server, pool_size=1)
    assert pool.capabilities == frozenset()
    assert pool.profile == choose(frozenset(), {}, ImapConfig())  # the configuration's alone
    async with pool.session() as session:
        pass
    assert "X-CONN-1" in pool.capabilities
    assert pool.profile is session.profile
    await pool.aclose()


# --------------------------------------------------------------------------- adopt and shutdown


async def test_adopted_login_is_lent_first(server: FakeServer) -> None:
    pool = make_pool(server, pool_size=2)
    adopted = await server.connect(ImapConfig(), "alice", "secret")
    pool.adopt(adopted)
    async with pool.session() as session:
        assert session is adopted
    assert len(server.sessions) == 1
    await pool.aclose()


async def test_adopt_does_not_grow_the_pool_beyond_its_size(server: FakeServer) -> None:
    pool = make_pool(server, pool_size=1)
    holder = Borrower(pool)
    await wait_for(holder.got.is_set, "served")
    extra = await server.connect(ImapConfig(), "alice", "secret")
    pool.adopt(extra)  # a re-verified login while the only slot is lent out
    await holder.finish()
    await wait_for(lambda: len(server.open_sessions) == 1, "one connection left")
    assert repr(pool) == "<ImapPool 'alice' idle=1 busy=0>"
    await pool.aclose()


async def test_aclose_closes_idle_and_returned_connections(server: FakeServer) -> None:
    pool = make_pool(server, pool_size=3)
    held = Borrower(pool)
    idle = Borrower(pool)
    await wait_for(lambda: held.got.is_set() and idle.got.is_set(), "served")
    idle_conn = await idle.finish()
    await pool.aclose()
    assert idle_conn.closed
    assert not held.session.closed, "a lent connection is not pulled from under its user"
    await held.finish()
    await wait_for(lambda: held.session.closed, "closed when given back")
    with pytest.raises(ImapUnavailable):
        async with pool.session():
            pytest.fail("a closed pool lends nothing")
    assert server.open_sessions == []


async def test_aclose_fails_waiting_borrowers_without_logging_in(server: FakeServer) -> None:
    pool = make_pool(server, pool_size=1)
    holder = Borrower(pool)
    await wait_for(holder.got.is_set, "served")
    waiter = Borrower(pool)
    await settle()
    await pool.aclose()
    waiter.release.set()  # should it be served after all, do not hang
    await holder.finish()
    with pytest.raises(ImapUnavailable):
        async with asyncio.timeout(2):
            await waiter.task
    assert len(server.sessions) == 1, "no login after aclose()"
    await wait_for(lambda: server.open_sessions == [], "everything closed")


async def test_pools_replace_the_pool_when_the_password_changes(server: FakeServer) -> None:
    pools = ImapPools(ImapConfig(host="imap.invalid", pool_size=2), connector=server.connect)
    pool = await pools.ensure("A1", "alice", "old")
    assert await pools.ensure("A1", "alice", "old") is pool
    async with pool.session():
        pass
    replaced = await pools.ensure("A1", "alice", "new")
    assert replaced is not pool
    assert pools.get("A1") is replaced
    assert server.sessions[0].closed, "the old password's connections are closed"
    async with replaced.session():
        pass
    assert server.credentials[-1] == ("alice", "new")
    await pools.aclose()
    assert server.open_sessions == []
