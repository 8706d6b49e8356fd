"""An asyncio Redis client for the online store's lookups: one pipelined connection per event loop
over TCP, TLS or a unix socket, replies parsed by hiredis or, without it, by ``_PyReplyReader``; it
never blocks the loop (``connectors.online_redis`` explains when a lookup takes this path)."""

from __future__ import annotations

import asyncio
import collections
import inspect
from typing import Any

# The first byte of each RESP reply type (shared with the SET NX reply scan of ``online_redis``).
_PLUS, _UNDERSCORE, _DOLLAR_BYTE = ord("+"), ord("_"), ord("$")
_STAR, _MINUS, _COLON = ord("*"), ord("-"), ord(":")


def _pack_mget(keys: list[bytes]) -> bytes:
    """``MGET keys...`` in RESP (an empty list packs a harmless ``PING``; its reply is not used)."""
    if not keys:
        return b"*1\r\n$4\r\nPING\r\n"
    parts = [b"*%d\r\n$4\r\nMGET\r\n" % (len(keys) + 1)]
    parts += [b"$%d\r\n%s\r\n" % (len(k), k) for k in keys]
    return b"".join(parts)


def _pack(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join([b"$%d\r\n%s\r\n" % (len(a), a) for a in args])


class _RespProtocol(asyncio.Protocol):
    """One Redis connection on an event loop: commands are written as they come, replies (in order)
    resolve the futures waiting for them."""

    def __init__(self, reader_factory) -> None:
        self.reader = reader_factory()
        self.waiters: collections.deque = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.outbox: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        gets, waiters = self.reader.gets, self.waiters
        while True:
            reply = gets()
            if reply is False:
                return
            if not waiters:  # a reply nobody asked for: the stream is out of step
                self.abort(ConnectionError("unexpected reply from Redis"))
                return
            future = waiters.popleft()
            if not future.done():
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        error = ConnectionError(f"connection to Redis lost ({exc or 'closed'})")
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_exception(error)

    def abort(self, exc: Exception) -> None:
        if not self.lost and self.transport is not None:
            self.transport.abort()  # connection_lost follows and fails the waiters
        self.lost = True
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_exception(exc)

    def send(self, loop: asyncio.AbstractEventLoop, commands: list[bytes]) -> list[asyncio.Future]:
        """Queue commands; they are written once per loop iteration, together with the commands of the
        other requests handled in it (one syscall for all)."""
        futures = [loop.create_future() for _ in commands]
        self.waiters.extend(futures)
        if not self.outbox:
            loop.call_soon(self._flush)
        self.outbox.extend(commands)
        return futures

    def _flush(self) -> None:
        data = b"".join(self.outbox)
        self.outbox.clear()
        if not self.lost:
            self.transport.write(data)


def _expire(protocol: _RespProtocol, futures: list[asyncio.Future], timeout: float) -> None:
    if not all(f.done() for f in futures):
        protocol.abort(TimeoutError(f"no reply from Redis within {timeout} s"))


class ReplyError(Exception):
    """An error reply of Redis (``-ERR ...``), as ``_PyReplyReader`` returns it."""


_INCOMPLETE, _OPENED = object(), object()


class _PyReplyReader:
    """hiredis' ``Reader`` (``feed`` bytes, ``gets`` a reply or False while incomplete) in Python, for the
    RESP2 replies of a connection without hiredis. Resumable: an array arriving over many reads is
    parsed once, not again from its start at each read."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._stack: list[tuple[list, int]] = []  # arrays being filled: (items so far, size)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def gets(self) -> Any:
        while True:
            value = self._token()
            if value is _INCOMPLETE:
                if self._pos > 65536:  # keep the buffer to what is not parsed yet
                    del self._buf[:self._pos]
                    self._pos = 0
                return False
            if value is _OPENED:
                continue
            while self._stack:
                items, size = self._stack[-1]
                items.append(value)
                if len(items) < size:
                    break
                self._stack.pop()
                value = items
            else:
                del self._buf[:self._pos]
                self._pos = 0
                return value

    def _token(self) -> Any:
        buf, pos = self._buf, self._pos
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return _INCOMPLETE
        kind, line = buf[pos], buf[pos + 1:end]
        if kind == _DOLLAR_BYTE:
            n = int(line)
            if n < 0:
                self._pos = end + 2
                return None
            stop = end + 2 + n
            if len(buf) < stop + 2:
                return _INCOMPLETE
            self._pos = stop + 2
            return bytes(buf[end + 2:stop])
        self._pos = end + 2
        if kind == _STAR:
            n = int(line)
            if n <= 0:
                return None if n < 0 else []
            self._stack.append(([], n))
            return _OPENED
        if kind == _PLUS:
            return bytes(line)
        if kind == _MINUS:
            return ReplyError(line.decode("utf-8", "replace"))
        if kind == _COLON:
            return int(line)
        raise ConnectionError(f"unexpected reply from Redis: {bytes(buf[pos:end])[:40]!r}")


def _reader_factory():
    try:
        import hiredis
    except ImportError:
        return _PyReplyReader
    return hiredis.Reader


def _ssl_context(kw: dict) -> Any:
    """The TLS context redis-py would use for these connection settings (built by its own asyncio
    ``RedisSSLContext``), or None when one of them has no asyncio equivalent (OCSP checks)."""
    from redis.asyncio.connection import RedisSSLContext

    if kw.get("ssl_validate_ocsp") or kw.get("ssl_validate_ocsp_stapled") or kw.get("ssl_ocsp_context"):
        return None
    accepted = inspect.signature(RedisSSLContext).parameters
    settings = {"cert_reqs": "required", "check_hostname": True}  # redis-py's defaults for rediss://
    for name, value in kw.items():
        if not name.startswith("ssl_") or value is None:
            continue
        if name[4:] not in accepted:
            return None
        settings[name[4:]] = value
    return RedisSSLContext(**settings).get()


class _AsyncRedis:
    """A pipelined connection per event loop, opened on first use and again after a failure."""

    def __init__(self, opener, db: int, username: str | None, password: str | None,
                 timeout: float, connect_timeout: float, reader_factory) -> None:
        self.opener = opener  # (loop, protocol factory) -> awaitable (transport, protocol)
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.reader_factory = reader_factory
        self.handshake: list[bytes] = []
        if password is not None:
            auth = [b"AUTH", username.encode(), password.encode()] if username else [b"AUTH", password.encode()]
            self.handshake.append(_pack(*auth))
        if db:
            self.handshake.append(_pack(b"SELECT", b"%d" % db))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._protocol: _RespProtocol | None = None
        self._connecting: asyncio.Future | None = None

    @classmethod
    def for_pool(cls, pool, timeout: float) -> "_AsyncRedis | None":
        """From a redis-py pool's settings (TCP, TLS or a unix socket); None when the loop cannot make
        such a connection."""
        from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection

        kw = pool.connection_kwargs
        kind = pool.connection_class
        if kind is UnixDomainSocketConnection and kw.get("path"):
            path = kw["path"]

            def opener(loop, factory):
                return loop.create_unix_connection(factory, path)
        elif kind in (Connection, SSLConnection) and "host" in kw:
            address = (kw["host"], int(kw.get("port") or 6379))
            context = _ssl_context(kw) if kind is SSLConnection else None
            if kind is SSLConnection and context is None:
                return None

            def opener(loop, factory):
                return loop.create_connection(factory, *address, ssl=context)
        else:
            return None
        return cls(opener, int(kw.get("db") or 0), kw.get("username"), kw.get("password"), timeout,
                   kw.get("socket_connect_timeout") or timeout, _reader_factory())

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _RespProtocol:
        # The TLS handshake, if any, is part of the connection: a frozen server costs connect_timeout.
        _, protocol = await asyncio.wait_for(
            self.opener(loop, lambda: _RespProtocol(self.reader_factory)), self.connect_timeout)
        if self.handshake:
            replies = await asyncio.wait_for(
                asyncio.gather(*protocol.send(loop, self.handshake)), self.timeout)
            for reply in replies:
                if isinstance(reply, Exception):
                    protocol.abort(ConnectionError(str(reply)))
                    raise ConnectionError(f"Redis refused the connection setup: {reply}")
        return protocol

    async def _connection(self) -> tuple[asyncio.AbstractEventLoop, _RespProtocol]:
        loop = asyncio.get_running_loop()
        protocol = self._protocol
        if protocol is not None and not protocol.lost and self._loop is loop:
            return loop, protocol
        if self._loop is not loop or self._connecting is None:
            self._loop, self._protocol = loop, None
            self._connecting = loop.create_task(self._connect(loop))
        connecting = self._connecting
        try:
            protocol = await asyncio.shield(connecting)
        except BaseException:
            if self._connecting is connecting:
                self._connecting = None  # the next request tries again
            raise
        if self._connecting is connecting:
            self._protocol, self._connecting = protocol, None
        return loop, protocol

    async def execute(self, commands: list[bytes]) -> list:
        """Send packed commands and return their replies (error replies as exception objects)."""
        loop, protocol = await self._connection()
        futures = protocol.send(loop, commands)
        # No reply in time: the connection is out of step for good (replies may still come), so it
        # is dropped, which fails every request waiting on it.
        timer = loop.call_later(self.timeout, _expire, protocol, futures, self.timeout)
        try:
            return [await future for future in futures]
        finally:
            timer.cancel()

    def close(self) -> None:
        protocol = self._protocol
        self._protocol = None
        if protocol is not None and not protocol.lost and protocol.transport is not None:
            try:
                protocol.transport.close()
            except RuntimeError:  # its loop is closed already
                pass
