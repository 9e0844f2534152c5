"""A pytest plugin for jmaplib's live suite (``-p jmaplib_live_client``, see jmaplib_live.py):
closes httpx-ws's synchronous WebSocket sessions without leaving a read behind.

httpx-ws 0.9's ``WebSocketSession`` reads the socket in a thread pool, and its ``close()``
closes the socket while that read may still be running (it stops waiting for it, it does
not stop it).  Over TLS the read is OpenSSL's, which holds the socket's file descriptor
number: once the next connection of the process takes that number (the suite's next
WebSocket, a moment later), the orphaned read takes that connection's bytes, and both
ends of it see garbage: the client ``SSL: WRONG_VERSION_NUMBER`` (or ``bad record mac``)
reading the upgrade's answer, nginx ``SSL_read() failed ... bad record mac while proxying
upgraded connection``.  Sessions opened one after the other against a local aiohttp
WebSocket server over TLS fail that way about one in four, with no proxy and no nginx in
between; over plain http the read fails at once (Python's closed socket has no file
descriptor left), which is why only the suite behind nginx's https showed it.

The plugin's ``close()`` does what httpx-ws's does, except that it shuts the socket down
first (the pending read ends at once, with an end of stream) and waits for the thread
pool before the file descriptor is closed.  It changes nothing the server sees but the
order of the client's own teardown; it stands down (leaving httpx-ws as it is) when
httpx-ws no longer has the parts it relies on.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from typing import Any

try:
    import httpcore
    import wsproto
    from httpx_ws import _api
except ImportError:  # the suite without its ws extra: nothing to close
    _api = None


def _close(self: Any, code: int = 1000, reason: str | None = None) -> None:
    self._should_close.set()
    if self.connection.state not in {
        wsproto.connection.ConnectionState.LOCAL_CLOSING,
        wsproto.connection.ConnectionState.CLOSED,
    }:
        data = self.connection.send(wsproto.events.CloseConnection(code, reason))
        try:
            with self._write_lock:
                self.stream.write(data)
        except httpcore.WriteError:
            pass
    raw = self.stream.get_extra_info("socket")
    if isinstance(raw, socket.socket):
        with contextlib.suppress(OSError):  # not SSLSocket.shutdown: it drops the TLS state
            socket.socket.shutdown(raw, socket.SHUT_RDWR)
    if self._executor is not None:
        self._executor.shutdown(wait=True)  # the read has ended: the descriptor is unused
    self.stream.close()


def _install() -> None:
    session = getattr(_api, "WebSocketSession", None)
    needed = ("_should_close", "_executor", "_write_lock", "connection", "stream")
    probe = getattr(session, "__init__", None)
    names = getattr(getattr(probe, "__code__", None), "co_names", ())
    if session is None or not all(name in names for name in needed):
        print(
            "jmaplib_live_client: httpx-ws changed; its close() is left as it is", file=sys.stderr
        )
        return
    session.close = _close


if _api is not None:
    _install()
