"""A bounded Hypothesis fuzz of the JMAP API against the real Dovecot and SMTP sink.

Requests of every shape (broken envelopes, odd content types and headers, deep JSON, result
references and creation ids) and method arguments for every advertised method, sensible or
junk, go to the real proxy app.  Properties (RFC 8620 §3.6, CORE-ERR-*, CORE-REQ-03):

- the answer is JSON: a Response object whose ``methodResponses`` answer the calls in order,
  each ``[name, object, callId]``, errors with a type from the RFCs' lists; or a problem
  document with a 4xx status.  Never a 500, never ``serverFail``;
- nothing is logged at ERROR and no traceback at all;
- a request that only reads, or whose writes were all refused, changes nothing upstream (a
  plain ``imaplib`` connection compares mailboxes, subscriptions, UIDs and flags).

The number of examples is fixed (about 200 in all, well under a minute); under CI the examples
are derandomized, so a failure there reproduces.  ``IMAPJMAP_FUZZ_EXAMPLES`` multiplies them for
a longer run by hand.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import imaplib
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from devservers.smtp import SmtpSink
from imapjmap.config import IdentityConfig, ImapConfig, SmtpConfig, SubmissionConfig
from imapjmap.http import views
from imapjmap.http.connections import Guard, GuardedRunner
from imapjmap.imap import session as imap_session
from tests.conftest import SeededUser
from tests.integration import fuzzkit as fk
from tests.integration.conftest import CORE, Jmap, proxy_config
from tests.integration.instances import ProxyClient

pytestmark = pytest.mark.dovecot

_SCALE = int(os.environ.get("IMAPJMAP_FUZZ_EXAMPLES", "1"))


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples * _SCALE,
        deadline=None,
        derandomize=bool(os.environ.get("CI")),
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


def _event(name: str) -> None:
    """Count outcomes for ``--hypothesis-show-statistics`` (how deep the fuzz gets)."""
    if currently_in_test_context():
        event(name)


class Fuzz:
    """The proxy under test, its account, and the oracle's last view of the account."""

    def __init__(
        self, jmap: Jmap, pools: fk.Pools, oracle: imaplib.IMAP4, caplog: pytest.LogCaptureFixture
    ) -> None:
        self.jmap = jmap
        self.pools = pools
        self.oracle = oracle
        self.caplog = caplog
        self.seen = fk.snapshot(oracle)

    def __repr__(self) -> str:  # shown with every falsifying example: keep it short
        return f"Fuzz({self.jmap.username})"

    async def send(self, raw: bytes, headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
        """POST ``raw`` to the API; (status, content type, decoded body), which must be JSON."""
        sent = {**self.jmap.auth(), "Content-Type": "application/json", **(headers or {})}
        resp = await self.jmap.http.post("/jmap/api/", data=raw, headers=sent)
        text = await resp.read()
        try:
            body = json.loads(text)
        except ValueError:
            raise AssertionError(
                f"{resp.status}, a body that is not JSON: {text[:300]!r}"
            ) from None
        return resp.status, resp.content_type, body

    def check(self, status: int, content_type: str, body: Any, sent: Any) -> None:
        """The properties of the module docstring, for one request and its answer."""
        calls: list[Any] = []
        if status == 200:
            assert isinstance(sent, dict), (sent, body)
            calls = sent["methodCalls"]
            fk.check_response(body, calls, sent.get("createdIds") is not None)
            for name, args, _call_id in body["methodResponses"]:
                _event(f"{name} {args['type']}" if name == "error" else f"{name} ok")
        else:
            fk.check_problem(status, content_type, body)
            _event(f"HTTP {status} {body['type']}")
        self.check_log()
        now = fk.snapshot(self.oracle)
        if not fk.wrote_upstream(calls, body):
            assert now == self.seen, "a request that wrote nothing changed the account upstream"
        self.seen = now

    def check_log(self) -> None:
        bad = [
            r for r in self.caplog.records if r.levelno >= logging.ERROR or r.exc_info is not None
        ]
        self.caplog.clear()
        assert not bad, "\n".join(logging.Formatter().format(r) for r in bad)


class GuardedTestServer(TestServer):
    """The app behind the connection handling ``serve`` uses (malformed HTTP included)."""

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        server = self.app[views.CONFIG].server
        guard = Guard(server.header_timeout, server.body_timeout)
        return GuardedRunner(self.app, guard, access_log=None, **kwargs)  # as served


async def _pools(jmap: Jmap) -> fk.Pools:
    acc = jmap.account_id
    body = await jmap.request(
        [
            ["Mailbox/get", {"accountId": acc}, "m"],
            ["Mailbox/query", {"accountId": acc}, "mq"],
            ["Email/query", {"accountId": acc, "limit": 20}, "q"],
            [
                "Email/get",
                {
                    "accountId": acc,
                    "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                    "properties": ["threadId", "blobId", "attachments"],
                },
                "e",
            ],
            ["Thread/get", {"accountId": acc, "ids": []}, "t"],
            ["Identity/get", {"accountId": acc}, "i"],
            ["EmailSubmission/get", {"accountId": acc, "ids": []}, "s"],
        ],
        using=list(fk.ALL_CAPABILITIES),
    )
    by_id = {call_id: args for _name, args, call_id in body["methodResponses"]}
    emails = by_id["e"]["list"]
    blobs = [e["blobId"] for e in emails] + [a["blobId"] for e in emails for a in e["attachments"]]
    states = [by_id[k]["state"] for k in ("m", "e", "t", "i", "s")]
    states += [by_id[k]["queryState"] for k in ("mq", "q")]
    return fk.Pools(
        account_id=acc,
        mailbox_ids=tuple(m["id"] for m in by_id["m"]["list"]),
        email_ids=tuple(e["id"] for e in emails),
        thread_ids=tuple(dict.fromkeys(e["threadId"] for e in emails)),
        blob_ids=tuple(dict.fromkeys(blobs)),
        identity_ids=tuple(i["id"] for i in by_id["i"]["list"]),
        states=tuple(states),
    )


@pytest.fixture
async def fuzz(
    seeded_user: SeededUser,
    tmp_path: Path,
    smtp_sink: SmtpSink,
    caplog: pytest.LogCaptureFixture,
    proxy_client: ProxyClient,
) -> AsyncIterator[Fuzz]:
    smtp_sink.add_user(seeded_user.username, seeded_user.password)
    cfg = dataclasses.replace(
        proxy_config(seeded_user, tmp_path),
        smtp=SmtpConfig(host="127.0.0.1", port=smtp_sink.port, security="none", timeout=10.0),
        submission=SubmissionConfig(
            default_domain="example.org",
            identities=(IdentityConfig(seeded_user.username, "*@example.net"),),
        ),
    )
    # records must reach caplog's handler, or the "no traceback" property holds vacuously
    assert logging.getLogger("imapjmap").propagate
    async with proxy_client(cfg, server=GuardedTestServer) as http:
        jmap = Jmap(http, seeded_user.username, seeded_user.password)
        await jmap.session()
        pools = await _pools(jmap)
        assert pools.email_ids and pools.mailbox_ids and pools.identity_ids, pools
        oracle = seeded_user.connect()
        try:
            found = Fuzz(jmap, pools, oracle, caplog)
            found.check_log()
            yield found
        finally:
            oracle.logout()


# -- request shapes ---------------------------------------------------------------------------

CONTENT_TYPES = (
    "application/json",
    "application/json; charset=utf-8",
    "application/json;charset=UTF-8",
    "application/JSON",
    "application/json; charset=latin-1",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/problem+json",
    "",
    ";;;",
    "application/json; boundary",
)
ODD_HEADERS = (
    {},
    {"Content-Encoding": "gzip"},
    {"Content-Encoding": "deflate"},
    {"Content-Encoding": "br"},
    {"Content-Encoding": "x-nope"},
    {"Accept": "text/html"},
    {"Accept-Encoding": "gzip"},
    {"Accept-Charset": "latin-1"},
    {"Expect": "100-continue"},
    {"X-HTTP-Method-Override": "DELETE"},
    {"Origin": "http://evil.example"},
    {"Authorization": "Basic not-base64!!"},
    {"Authorization": "Basic " + "QQ=="},
    {"Authorization": ""},
    {"Authorization": "Bearer not-a-token"},
    {"Authorization": "Bearer "},
    {"Authorization": "Digest username=x"},
)


def _deep(depth: int, leaf: Any = 0) -> str:
    """JSON text nested ``depth`` arrays and objects deep (no recursion to build it)."""
    return '[{"a":' * depth + json.dumps(leaf) + "}]" * depth


def _loads(raw: bytes) -> Any:
    """The JSON value ``raw`` encodes, or None (for the test, not I-JSON-strict)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


@st.composite
def request_bodies(draw: st.DrawFn, pools: fk.Pools) -> tuple[bytes, Any]:
    """(the bytes sent, the JSON value they encode or None when they are not JSON)."""
    fk.JUNK_PERCENT.set(draw(st.sampled_from([3, 10, 25])))
    kind = draw(st.sampled_from(["bytes", "json", "request", "request", "request", "deep"]))
    if kind == "bytes":
        raw = draw(
            st.one_of(
                st.binary(max_size=64),
                st.sampled_from(
                    [b"{", b"NaN", b"[1e999]", b'{"using":[],"using":[]}', b"\xff", b'"\\ud800"']
                ),
                st.text(max_size=64).map(str.encode),
            )
        )
        return raw, _loads(raw)
    if kind == "deep":
        depth = draw(st.sampled_from([64, 500, 2_000, 100_000]))
        text = f'{{"using":["{CORE}"],"methodCalls":[["Core/echo",{{"x":{_deep(depth)}}},"d"]]}}'
        return text.encode(), _loads(text.encode())
    if kind == "json":
        value = draw(fk.JUNK)
        return fk.dumps(value), value
    request: dict[str, Any] = {
        "using": draw(
            fk.mostly(
                st.lists(
                    st.sampled_from([*fk.ALL_CAPABILITIES, "urn:example:nope", ""]), max_size=5
                )
            )
        ),
        "methodCalls": draw(fk.mostly(st.lists(_invocation(pools), max_size=4))),
    }
    if draw(st.booleans()):
        request["createdIds"] = draw(
            fk.mostly(st.dictionaries(fk.TEXT, fk.ids(pools.email_ids), max_size=3))
        )
    return fk.dumps(request), request


class _Drawer:
    """``st.DataObject``'s ``draw`` inside a composite strategy."""

    def __init__(self, draw: st.DrawFn) -> None:
        self._draw = draw

    def draw(self, strategy: st.SearchStrategy[Any], label: Any = None) -> Any:
        return self._draw(strategy)


@st.composite
def _good_invocation(draw: st.DrawFn, pools: fk.Pools) -> list[Any]:
    name = draw(st.sampled_from([*fk.ALL_METHODS, "Nope/get", "Email/nope", "", "error"]))
    args = fk.arguments(_Drawer(draw), pools, name, [])  # type: ignore[arg-type]
    return [name, args, draw(fk.mostly(st.sampled_from(["a", "b"]), fk.TEXT))]


def _invocation(pools: fk.Pools) -> st.SearchStrategy[Any]:
    wrong_arity = st.lists(fk.SCALARS, max_size=5)
    return fk.mostly(_good_invocation(pools), st.one_of(wrong_arity, fk.JUNK))


@fuzz_settings(60)
@given(data=st.data())
async def test_fuzz_request_shapes_core_err_01_04(fuzz: Fuzz, data: st.DataObject) -> None:
    """Broken or odd envelopes get a problem document or a valid Response, nothing else."""
    raw, sent = data.draw(request_bodies(fuzz.pools), label="body")
    headers = {
        "Content-Type": data.draw(
            fk.mostly(st.just("application/json"), st.sampled_from(CONTENT_TYPES))
        )
    }
    headers.update(data.draw(st.sampled_from(ODD_HEADERS), label="headers"))
    status, content_type, body = await fuzz.send(raw, headers)
    fuzz.check(status, content_type, body, sent)


# -- method arguments -------------------------------------------------------------------------


@fuzz_settings(80)
@given(data=st.data())
async def test_fuzz_reading_methods_change_nothing(fuzz: Fuzz, data: st.DataObject) -> None:
    """Every method that does not write upstream, with any arguments: valid answers, and the
    account is exactly as it was (CORE-REQ-03, CORE-ERR-10, CORE-REF-*)."""
    calls = fk.method_calls(data, fuzz.pools, fk.READ_METHODS)
    request: dict[str, Any] = {"using": list(fk.ALL_CAPABILITIES), "methodCalls": calls}
    status, content_type, body = await fuzz.send(fk.dumps(request))
    assert status == 200, body
    fuzz.check(status, content_type, body, request)


@fuzz_settings(60)
@given(data=st.data())
async def test_fuzz_every_method(fuzz: Fuzz, data: st.DataObject) -> None:
    """Every advertised method, writers too: valid answers; when no write was reported
    done, the account is exactly as it was (CORE-SET-*, CORE-CID-*)."""
    calls = fk.method_calls(data, fuzz.pools, fk.ALL_METHODS)
    request: dict[str, Any] = {"using": list(fk.ALL_CAPABILITIES), "methodCalls": calls}
    if data.draw(st.booleans()):
        request["createdIds"] = {"c9": data.draw(st.sampled_from(fuzz.pools.email_ids))}
    status, content_type, body = await fuzz.send(fk.dumps(request))
    assert status == 200, body
    fuzz.check(status, content_type, body, request)


@st.composite
def websocket_messages(draw: st.DrawFn, pools: fk.Pools) -> tuple[str, Any]:
    """(the text sent, the Request it holds or None): RFC 8887 messages of every kind."""
    fk.JUNK_PERCENT.set(draw(st.sampled_from([0, 3, 10, 25])))
    kind = draw(st.sampled_from(["Request", "Request", "push", "junk"]))
    if kind == "junk":
        value = draw(fk.JUNK)
        return json.dumps(value), None
    if kind == "push":
        message = {
            "@type": draw(st.sampled_from(["WebSocketPushEnable", "WebSocketPushDisable"])),
            "dataTypes": draw(
                fk.mostly(st.none() | st.lists(st.sampled_from(["Email", "Mailbox", "x"])))
            ),
            "pushState": draw(fk.mostly(st.none() | fk.TEXT | st.sampled_from(pools.states))),
        }
        return json.dumps(message), None
    request = {
        "@type": "Request",
        "id": "fz",
        "using": draw(fk.mostly(st.just(list(fk.ALL_CAPABILITIES)))),
        "methodCalls": draw(fk.mostly(st.lists(_invocation(pools), max_size=3))),
    }
    return json.dumps(request), request


@fuzz_settings(30)
@given(data=st.data())
async def test_fuzz_websocket_messages_rfc8887(fuzz: Fuzz, data: st.DataObject) -> None:
    """Every message over the WebSocket gets a Response, a RequestError or nothing (push on
    and off): never a closed connection or a traceback (RFC 8887 §4.3)."""
    text, request = data.draw(websocket_messages(fuzz.pools), label="message")
    sentinel = {
        "@type": "Request",
        "id": "sentinel",
        "using": [CORE],
        "methodCalls": [["Core/echo", {}, "s"]],
    }
    async with fuzz.jmap.http.ws_connect(
        "/jmap/ws/", protocols=("jmap",), headers=fuzz.jmap.auth()
    ) as ws:
        await ws.send_str(text)
        await ws.send_str(json.dumps(sentinel))
        waiting = {"sentinel"} | ({"fz"} if request is not None else set())
        answer: Any = None
        while waiting:
            message = await ws.receive(timeout=30)
            assert message.type is aiohttp.WSMsgType.TEXT, message
            body = json.loads(message.data)
            kind = body.get("@type")
            assert kind in ("Response", "RequestError", "StateChange"), body
            waiting.discard(body.get("requestId"))
            if kind == "RequestError":
                assert isinstance(body.get("type"), str), body
                assert 400 <= body.get("status") < 500, body
            elif kind == "Response" and body.get("requestId") == "fz":
                assert request is not None
                fk.check_response(body, request["methodCalls"], created_ids_sent=False)
                answer = body
    fuzz.check_log()
    now = fk.snapshot(fuzz.oracle)
    if request is None or not fk.wrote_upstream(request["methodCalls"], answer):
        assert now == fuzz.seen, "a message that wrote nothing changed the account upstream"
    fuzz.seen = now


UPLOAD_TYPES = (
    "application/octet-stream",
    "text/plain; charset=utf-8",
    "message/rfc822",
    "image/png",
    "%%%/;;;",
    "text/plain; charset",
    "",
    "x" * 300,
)


@fuzz_settings(30)
@given(data=st.data())
async def test_fuzz_upload_and_download_core_bin(fuzz: Fuzz, data: st.DataObject) -> None:
    """Uploads with any bytes, type and encoding, downloads with any name and type: an
    upload that is accepted downloads byte for byte; the rest is a 4xx problem document
    (CORE-BIN-01..03)."""
    fk.JUNK_PERCENT.set(10)  # the rate is per example: never left over from another test
    content = data.draw(st.binary(max_size=2_000), label="content")
    headers = {**fuzz.jmap.auth(), "Content-Type": data.draw(st.sampled_from(UPLOAD_TYPES))}
    body = content
    encoding = data.draw(st.sampled_from(["", "gzip", "gzip-broken", "deflate-broken"]))
    if encoding:
        headers["Content-Encoding"] = encoding.removesuffix("-broken")
        body = content if encoding.endswith("-broken") else gzip.compress(content)
    account = data.draw(fk.mostly(st.just(fuzz.pools.account_id), fk.TEXT), label="account")
    resp = await fuzz.jmap.http.post(
        f"/jmap/upload/{quote(account, safe='')}/", data=body, headers=headers
    )
    uploaded = await _json_body(resp)
    if resp.status != 201:
        fk.check_problem(resp.status, resp.content_type, uploaded)
        assert account != fuzz.pools.account_id or encoding, uploaded
        fuzz.check_log()
        return
    assert not encoding, uploaded
    assert uploaded["size"] == len(content), uploaded
    name = data.draw(fk.TEXT, label="name")
    type_ = data.draw(st.sampled_from(["", "text/plain", "application/pdf", "a\r\nb", "é"]))
    url = f"/jmap/download/{account}/{uploaded['blobId']}/{quote(name, safe='')}"
    resp = await fuzz.jmap.http.get(url, params={"type": type_}, headers=fuzz.jmap.auth())
    if resp.status == 200:
        assert await resp.read() == content
    else:
        fk.check_problem(resp.status, resp.content_type, await _json_body(resp))
    fuzz.check_log()


async def _json_body(resp: Any) -> Any:
    text = await resp.read()
    try:
        return json.loads(text)
    except ValueError:
        raise AssertionError(f"{resp.status}, a body that is not JSON: {text[:300]!r}") from None


async def test_the_fuzz_properties_can_fail(fuzz: Fuzz) -> None:
    """The properties are not vacuous: a change behind the proxy's back, a serverFail, calls
    answered out of order and an error in the log are each caught."""
    request = {"using": [CORE], "methodCalls": [["Core/echo", {}, "a"], ["Core/echo", {}, "b"]]}
    status, content_type, body = await fuzz.send(fk.dumps(request))
    fuzz.oracle.select("INBOX")
    typ, data = fuzz.oracle.store("1", "+FLAGS", "(fuzzcheck)")
    assert typ == "OK", data
    with pytest.raises(AssertionError, match="changed the account upstream"):
        fuzz.check(status, content_type, body, request)
    with pytest.raises(AssertionError):
        fk.check_invocation(["error", {"type": "serverFail"}, "a"], "Core/echo")
    with pytest.raises(AssertionError):
        fk.check_invocation(["error", {"type": "madeUp"}, "a"], "Core/echo")
    swapped = {**body, "methodResponses": body["methodResponses"][::-1]}
    with pytest.raises(AssertionError):
        fk.check_response(swapped, request["methodCalls"], created_ids_sent=False)
    logging.getLogger("imapjmap.http").error("boom")
    with pytest.raises(AssertionError, match="boom"):
        fuzz.check_log()


# -- what the fuzz found ----------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "x-nope"])
async def test_body_with_a_content_encoding_is_415(
    jmap: Jmap, caplog: pytest.LogCaptureFixture, encoding: str
) -> None:
    """A body that did not decode as its Content-Encoding said was a 500 with a traceback,
    and a second traceback when the API refused the request without reading the body."""
    for auth in (jmap.auth(), {}):
        headers = {**auth, "Content-Type": "application/json", "Content-Encoding": encoding}
        resp = await jmap.http.post("/jmap/api/", data=b"\x00\x00 plain", headers=headers)
        assert resp.status == 415, await resp.text()
        assert resp.content_type == "application/problem+json"
    body = await jmap.request([["Core/echo", {"still": "serving"}, "e"]])
    assert body["methodResponses"] == [["Core/echo", {"still": "serving"}, "e"]]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]


