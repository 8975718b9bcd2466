"""The exporter's HTTP server: asyncio streams from the standard library, limits first.

Why not a library: what a metrics endpoint has to speak is GET and HEAD of four paths in HTTP/1.1, and
what it has to get right is the limits (connections, requests in flight, a total deadline per request,
the size of the request head), which a general server leaves to its caller anyway. asyncio gives one
thread for every connection, TLS from the ssl module, and no dependency, so a plain install serves.

Every connection is a coroutine. A request has one deadline from its first byte (the first request of a
connection: from the accept) to the last byte of its answer, whatever the client trickles. Map reads and
rendering run on one worker thread; requests that arrive while a scrape is being taken, or within
``share_window`` seconds of the last one, are answered from it, and all of them send the same bytes (one
body per format and encoding), written in slices so a slow reader holds no copy of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

from ._webconfig import WebConfig
from .exporter import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE, Exposition, Family

__all__ = ["Limits", "MetricsServer"]

REASONS = (
    "connections",  # --web.max-connections open already
    "requests",  # --web.max-requests in flight already (503)
    "timeout",  # the request (head and answer) did not finish within its deadline (a late scrape: 503)
    "uri_too_long",  # request line over the limit (414)
    "headers_too_large",  # head over the limit (431)
    "malformed",  # not HTTP/1.x, bad header line, a body (400)
    "method",  # not GET or HEAD (405)
    "unauthorized",  # basic auth missing or wrong (401)
    "client_certificate",  # client_allowed_sans not matched
    "tls",  # TLS handshake failed (plain HTTP to the TLS port, no or a bad client certificate)
)
STATUS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
INDEX = b"""<html><head><title>percpu exporter</title></head><body>
<h1>percpu exporter</h1><p>System calls per CPU, counted by eBPF programs.</p>
<p><a href="/metrics">/metrics</a></p></body></html>
"""
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Limits:
    max_connections: int = 512
    max_requests: int = 40  # 0: no limit
    request_timeout: float = 10.0
    idle_timeout: float = 30.0
    max_request_line: int = 8 * 1024
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    share_window: float = 0.0


class _Refused(Exception):
    def __init__(self, code: int, reason: str, extra: tuple[tuple[str, str], ...] = ()) -> None:
        self.code, self.reason, self.extra = code, reason, extra


class _Reply(NamedTuple):
    """Where an admitted request's answer goes: its connection, whether only the head was asked for
    (HEAD), whether the connection is kept for another request, and the loop time by which the whole
    answer must be sent (the request's deadline)."""

    writer: asyncio.StreamWriter
    head_only: bool
    keep: bool
    deadline: float


class MetricsServer:
    def __init__(
        self,
        sock: socket.socket,
        scrape: Callable[[], Exposition],
        limits: Limits = Limits(),
        web: WebConfig | None = None,
    ) -> None:
        self.sock = sock
        self._scrape = scrape
        self.limits = limits
        self.web = web or WebConfig()
        self.refused = dict.fromkeys(REASONS, 0)
        self.responses: dict[int, int] = {}
        self.open_connections = 0
        self.in_flight = 0
        self._pool: ThreadPoolExecutor | None = None
        self._auth_pool: ThreadPoolExecutor | None = None
        self._last: Exposition | None = None
        self._last_done = -1e9
        self._pending: asyncio.Future[Exposition] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._lock = threading.Lock()  # the counters above are read by the scrape thread
        self._tasks: set[asyncio.Task[None]] = set()

    # --- the server's own metrics -------------------------------------------------------------------

    def families(self) -> list[Family]:
        with self._lock:
            refused, responses = dict(self.refused), dict(self.responses)
            conns, flight = self.open_connections, self.in_flight
        r = Family(
            "percpu_exporter_requests_refused", "counter", "Requests and connections refused, by reason."
        )
        for reason, n in refused.items():
            r.add((("reason", reason),), n)
        c = Family("percpu_exporter_http_responses", "counter", "HTTP responses sent, by status code.")
        for code, n in sorted(responses.items()):
            c.add((("code", str(code)),), n)
        o = Family("percpu_exporter_open_connections", "gauge", "Connections open now.")
        o.add((), conns)
        f = Family("percpu_exporter_requests_in_flight", "gauge", "Requests being answered now.")
        f.add((), flight)
        return [r, c, o, f]

    def _count(self, reason: str) -> None:
        with self._lock:
            self.refused[reason] += 1

    # --- running ------------------------------------------------------------------------------------

    def serve(self) -> None:
        """Serve until :meth:`stop` (or SIGTERM/SIGINT when called from the main thread)."""
        asyncio.run(self._main())

    def stop(self) -> None:
        loop, ev = self._loop, self._stop
        if loop is not None and ev is not None:
            loop.call_soon_threadsafe(ev.set)

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop, self._stop = loop, asyncio.Event()
        if threading.current_thread() is threading.main_thread():
            import signal

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="percpu-scrape")
        # A connection's protocol holds its bytes until the coroutine below decides: TLS is started there,
        # inside the connection and deadline limits, so a failed handshake is seen and counted.
        server = await loop.create_server(lambda: _Accepted(self), sock=self.sock, backlog=128)
        try:
            await self._stop.wait()
        finally:
            server.close()
            self._pool.shutdown(wait=False, cancel_futures=True)
            if self._auth_pool is not None:
                self._auth_pool.shutdown(wait=False, cancel_futures=True)

    # --- one connection -----------------------------------------------------------------------------

    def _accepted(self, transport: asyncio.BaseTransport) -> None:
        with self._lock:
            full = self.open_connections >= self.limits.max_connections
            if not full:
                self.open_connections += 1
        if full:
            self._count("connections")
            transport.abort()  # type: ignore[attr-defined]
            return
        task = asyncio.get_running_loop().create_task(self._connection(transport))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connection(self, transport: Any) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.request_timeout  # the first request's, from the accept
        reader = asyncio.StreamReader(limit=self.limits.max_request_line + 2)
        protocol = asyncio.StreamReaderProtocol(reader)
        writer: asyncio.StreamWriter | None = None
        try:
            if self.web.ssl_context is not None:
                try:
                    transport = await loop.start_tls(
                        transport,
                        protocol,
                        self.web.ssl_context,
                        server_side=True,
                        ssl_handshake_timeout=max(deadline - loop.time(), 0.001),
                    )
                except (OSError, asyncio.TimeoutError, ssl.SSLError):
                    self._count("tls")  # plain HTTP to the TLS port, no or a wrong client certificate, slow
                    return
                if transport is None:
                    return
            else:
                transport.set_protocol(protocol)
            protocol.connection_made(transport)
            if self.web.ssl_context is None:
                transport.resume_reading()
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            await self._serve_connection(reader, writer, deadline)
        finally:
            with self._lock:
                self.open_connections -= 1
            if writer is None or transport.get_write_buffer_size() or transport.is_closing():
                transport.abort()  # a client that stopped reading: drop what it did not take
            else:
                writer.close()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, deadline: float
    ) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.limits.request_timeout
        if self.web.allowed_sans and not self.web.san_allowed(writer.get_extra_info("peercert")):
            self._count("client_certificate")
            return
        writer.transport.set_write_buffer_limits(high=CHUNK)
        first_request = True
        while True:
            try:
                first = await asyncio.wait_for(reader.readexactly(1), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                if first_request:
                    self._count("timeout")  # connected and sent nothing in time
                return  # otherwise idle after a request: close quietly
            except (asyncio.IncompleteReadError, OSError):
                return
            if not first_request:
                deadline = loop.time() + timeout
            try:
                keep = await asyncio.wait_for(
                    self._request(first, reader, writer, deadline), max(deadline - loop.time(), 0)
                )
            except asyncio.TimeoutError:
                self._count("timeout")
                return
            except (asyncio.IncompleteReadError, OSError):
                return
            if not keep:
                return
            first_request = False
            deadline = loop.time() + self.limits.idle_timeout

    async def _request(
        self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, deadline: float
    ) -> bool:
        """Read one request head and answer it; True to keep the connection for another."""
        head_only = False
        try:
            method, path, version, headers = await self._read_head(first, reader)
            head_only = method == "HEAD"
            if method not in ("GET", "HEAD"):
                raise _Refused(405, "method", (("Allow", "GET, HEAD"),))
            if headers.get("transfer-encoding") or headers.get("content-length", "0").strip() != "0":
                raise _Refused(400, "malformed")  # a body: nothing here takes one
        except _Refused as r:
            await self._send(
                writer,
                r.code,
                [*r.extra, ("Content-Type", "text/plain")],
                f"{STATUS[r.code]}\n".encode(),
                head_only,
                close=True,
            )
            self._count(r.reason)
            await self._linger(reader, writer)
            return False
        conn = headers.get("connection", "").lower()
        keep = (version == "HTTP/1.1" and "close" not in conn) or (
            version == "HTTP/1.0" and "keep-alive" in conn
        )
        with self._lock:
            busy = 0 < self.limits.max_requests <= self.in_flight
            if not busy:
                self.in_flight += 1
        if busy:
            self._count("requests")
            await self._send(
                writer,
                503,
                [("Retry-After", "1"), ("Content-Type", "text/plain")],
                b"too many requests in flight\n",
                head_only,
                close=True,
            )
            return False
        try:
            return await self._route(path, headers, _Reply(writer, head_only, keep, deadline))
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _route(self, path: str, headers: dict[str, str], reply: _Reply) -> bool:
        """Answer an admitted request for ``path``: the credentials first (health checks need none), then
        the page asked for. True to keep the connection."""
        route = path.split("?", 1)[0]
        health = route in ("/-/healthy", "/-/ready")
        if (
            self.web.auth is not None
            and not health
            and not await self._authorized(headers.get("authorization"))
        ):
            self._count("unauthorized")
            await self._answer(
                reply,
                401,
                [("WWW-Authenticate", 'Basic realm="percpu"'), ("Content-Type", "text/plain")],
                b"Unauthorized\n",
            )
        elif route == "/metrics":
            await self._metrics(headers, reply)
        elif route == "/":
            await self._answer(reply, 200, [("Content-Type", "text/html")], INDEX)
        elif health:
            await self._answer(reply, 200, [("Content-Type", "text/plain")], b"OK\n")
        else:
            await self._answer(reply, 404, [("Content-Type", "text/plain")], b"not found: try /metrics\n")
        return reply.keep

    async def _metrics(self, headers: dict[str, str], reply: _Reply) -> None:
        """One scrape, in the format and encoding asked for; a failed map read is an answer (500), not a
        dead server."""
        om = "application/openmetrics-text" in headers.get("accept", "")
        gz = _accepts_gzip(headers.get("accept-encoding", ""))
        loop = asyncio.get_running_loop()
        # A scrape that is not built in time gets an answer that says so, sent within the deadline (a
        # tenth of the timeout, at most a second, is kept for it), rather than a connection closed with
        # nothing: Prometheus then shows the 503 and its reason as the target's error.
        built_by = reply.deadline - min(1.0, self.limits.request_timeout / 10)
        try:
            exp = await asyncio.wait_for(self._exposition(), max(built_by - loop.time(), 0))
            assert self._pool is not None
            body = await asyncio.wait_for(
                loop.run_in_executor(self._pool, exp.body, om, gz), max(built_by - loop.time(), 0)
            )
        except asyncio.TimeoutError:
            self._count("timeout")
            secs = self.limits.request_timeout
            print(f"percpu exporter: a scrape took over {secs:g} s to build", file=sys.stderr, flush=True)
            await self._answer(
                reply,
                503,
                [("Content-Type", "text/plain")],
                f"the scrape was not ready within the request timeout ({secs:g} s): raise "
                "--web.request-timeout, and the scrape_timeout of Prometheus with it\n".encode(),
            )
            return
        except Exception as exc:
            print(f"percpu exporter: scrape failed: {exc}", file=sys.stderr, flush=True)
            await self._answer(
                reply, 500, [("Content-Type", "text/plain")], f"scrape failed: {exc}\n".encode()
            )
            return
        hdrs = [("Content-Type", OPENMETRICS_CONTENT_TYPE if om else TEXT_CONTENT_TYPE)]
        if gz:
            hdrs.append(("Content-Encoding", "gzip"))
        hdrs.append(("Vary", "Accept, Accept-Encoding"))
        await self._answer(reply, 200, hdrs, body)

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """After refusing a request whose rest is still arriving: read and discard a little of it, so
        closing does not reset the connection before the client has read the answer."""
        if writer.can_write_eof():
            writer.write_eof()
        with contextlib.suppress(asyncio.TimeoutError, OSError, asyncio.LimitOverrunError, ValueError):
            left = 256 * 1024
            async with asyncio.timeout(1.0) if hasattr(asyncio, "timeout") else contextlib.nullcontext():
                while left > 0:
                    chunk = await reader.read(min(left, CHUNK))
                    if not chunk:
                        break
                    left -= len(chunk)

    async def _read_head(
        self, first: bytes, reader: asyncio.StreamReader
    ) -> tuple[str, str, str, dict[str, str]]:
        lim = self.limits
        try:
            line = first if first == b"\n" else first + await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            raise _Refused(414, "uri_too_long") from exc
        except asyncio.IncompleteReadError as exc:
            raise ConnectionResetError from exc
        if len(line) > lim.max_request_line:
            raise _Refused(414, "uri_too_long")
        parts = line.decode("latin-1").strip().split(" ")
        if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0") or not parts[1].startswith("/"):
            raise _Refused(400, "malformed")
        method, path, version = parts
        headers: dict[str, str] = {}
        total = lines = 0
        while True:
            try:
                raw = await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError as exc:
                raise _Refused(431, "headers_too_large") from exc
            except asyncio.IncompleteReadError as exc:
                raise ConnectionResetError from exc
            total += len(raw)
            lines += 1
            if total > lim.max_header_bytes or lines > lim.max_headers + 1:
                raise _Refused(431, "headers_too_large")
            text = raw.decode("latin-1").rstrip("\r\n")
            if not text:
                return method, path, version, headers
            name, sep, value = text.partition(":")
            if not sep or not name or name != name.strip() or not name.isascii():
                raise _Refused(400, "malformed")
            key = name.lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()

    async def _authorized(self, header: str | None) -> bool:
        assert self.web.auth is not None
        if self._auth_pool is None:
            self._auth_pool = ThreadPoolExecutor(1, thread_name_prefix="percpu-auth")
        return await asyncio.get_running_loop().run_in_executor(self._auth_pool, self.web.auth.check, header)

    async def _exposition(self) -> Exposition:
        """The shared scrape: the one in progress, or the last one if it is recent enough, or a new one."""
        loop = asyncio.get_running_loop()
        if self._last is not None and loop.time() - self._last_done < self.limits.share_window:
            return self._last
        if self._pending is None:
            assert self._pool is not None
            fut = loop.run_in_executor(self._pool, self._scrape)
            self._pending = fut

            def done(f: asyncio.Future[Exposition]) -> None:
                self._pending = None
                if not f.cancelled() and f.exception() is None:
                    self._last, self._last_done = f.result(), loop.time()

            fut.add_done_callback(done)
        # shield: a request that times out must not cancel the scrape others wait for
        return await asyncio.shield(self._pending)

    async def _answer(self, reply: _Reply, code: int, headers: list[tuple[str, str]], body: bytes) -> None:
        await self._send(reply.writer, code, headers, body, reply.head_only, close=not reply.keep)

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        code: int,
        headers: list[tuple[str, str]],
        body: bytes,
        head_only: bool,
        close: bool,
    ) -> None:
        with self._lock:
            self.responses[code] = self.responses.get(code, 0) + 1
        lines = [f"HTTP/1.1 {code} {STATUS[code]}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (*headers, *self.web.headers)]
        lines.append("Connection: close" if close else "Connection: keep-alive")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            view = memoryview(body)
            for i in range(0, len(body), CHUNK):
                writer.write(view[i : i + CHUNK])
                await writer.drain()  # at most CHUNK of this body waits in the transport per client
        await writer.drain()


class _Accepted(asyncio.Protocol):
    """Holds a new connection's bytes (reading paused) until its coroutine takes it over."""

    def __init__(self, server: MetricsServer) -> None:
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.pause_reading()  # type: ignore[attr-defined]
        self.server._accepted(transport)


def _accepts_gzip(value: str) -> bool:
    for item in value.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() == "gzip":
            q = params.strip().lower()
            try:
                return not (q.startswith("q=") and float(q[2:] or 0) == 0)
            except ValueError:
                return False
    return False
