"""The dashboard's HTTP server: an aiohttp app on its own event loop in its own thread.

Read-only by construction: only ``GET``/``HEAD`` routes exist, none of them reaches an actor
with anything but the mesh's own read calls (``tree``, ``status``), and the page is static
files shipped in this package (no build step, nothing fetched from elsewhere; a strict
Content-Security-Policy says so to the browser). Updates are pushed with Server-Sent Events:
a supervision log record goes out the moment the mesh hands it over (``publish``), and the
tree is looked at again right after it, then every ``HOT_INTERVAL`` for ``HOT_FOR`` seconds
(a replacement goes Launching → Ready without a record), otherwise every ``sample_interval``
while a browser watches; so a ``kill -9`` shows as a termination and a respawn well within a
second. ``feed`` holds the streams and the log history, ``view`` builds what they are sent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from mycelium._logger import get_logger

from .bind import DashboardConfig, DashboardError, check_bind, is_loopback
from .feed import Feed, dumps, event, process_start, read_tail
from .rates import RateHistory, parse_requests
from .view import build_view

__all__ = ["Dashboard"]

log = get_logger(__name__)

Source = Callable[[], Mapping[str, Any]]

_PING = 15.0
#: After a supervision event the tree is looked at every HOT_INTERVAL s for HOT_FOR s.
HOT_INTERVAL = 0.1
HOT_FOR = 3.0
_STATIC = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css",
           "favicon.svg": "image/svg+xml"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _with_output(status: Mapping[str, Any],
                 output: Callable[[str], list[str]]) -> Mapping[str, Any]:
    """The status document with each instance's last lines of output as ``output``."""
    apps = []
    for app in status.get("apps") or ():
        insts = []
        for inst in app.get("instances") or ():
            try:
                lines = output(str(inst.get("id")))
            except Exception:  # a file rotating away under us: show none this time
                lines = []
            insts.append({**inst, "output": lines})
        apps.append({**app, "instances": insts})
    return {**status, "apps": apps}


