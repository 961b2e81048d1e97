"""EdgeServer: the edge's lifecycle, on its own event loop in its own thread.

The mesh's edge actor owns one :class:`EdgeServer`. Every public method returns quickly and is
safe to call from any thread: the proxy runs on a private loop (uvloop when installed), so the
actor's mailbox never waits on network I/O, and a route swap is one attribute store.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence

from mycelium._logger import get_logger
from mycelium.edge.accesslog import LineSink
from mycelium.edge.config import EdgeConfig
from mycelium.edge.connection import ClientConnection
from mycelium.edge.errors import EdgeError
from mycelium.edge.metrics import Snapshot
from mycelium.edge.proxy import EdgeProxy
from mycelium.edge.redirect import RedirectingHandler
from mycelium.edge.routes import RouteTable
from mycelium.edge.state import OutcomeSink
from mycelium.edge.tls import TLSListener, https_location
from mycelium.rollout_messages import DigestAnswers
from supervisors.reports import Reporter

__all__ = ["EdgeServer", "new_loop"]

log = get_logger(__name__)


def new_loop(kind: str = "auto") -> asyncio.AbstractEventLoop:
    """Return a fresh event loop: uvloop's when installed (faster), else asyncio's.

    Args:
        kind: ``"auto"``, ``"uvloop"`` or ``"asyncio"``.

    Raises:
        EdgeError: ``"uvloop"`` was asked for and is not installed.
    """
    if kind == "asyncio":
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise EdgeError("edge event_loop 'uvloop' asked for, but uvloop is not installed"
                            ) from None
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class EdgeServer:
    """The mesh's reverse proxy (see docs/reference.md), started and stopped by its owner.

    Args:
        config: Where to listen and how to behave; defaults to :class:`EdgeConfig`'s.
        reporter: Receives the edge's supervision-log records (endpoint ejections), called
            on the edge's loop thread; ``None`` drops them.
        access_sink: Where access log lines go instead of the home's ``access.jsonl``.
        outcome_sink: In an edge worker: where outcomes that matter to ejection go (the edge
            actor decides ejections for every worker; see :meth:`mirror_ejections`).
    """

    def __init__(self, config: EdgeConfig | None = None, reporter: Reporter | None = None,
                 access_sink: LineSink | None = None,
                 outcome_sink: OutcomeSink | None = None) -> None:
        self.config = config or EdgeConfig()
        self._reporter = reporter
        self._access_sink = access_sink
        self._outcome_sink = outcome_sink
        self._routes = RouteTable()
        self._restarts: Mapping[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._proxy: EdgeProxy | None = None
        self._server: asyncio.AbstractServer | None = None
        self._port: int | None = None
        self._tls: TLSListener | None = None
        self._tls_server: asyncio.AbstractServer | None = None
        self._tls_port: int | None = None
        self._state = "new"
        self._lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        """Start serving; return once the port accepts connections.

        Raises:
            EdgeError: Started before, or a port cannot be bound (the message says why).
            TLSConfigError: A certificate or key of ``config.tls`` is bad.
        """
        with self._lock:
            if self._state != "new":
                raise EdgeError(f"edge server already {self._state}; create a new one")
            self._state = "starting"
        if self.config.tls is not None:
            try:
                self._tls = TLSListener(self.config.tls)
            except BaseException:
                self._state = "failed"
                raise
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(ready, failure),
                                        name=f"edge-{self.config.edge_id}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            self._state = "failed"
            raise EdgeError(f"edge did not start within {timeout} s")
        if failure:
            self._thread.join(timeout)
            self._state = "failed"
            exc = failure[0]
            if isinstance(exc, EdgeError):
                raise exc
            raise EdgeError(f"edge cannot listen on {self.config.host}:{self.config.port}: "
                            f"{exc}") from exc
        self._state = "running"

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        try:
            loop = new_loop(self.config.event_loop)
        except EdgeError as exc:
            failure.append(exc)
            ready.set()
            return
        self._loop = loop
        asyncio.set_event_loop(loop)
        proxy = EdgeProxy(self.config, loop, self._reporter, self._access_sink,
                          self._outcome_sink)
        proxy.routes = self._routes
        proxy.metrics.restarts = self._restarts
        self._proxy = proxy
        cfg = self.config
        try:
            self._server = loop.run_until_complete(loop.create_server(
                self._plain_protocol(proxy), cfg.host, cfg.port, backlog=1024,
                reuse_address=True, reuse_port=cfg.reuse_port or None))
            sock = self._server.sockets[0]
            self._port = sock.getsockname()[1]
            if self._tls is not None:
                self._tls_server = loop.run_until_complete(loop.create_server(
                    proxy.protocol, cfg.host, self._tls.settings.port, backlog=1024,
                    reuse_address=True, reuse_port=cfg.reuse_port or None,
                    ssl=self._tls.context, ssl_handshake_timeout=cfg.header_timeout))
                self._tls_port = self._tls_server.sockets[0].getsockname()[1]
            proxy.start()
        except BaseException as exc:  # report any bind failure to start(), never die silently
            failure.append(exc)
            if self._server is not None:
                self._server.close()
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.wait(pending, timeout=1.0))
            loop.close()

    def _plain_protocol(self, proxy: EdgeProxy) -> Callable[[], ClientConnection]:
        """The plain port's protocol factory: with ``--https-redirect``, one that answers
        308 for hosts that have a certificate."""
        tls = self._tls
        if tls is None or not tls.settings.redirect:
            return proxy.protocol
        loop = proxy.state.loop
        handler = RedirectingHandler(proxy.fast, proxy.state, lambda host, target: https_location(
            host, target, self._tls_port or tls.settings.port, tls.store.names))
        return lambda: ClientConnection(loop, handler)

    async def _shutdown(self, grace: float) -> None:
        assert self._server is not None and self._proxy is not None
        self._server.close()
        if self._tls_server is not None:
            self._tls_server.close()
        await self._proxy.drain(grace)

    def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let in-flight requests finish within ``grace`` seconds, close.

        Idempotent: stopping a stopped (or never started) server does nothing.

        Raises:
            EdgeError: Called from the edge's own thread (it would wait on itself), or the
                server thread did not stop (it is left as a daemon thread).
        """
        if self._thread is not None and threading.current_thread() is self._thread:
            raise EdgeError("EdgeServer.stop() called from the edge's own loop thread")
        with self._lock:
            if self._state != "running":
                self._state = "stopped" if self._state == "new" else self._state
                return
            self._state = "stopping"
        loop, thread = self._loop, self._thread
        assert loop is not None and thread is not None
        try:
            future = asyncio.run_coroutine_threadsafe(self._shutdown(grace), loop)
            with contextlib.suppress(Exception):
                future.result(grace + 5.0)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(grace + 5.0)
            self._state = "stopped"
        if thread.is_alive():
            raise EdgeError("edge server thread did not stop")

    # -- state pushed by the owner ----------------------------------------------------------------
    def reload_certs(self) -> None:
        """Re-read the certificate pairs: new handshakes use them, open connections keep theirs.

        Raises:
            TLSConfigError: A pair is bad now (the old certificates stay in use).
            EdgeError: This edge has no TLS listener.
        """
        if self._tls is None:
            raise EdgeError("the edge has no TLS listener (up --tls-cert … --tls-key …)")
        self._tls.reload()

    def set_routes(self, table: RouteTable) -> None:
        """Swap the routing snapshot; requests already routed keep their endpoint.

        Raises:
            TypeError: ``table`` is not a :class:`RouteTable` (a mutable dict is refused).
        """
        if not isinstance(table, RouteTable):
            raise TypeError(f"set_routes wants a RouteTable, got {type(table).__name__}")
        self._routes = table
        proxy, loop = self._proxy, self._loop
        if proxy is not None:
            proxy.routes = table  # one attribute store: atomic for the loop thread
            keep = {(ep.host, ep.port) for route in table.values() for ep in route.endpoints}
            if loop is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(proxy.prune, keep)
                    loop.call_soon_threadsafe(proxy.state.holds.release, table)

    def answer_counts(self, timeout: float = 1.0) -> tuple[DigestAnswers, ...]:
        """Per-digest answers over the last window, of apps running a canary (none: empty).

        Taken on the edge's loop, where every answer is counted (so the counts need no lock);
        a loop that does not answer within ``timeout`` reports nothing this time.
        """
        proxy, loop = self._proxy, self._loop
        if proxy is None or loop is None or loop.is_closed():
            return ()
        answers = proxy.state.answers
        done: concurrent.futures.Future[tuple[DigestAnswers, ...]] = concurrent.futures.Future()

        def take() -> None:
            done.set_result(answers.snapshot())

        try:
            loop.call_soon_threadsafe(take)
            return done.result(timeout)
        except (RuntimeError, concurrent.futures.TimeoutError):
            return ()

    def set_restarts(self, restarts: Mapping[str, int]) -> None:
        """Replace the per-app restart counts shown by ``/_mycelium/metrics``."""
        self._restarts = dict(restarts)
        if self._proxy is not None:
            self._proxy.metrics.restarts = self._restarts

    def mirror_ejections(self, failing: Mapping[str, int],
                         out: Mapping[str, Sequence[str]]) -> None:
        """Take the edge actor's ejection state (failure counts, ejected endpoints)."""
        proxy, loop = self._proxy, self._loop
        if proxy is not None and loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(proxy.state.ejector.mirror, failing, out)

    def answer_hold(self, ticket: int, admitted: bool) -> None:
        """The edge actor's answer to a held request's :class:`~mycelium.edge.hold.HoldGate`
        question (an edge worker's)."""
        proxy, loop = self._proxy, self._loop
        if proxy is not None and loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(proxy.state.holds.answer, ticket, admitted)

    def set_peer_metrics(self, peers: Snapshot | None) -> None:
        """Add the other edge workers' values to what ``/_mycelium/metrics`` shows."""
        if self._proxy is not None:
            self._proxy.metrics.peers = peers  # one attribute store: atomic for the loop

    def metrics_snapshot(self, timeout: float = 2.0) -> Snapshot:
        """This edge's metrics as data, taken on its loop thread.

        Raises:
            EdgeError: Not running, or the loop did not answer within ``timeout``.
        """
        proxy, loop = self._proxy, self._loop
        if proxy is None or loop is None or loop.is_closed():
            raise EdgeError("edge server not running")
        answer: concurrent.futures.Future[Snapshot] = concurrent.futures.Future()
        loop.call_soon_threadsafe(lambda: answer.set_result(proxy.metrics.snapshot()))
        try:
            return answer.result(timeout)
        except concurrent.futures.TimeoutError:
            raise EdgeError("edge loop did not answer") from None

    # -- read-only views --------------------------------------------------------------------------
    def load_totals(self) -> dict[str, tuple[int, float]]:
        """app → (requests, upstream seconds) so far (:class:`~mycelium.edge.load.LoadMeter`)."""
        proxy = self._proxy
        return {} if proxy is None else proxy.metrics.latency_totals()

    @property
    def routes(self) -> RouteTable:
        """The current routing snapshot."""
        return self._routes

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``).

        Raises:
            EdgeError: Not started.
        """
        if self._port is None:
            raise EdgeError("edge server not started")
        return self._port

    @property
    def tls_port(self) -> int | None:
        """The bound TLS port, or None without TLS (or before start)."""
        return self._tls_port

    @property
    def url(self) -> str:
        """``http://host:port`` of the running edge."""
        return f"http://{self.config.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the edge is accepting requests."""
        return self._state == "running"