async def test_truncated_gzip_upload_is_not_stored_cut_short_core_bin_01(jmap: Jmap) -> None:
    """aiohttp takes a gzip stream cut short for a shorter body: the upload was stored with
    fewer octets than sent (here none) and answered 201."""
    content = b"a whole message, " * 100
    for sent in (gzip.compress(content)[:-30], b"\x00", gzip.compress(content)):
        resp = await jmap.http.post(
            f"/jmap/upload/{jmap.account_id}/",
            data=sent,
            headers={**jmap.auth(), "Content-Type": "text/plain", "Content-Encoding": "gzip"},
        )
        assert resp.status == 415, await resp.text()


async def test_connect_cancelled_after_the_greeting_leaves_no_connection(
    imap_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A push watcher stopped while it connected (WebSocketPushEnable then a close) left
    its half-open IMAP connection open: cancelled after the TCP connection was made, the
    connection is closed."""
    reached: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    connection_made = imap_session._Connection.connection_made

    def made(self: Any, transport: Any) -> None:
        connection_made(self, transport)
        reached.set_result(self)

    monkeypatch.setattr(imap_session._Connection, "connection_made", made)
    # the greeting never arrives
    monkeypatch.setattr(imap_session._Connection, "data_received", lambda self, data: None)
    cfg = ImapConfig(host=imap_user.host, port=imap_user.port, security="none")
    task = asyncio.create_task(
        imap_session.ImapSession.connect(cfg, imap_user.username, imap_user.password)
    )
    proto = await reached
    assert proto.transport is not None and not proto.transport.is_closing()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert proto.transport is None or proto.transport.is_closing()
