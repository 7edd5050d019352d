"""A TCP proxy in front of the PostgreSQL test server, which a test can cut and restore.

`cut()` is the server dying as its clients see it: every proxied connection is
aborted and new ones are refused (the port stops listening) until `restore()`.
`lose_next_commit_reply()` is the nastiest moment to die: the next `COMMIT` (a
simple query, as the store's writer sends it) reaches the server and is executed,
and the proxy cuts everything as soon as the server's reply arrives, so the
client never hears that its transaction committed. `commit_reply_lost` is set then.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

COMMIT_QUERY = b"Q" + struct.pack("!i", 4 + len(b"COMMIT\x00")) + b"COMMIT\x00"
CHUNK_BYTES = 64 * 1024


class PgProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0  # chosen by the first `start`
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._lose_commit_reply = False
        self.commit_reply_lost = asyncio.Event()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def restore(self) -> None:
        assert self._server is None, "the proxy is up"
        await self.start()

    def lose_next_commit_reply(self) -> None:
        self._lose_commit_reply = True

    def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def close(self) -> None:
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        self._links.update((client_w, server_w))
        swallow = asyncio.Event()  # set once a COMMIT whose reply must be lost went up
        up = asyncio.create_task(self._pump_up(client_r, server_w, swallow))
        down = asyncio.create_task(self._pump_down(server_r, client_w, swallow))
        self._tasks.update((up, down))
        up.add_done_callback(self._tasks.discard)
        down.add_done_callback(self._tasks.discard)

    async def _pump_up(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, swallow: asyncio.Event
    ) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while chunk := await reader.read(CHUNK_BYTES):
                if self._lose_commit_reply and COMMIT_QUERY in chunk:
                    self._lose_commit_reply = False
                    swallow.set()
                writer.write(chunk)
                await writer.drain()
        writer.transport.abort()

    async def _pump_down(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, swallow: asyncio.Event
    ) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while chunk := await reader.read(CHUNK_BYTES):
                if swallow.is_set():  # the server answered the COMMIT: it committed
                    self.commit_reply_lost.set()
                    self.cut()
                    return
                writer.write(chunk)
                await writer.drain()
        writer.transport.abort()
