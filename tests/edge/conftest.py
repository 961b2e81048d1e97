"""Fixtures for the edge tests: real upstreams and edges, every one stopped at teardown."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from aiohttp import web
from edge_helpers import RawUpstream, Upstream, echo_app
from edge_mesh import hello_spores, mesh_home  # noqa: F401  (fixtures of the real-mesh tests)
from tls_certs import default_pair

from mycelium.edge import EdgeConfig, EdgeServer, RouteTable
from mycelium.edge.tls import CertPair, TLSSettings
from mycelium.edge.workers import EdgeWorkers


@pytest.fixture
def upstreams() -> Iterator[Callable[..., Upstream]]:
    started: list[Upstream] = []

    def start(app: web.Application | None = None) -> Upstream:
        up = Upstream(app or echo_app())
        started.append(up)
        return up

    yield start
    for up in started:
        up.stop()


@pytest.fixture
def raw_upstreams() -> Iterator[Callable[..., RawUpstream]]:
    started: list[RawUpstream] = []

    def start(handler: Callable[[socket.socket, bytes], None]) -> RawUpstream:
        up = RawUpstream(handler)
        started.append(up)
        return up

    yield start
    for up in started:
        up.stop()


try:
    import uvloop  # noqa: F401  # only to know whether to run the suite on it too
    LOOPS = ["asyncio", "uvloop"]
except ImportError:
    LOOPS = ["asyncio"]


@pytest.fixture(params=LOOPS)
def event_loop_kind(request: pytest.FixtureRequest) -> str:
    """Every edge test runs on asyncio's loop, and on uvloop's when it is installed."""
    return str(request.param)


WORKERS = int(os.environ.get("MYCELIUM_TEST_EDGE_WORKERS", "2") or 0)
"""The suite's edges are 2 worker processes on the loop ``mycelium up`` uses by default
(uvloop when installed; 2, not the machine's cores, so that every test sees more than one
worker on any machine) and the in-process edge thread on the other loop, asyncio: every test
runs against both edges, at half the worker start-ups. ``MYCELIUM_TEST_EDGE_WORKERS=N`` runs
them as N, 0 in-process only. A test about either edge itself asks ``edges(..., workers=…)``."""
DEFAULT_LOOP = LOOPS[-1]
"""The loop of ``event_loop = "auto"``: uvloop when installed, else asyncio."""


class WorkersEdge(EdgeWorkers):
    """Edge worker processes that look like an EdgeServer to the tests: a route push
    returns once every worker applied it."""

    def set_routes(self, table: RouteTable) -> int:
        version = super().set_routes(table)
        assert self.wait_applied(version, timeout=10.0)
        return version

    def set_restarts(self, restarts: Mapping[str, int]) -> None:
        super().set_restarts(restarts)  # sent with the next snapshot, as the edge actor does
        self.set_routes(self.routes)

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._port is not None


@pytest.fixture
def transport() -> str:
    """How the suite's edges are reached: ``"plain"``; a module whose tests also run over
    TLS overrides this fixture with ``params=["plain", "tls"]`` (the helpers then talk TLS
    to ``edge.tls_port``, trusting a CA made in tls_certs.py)."""
    return "plain"


@pytest.fixture
def edges(event_loop_kind: str, transport: str) -> Iterator[Callable[..., EdgeServer]]:
    started: list[Any] = []

    default = WORKERS if event_loop_kind == DEFAULT_LOOP else 0

    def start(routes: RouteTable | None = None, *, workers: int = default,
              **config: Any) -> EdgeServer:
        config.setdefault("edge_id", "edge-test")
        config.setdefault("event_loop", event_loop_kind)
        if transport == "tls":
            cert, key = default_pair()
            config.setdefault("tls", TLSSettings(port=0, pairs=(CertPair(cert, key),)))
        server: Any
        if workers:
            server = WorkersEdge(EdgeConfig(port=0, workers=workers, **config))
        else:
            server = EdgeServer(EdgeConfig(port=0, workers=0, **config))
        server.start()
        started.append(server)
        if routes is not None:
            server.set_routes(routes)
        return server

    yield start
    for server in started:
        server.stop(grace=1.0)
