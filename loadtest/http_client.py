"""The benchmark's load generator: a minimal HTTP/1.1 keep-alive client on asyncio's Protocol API.

Why not aiohttp's client here: the load generator shares the two cores with the services it
measures, and aiohttp's client spent about 0.3 ms of CPU per request in `cbdc bench onus` (a fifth
of the box at 1,000 requests/s), which the services then lacked. This client does only what the
benchmark needs -- POST pre-built bytes over kept-alive connections to one loopback host and read
``Content-Length``-framed answers (aiohttp's server frames every answer of ours that way) -- and
spends a few microseconds per request. Anything else (chunked framing, a malformed status line,
a connection closed mid-answer, no answer within ``timeout_seconds``) is an error of the request,
raised as ``ClientFailure`` with a short reason, and the connection is dropped.
"""
from __future__ import annotations

import asyncio
from collections import deque


class ClientFailure(Exception):
    """The request got no usable answer; ``reason`` is a stable short name (e.g. ``timeout``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.open = False
        self.reusable = True

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.open = True

    def connection_lost(self, exc) -> None:
        self.open = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ClientFailure("connection_lost"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        try:
            status, length, close = _head(bytes(self.buffer[:end]))
        except ClientFailure as exc:
            self.reusable = False
            waiter.set_exception(exc)
            return
        start = end + 4
        if len(self.buffer) < start + length:
            return
        body = bytes(self.buffer[start:start + length])
        del self.buffer[:start + length]
        self.reusable = not close
        waiter.set_result((status, body))

    def fail(self, reason: str) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ClientFailure(reason))
        self.close()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


def _head(head: bytes) -> tuple[int, int, bool]:
    """(status, Content-Length, connection: close) of an answer's head."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ClientFailure("malformed_status_line")
    length, close = None, parts[0] == b"HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip()) if value.strip().isdigit() else None
        elif name == b"connection":
            close = value.strip().lower() == b"close"
        elif name == b"transfer-encoding":
            raise ClientFailure("unsupported_framing")
    if length is None:
        raise ClientFailure("no_content_length")
    return int(parts[1]), length, close


class LoadClient:
    """POSTs to one host:port over kept-alive connections, as many as requests in flight (the caller
    bounds them: the closed loop's runners, the open loop's timetable)."""

    def __init__(self, host: str, port: int, *, timeout_seconds: float = 60.0) -> None:
        self.host, self.port = host, port
        self.timeout_seconds = timeout_seconds
        self._idle: deque[_Connection] = deque()
        self._all: set[_Connection] = set()

    def request_head(self, path: str, body_length: int) -> bytes:
        return self.request_head_for(f"{self.host}:{self.port}", path, body_length)

    @staticmethod
    def request_head_for(origin: str, path: str, body_length: int) -> bytes:
        """The head of a POST of ``body_length`` JSON bytes to ``path`` at ``origin`` (host:port)."""
        return (f"POST {path} HTTP/1.1\r\nHost: {origin}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {body_length}\r\n\r\n").encode()

    async def _connection(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if conn.open and conn.reusable:
                return conn
            self._all.discard(conn)
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(_Connection, self.host, self.port)
        except OSError:
            raise ClientFailure("connect_failed") from None
        self._all.add(conn)
        return conn

    async def post(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        """(status, body) of the answer to ``head`` (from request_head) + ``body``."""
        conn = await self._connection()
        loop = asyncio.get_running_loop()
        conn.waiter = loop.create_future()
        timer = loop.call_later(self.timeout_seconds, conn.fail, "timeout")
        try:
            conn.transport.writelines((head, body))
            answer = await conn.waiter
        except ClientFailure:
            conn.close()
            self._all.discard(conn)
            raise
        finally:
            timer.cancel()
            conn.waiter = None
        if conn.reusable and conn.open:
            self._idle.append(conn)
        else:
            conn.close()
            self._all.discard(conn)
        return answer

    def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()
        self._idle.clear()
