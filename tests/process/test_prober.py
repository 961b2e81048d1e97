"""The non-blocking prober: same answers as the blocking probe, nobody waits for a hung one."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from mycelium.node.health import free_port
from mycelium.node.prober import Prober

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def prober() -> Iterator[Prober]:
    p = Prober()
    yield p
    p.close()
    assert not p.running


def ask(prober: Prober, url: str, timeout: float = 2.0) -> tuple[bool, float]:
    """Probe and wait for the answer: (ok, seconds it took)."""
    done = threading.Event()
    result: list[bool] = []
    start = time.monotonic()
    prober.probe(url, timeout, lambda ok: (result.append(ok), done.set()))
    assert done.wait(timeout + 5), "no answer"
    return result[0], time.monotonic() - start


def test_true_only_on_a_200(prober: Prober, health_server: int) -> None:
    base = f"http://127.0.0.1:{health_server}"
    assert ask(prober, f"{base}/health")[0]
    assert ask(prober, f"{base}/health?deep=1")[0]
    assert ask(prober, f"{base}/health-big")[0]  # a 128 KB body: read on, then closed
    assert not ask(prober, f"{base}/broken")[0]
    with pytest.raises(ValueError, match="http://"):
        prober.probe("ftp://127.0.0.1/", 1.0, lambda ok: None)


def test_false_at_once_when_nothing_listens(prober: Prober) -> None:
    ok, took = ask(prober, f"http://127.0.0.1:{free_port()}/health")
    assert not ok and took < 1.0


def test_a_hung_server_costs_its_own_timeout_and_delays_nobody(
        prober: Prober, health_server: int) -> None:
    with socket.socket() as silent:  # accepts (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        hung = f"http://127.0.0.1:{silent.getsockname()[1]}/health"
        answers: list[tuple[str, bool, float]] = []
        all_in = threading.Semaphore(0)
        start = time.monotonic()

        def note(name: str) -> object:
            return lambda ok: (answers.append((name, ok, time.monotonic() - start)),
                               all_in.release())

        for _ in range(5):
            prober.probe(hung, 1.0, note("hung"))
        for _ in range(20):
            prober.probe(f"http://127.0.0.1:{health_server}/health", 1.0, note("good"))
        assert all(all_in.acquire(timeout=10) for _ in range(25))
    good = [a for a in answers if a[0] == "good"]
    hang = [a for a in answers if a[0] == "hung"]
    assert all(ok for _, ok, _ in good) and max(t for _, _, t in good) < 0.9
    assert not any(ok for _, ok, _ in hang) and min(t for _, _, t in hang) >= 0.9


def test_a_broken_callback_is_logged_and_does_not_stop_the_prober(
        prober: Prober, health_server: int, caplog: pytest.LogCaptureFixture) -> None:
    ran = threading.Event()

    def broken(_ok: bool) -> None:
        ran.set()
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="mycelium.node.prober"):
        prober.probe(f"http://127.0.0.1:{health_server}/health", 1.0, broken)
        assert ran.wait(5)
        # answered on the same thread after the broken callback's failure was logged
        assert ask(prober, f"http://127.0.0.1:{health_server}/health")[0]
    failed = [r for r in caplog.records if r.name == "mycelium.node.prober"]
    assert [r.getMessage() for r in failed] == ["a health probe's callback failed"]
    assert failed[0].exc_info is not None
