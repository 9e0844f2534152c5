"""A TCP relay in front of a server (IMAP, SMTP) that can hold back what the server sends."""

from __future__ import annotations

import asyncio


class Relay:
    """A TCP relay in front of a server that can hold back what the server sends.

    ``stall()`` keeps server bytes from reaching the client (a server or network that hangs
    mid-reply); ``resume()`` lets them through again.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0
        self.accepted = 0  # connections the relay has taken so far

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def stall(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        server_r, server_w = await asyncio.open_connection(*self.target)
        self._writers += [client_w, server_w]
        for src, dst, gated in ((client_r, server_w, False), (server_r, client_w, True)):
            task = asyncio.create_task(self._pipe(src, dst, gated))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, gated: bool
    ) -> None:
        try:
            while data := await src.read(65536):
                if gated:
                    await self.flowing.wait()
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()
