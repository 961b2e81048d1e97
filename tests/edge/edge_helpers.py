"""Helpers for the edge tests: real upstream servers, raw sockets, route tables."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from tls_certs import client_context

from mycelium.edge import EdgeServer, Endpoint, Route, RouteTable


class Upstream:
    """An aiohttp app served on 127.0.0.1:<free port> from its own loop thread."""

    def __init__(self, app: web.Application) -> None:
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10), "upstream did not start"

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = self.runner.addresses[0][1]
        ready.set()
        self.loop.run_forever()
        self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop)
        with contextlib.suppress(Exception):
            fut.result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class Listener:
    """A listening socket on 127.0.0.1 (``port`` 0: a free one) whose connections a daemon
    thread hands to ``on_conn`` one by one, until :meth:`close`."""

    def __init__(self, on_conn: Callable[[socket.socket], None], port: int = 0) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(128)
        self.port: int = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, args=(on_conn,), daemon=True)
        self.thread.start()

    def _accept(self, on_conn: Callable[[socket.socket], None]) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            on_conn(conn)

    def close(self) -> None:
        """Stop accepting (the accepting thread ends with the socket)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


class RawUpstream:
    """A socket server that answers each connection with ``handler(conn, request_head)``."""

    def __init__(self, handler: Callable[[socket.socket, bytes], None]) -> None:
        self.handler = handler
        self.accepted = 0
        self.requests: list[bytes] = []
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self.listener = Listener(self._accepted)
        self.port = self.listener.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accepted(self, conn: socket.socket) -> None:
        self.accepted += 1
        self._conns.append(conn)
        t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
        self._threads.append(t)
        t.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        with contextlib.suppress(OSError):
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head = data.split(b"\r\n\r\n", 1)[0]
            self.requests.append(head)
            self.handler(conn, head)
        with contextlib.suppress(OSError):
            conn.close()

    def stop(self) -> None:
        self.listener.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.close()
        for t in self._threads:
            t.join(5)


def dead_url() -> str:
    """A URL where nothing listens (bound then closed, so connecting is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def table(**apps: list[str]) -> RouteTable:
    """``table(hello=[url, ...])`` → a RouteTable."""
    return RouteTable({app: Route(app, tuple(Endpoint(u, f"{app}#{i}") for i, u in
                                             enumerate(urls)))
                       for app, urls in apps.items()})


def request(edge: EdgeServer, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None,
            timeout: float = 10.0) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request on a fresh connection; returns (status, headers, body)."""
    conn = http_conn(edge, timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def settled_metrics(edge: EdgeServer, *lines: str, timeout: float = 10.0) -> str:
    """``/_mycelium/metrics`` once it shows every one of ``lines``: worker processes share
    their counters every half second, so the whole edge's counts arrive a moment late."""
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = request(edge, "GET", "/_mycelium/metrics")
        text = body.decode()
        if status == 200 and all(line in text for line in lines):
            return text
        assert time.monotonic() < deadline, f"metrics never showed {lines}: {text}"
        time.sleep(0.05)  # polls a condition with a deadline


def http_conn(edge: EdgeServer, timeout: float = 10.0) -> http.client.HTTPConnection:
    """An HTTP connection to the edge: over TLS (trusting the test CA) when it has TLS."""
    if edge.tls_port is not None:
        return http.client.HTTPSConnection("127.0.0.1", edge.tls_port, timeout=timeout,
                                           context=client_context())
    return http.client.HTTPConnection("127.0.0.1", edge.port, timeout=timeout)


def connect(edge: EdgeServer, timeout: float = 5.0) -> socket.socket:
    """A raw connection to the edge: a TLS socket (handshake done) when it has TLS."""
    if edge.tls_port is not None:
        raw = socket.create_connection(("127.0.0.1", edge.tls_port), timeout=timeout)
        return client_context().wrap_socket(raw, server_hostname="localhost")
    return socket.create_connection(("127.0.0.1", edge.port), timeout=timeout)


def raw_exchange(edge: EdgeServer | int, data: bytes, timeout: float = 5.0,
                 complete: Callable[[bytes], bool] | None = None) -> bytes:
    """Send raw bytes, read until the edge closes (or times out, or ``complete`` says what
    came so far is all that is awaited: a kept-alive connection); return what came back.

    ``edge`` is an edge (over TLS when it has TLS) or a plain port."""
    sock = (socket.create_connection(("127.0.0.1", edge), timeout=timeout)
            if isinstance(edge, int) else connect(edge, timeout))
    with sock as s:
        s.sendall(data)
        out = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError, ssl.SSLError):
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
                if complete is not None and complete(out):
                    break
        return out


async def echo(request: web.Request) -> web.Response:
    """What the upstream saw: method, target, headers (all of them, in order), body size."""
    body = await request.read()
    return web.json_response({
        "method": request.method, "target": request.path_qs,
        "headers": [[k, v] for k, v in request.headers.items()],
        "body_len": len(body), "port": request.transport.get_extra_info("sockname")[1]
        if request.transport else 0,
    })


def echo_app(**extra: Any) -> web.Application:
    app = web.Application(client_max_size=1024**3)
    for path, handler in extra.items():
        app.router.add_route("*", "/" + path, handler)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app