class Dashboard:
    """The live dashboard of one mesh.

    Args:
        config: Where to listen and how often to look.
        tree: Returns the mesh's supervision tree (``mycelium tree --json``'s document).
        status: Returns the status document (``mycelium status --json``).
        log_file: The supervision log, whose tail is the page's first history.
        output: Returns an instance's last lines of output (shown under it).
    """

    def __init__(self, config: DashboardConfig, *, tree: Source, status: Source,
                 log_file: Path | None = None,
                 output: Callable[[str], list[str]] | None = None) -> None:
        self.config = config
        self._tree, self._status, self._log_file = tree, status, log_file
        self._output = output
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._early: list[dict[str, Any]] = []  # published before the loop ran
        self._stopped = False
        self.port: int | None = None
        # loop-owned state
        self._feed = Feed()
        self._rates = RateHistory(config.rates_window)
        self._state: bytes | None = None
        self._last: tuple[Mapping[str, Any] | None, Mapping[str, Any] | None] = (None, None)
        self._wake: asyncio.Event | None = None
        self._hot_until = 0.0
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._files: dict[str, bytes] = {}

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The page's address (``http://127.0.0.1:PORT/``)."""
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    @property
    def running(self) -> bool:
        """True between a successful ``start`` and ``stop``."""
        return self._thread is not None and self._thread.is_alive() and not self._stopped

    def start(self, timeout: float = 10.0) -> None:
        """Bind and serve; return once the port accepts connections.

        Raises:
            UnsafeBind: a non-loopback host without ``allow_remote``, or the edge's port.
            DashboardError: started twice, or the port cannot be bound.
        """
        check_bind(self.config)
        if self._thread is not None:
            raise DashboardError("dashboard: already started")
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="dashboard",
                                        daemon=True)
        self._thread.start()
        try:
            ready.result(timeout)
        except concurrent.futures.TimeoutError:
            self.stop()
            raise DashboardError("dashboard: did not start within "
                                 f"{timeout:g}s") from None

    def stop(self, timeout: float = 10.0) -> None:
        """Close every stream and the port; idempotent, a no-op if never started.

        Raises:
            DashboardError: called from the dashboard's own thread (it would wait for itself).
        """
        thread, loop = self._thread, self._loop
        if thread is None or self._stopped:
            return
        if threading.current_thread() is thread:
            raise DashboardError("dashboard: stop() from the dashboard's own thread")
        self._stopped = True
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # already closed
                loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)

    def publish(self, record: Mapping[str, Any]) -> None:
        """Hand over one supervision log record; thread-safe, never blocks."""
        rec = dict(record)
        with self._lock:
            loop = self._loop
            if loop is None:
                self._early.append(rec)
                return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(self._on_record, rec)

    # -- the loop thread -------------------------------------------------------------------

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open())
        except OSError as exc:
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            ready.set_exception(DashboardError(
                f"dashboard: cannot listen on {self.config.host}:{self.config.port}: {reason}"))
            loop.run_until_complete(self._close())
            loop.close()
            return
        with self._lock:
            self._loop = loop
            early, self._early = self._early, []
        for rec in early:
            self._on_record(rec)
        ready.set_result(None)
        if self._stopped:  # stop() came before the loop was known to it
            loop.call_soon(loop.stop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._close())
            loop.run_until_complete(loop.shutdown_default_executor())  # tree/status calls
            with self._lock:
                self._loop = None
            loop.close()

    async def _open(self) -> None:
        self._wake = asyncio.Event()
        pkg = resources.files(__package__) / "static"
        self._files = {name: (pkg / name).read_bytes() for name in _STATIC}
        for rec in read_tail(self._log_file):
            self._feed.remember(rec)
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/state", self._api_state)
        app.router.add_get("/api/log", self._api_log)
        app.router.add_get("/api/rates", self._api_rates)
        app.router.add_get("/api/events", self._events)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        addresses = self._runner.addresses  # (host, port, …) of each bound socket
        self.port = int(addresses[0][1]) if addresses else self.config.port
        self._tasks = [asyncio.create_task(self._sample_tree(), name="dashboard-tree")]
        if self.config.edge_port:
            self._tasks.append(asyncio.create_task(self._sample_rates(), name="dashboard-rates"))

    async def _close(self) -> None:
        self._feed.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._runner is not None:
            await self._runner.cleanup()

    # -- records and pushes ----------------------------------------------------------------

    def _on_record(self, rec: dict[str, Any]) -> None:
        if self._feed.remember(rec):
            self._feed.broadcast(event("log", dumps(rec)))
            if self._wake is not None:
                self._wake.set()
            if self._loop is not None:
                self._hot_until = self._loop.time() + HOT_FOR

    async def _snapshot(self) -> bytes:
        loop = asyncio.get_running_loop()
        error = None
        tree, status = self._last
        try:
            status = await loop.run_in_executor(None, self._status)
            if self._output is not None:
                status = await loop.run_in_executor(None, _with_output, status, self._output)
            tree = await loop.run_in_executor(None, self._tree)
            if tree.get("pid") and not tree.get("started_at"):  # the root has no parent to say
                tree = {**tree, "started_at": process_start(int(tree["pid"]))}
            self._last = (tree, status)
        except Exception as exc:  # an actor restarting, the mesh stopping: say so, keep going
            error = f"{type(exc).__name__}: {exc}"
        return dumps(build_view(tree, status, self._feed.index, error))

    async def _sample_tree(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            # right after a supervision event the tree keeps changing without telling (the
            # replacement goes Launching → Ready): look every HOT_INTERVAL for HOT_FOR seconds
            hot = loop.time() < self._hot_until
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), HOT_INTERVAL if hot
                                       else self.config.sample_interval)
            if not self._feed.clients:
                self._wake.clear()
                continue
            await asyncio.sleep(0.03)  # a burst of records (terminated, backoff…) → one look
            self._wake.clear()
            state = await self._snapshot()
            if state != self._state:
                self._state = state
                self._feed.broadcast(event("state", state))

    async def _sample_rates(self) -> None:
        host = self.config.edge_host
        host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        host = f"[{host}]" if ":" in host else host
        url = f"http://{host}:{self.config.edge_port}/_mycelium/metrics"
        timeout = aiohttp.ClientTimeout(total=max(1.0, self.config.rates_interval))
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    async with session.get(url) as resp:
                        text = await resp.text()
                    self._rates.add(time.time(), parse_requests(text))
                    if self._feed.clients:  # the full series went out on connect
                        self._feed.broadcast(event("rate", dumps(self._rates.latest())))
                except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
                    pass  # the edge is restarting; the next sample will do
                await asyncio.sleep(self.config.rates_interval)

    # -- HTTP ------------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        """Security headers on every answer; a loopback-only dashboard also checks ``Host``.

        The ``Host`` check stops DNS rebinding: a web page from elsewhere that resolves its
        own name to 127.0.0.1 must not read the mesh through the visitor's browser.
        """
        if not self.config.allow_remote:
            host = (request.host or "").rsplit(":", 1)[0] if not (request.host or "").startswith(
                "[") else (request.host or "").split("]")[0] + "]"
            if not is_loopback(host):
                return web.json_response({"error": "not a loopback host"}, status=421,
                                         headers=_HEADERS)
        resp: web.StreamResponse = await handler(request)
        for name, value in _HEADERS.items():
            resp.headers.setdefault(name, value)
        return resp

    async def _page(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._files["index.html"], content_type="text/html",
                            charset="utf-8")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC or name == "index.html":
            raise web.HTTPNotFound()
        return web.Response(body=self._files[name], content_type=_STATIC[name],
                            charset=None if name.endswith(".svg") else "utf-8")

    async def _api_state(self, _request: web.Request) -> web.Response:
        return web.Response(body=await self._snapshot(), content_type="application/json")

    async def _api_log(self, request: web.Request) -> web.Response:
        app = request.query.get("app")
        records = [r for r in self._feed.records if not app or r.get("app") == app]
        return web.Response(body=dumps(records[::-1]), content_type="application/json")

    async def _api_rates(self, _request: web.Request) -> web.Response:
        return web.Response(body=dumps(self._rates.series()), content_type="application/json")

    async def _events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        first = [event("history", dumps(list(self._feed.records)))]
        if self._state is not None:
            first.append(event("state", self._state))
        first.append(event("rates", dumps(self._rates.series())))
        q = self._feed.subscribe()
        assert self._wake is not None
        self._wake.set()  # a fresh look at the tree for the newcomer
        try:
            await resp.write(b"retry: 1000\n\n" + b"".join(first))
            while True:
                try:
                    chunk = await asyncio.wait_for(q.get(), _PING)
                except TimeoutError:
                    chunk = b": ping\n\n"
                if chunk is None:
                    break
                await resp.write(chunk)
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self._feed.unsubscribe(q)
        return resp
