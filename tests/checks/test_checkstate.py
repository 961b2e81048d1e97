"""The pure core of health checks: tallies, startup gating, Ready and serving, liveness."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.messages import CheckResult
from mycelium.node.checkstate import Book, Tally, effective_checks, tally, watchdog_expired
from mycelium.spores.checks import CheckSpec


def spec(kind: str = "http", role: str = "readiness", name: str | None = None, *,
         interval: float = 1.0, failures: int = 3, successes: int = 1) -> CheckSpec:
    return CheckSpec(type=kind, role=role, name=name or f"{kind}-{role}", interval=interval,
                     timeout=1.0, failures=failures, successes=successes,
                     path="/health" if kind == "http" else None)


def result(name: str, ok: bool, detail: str = "") -> CheckResult:
    return CheckResult(name, ok, 0.0, detail or ("HTTP 200" if ok else "HTTP 500"))


def test_a_check_passes_after_successes_and_fails_after_failures_in_a_row() -> None:
    s = spec(failures=2, successes=2)
    t = tally(Tally(), True, s)
    assert not t.passing
    t = tally(t, True, s)
    assert t.passing
    t = tally(t, False, s)
    assert t.passing and t.fails == 1
    t = tally(tally(t, True, s), False, s)  # a pass in between starts the count again
    assert t.passing
    assert not tally(t, False, s).passing


def test_a_startup_check_that_passed_stays_passed() -> None:
    s = spec(role="startup", failures=0)
    t = tally(Tally(), True, s)
    for _ in range(10):
        t = tally(t, False, s)
    assert t.passing


def test_without_startup_or_readiness_checks_the_health_path_gates_startup() -> None:
    live = spec(role="liveness")
    checks = effective_checks((live,), "/healthz")
    assert checks[0].role == "startup" and checks[0].path == "/healthz"
    assert checks[1] is live
    ready = spec()
    assert effective_checks((ready, live), "/h") == (ready, live)
    assert effective_checks((), "/h") == ()


def test_startup_gates_the_other_checks_and_ready_needs_readiness_too() -> None:
    startup, ready, live = spec("tcp", "startup"), spec(), spec("exec", "liveness")
    book = Book.new((startup, ready, live))
    assert book.active() == (startup,)
    book, decision = book.observe(result(ready.name, True), 0.0)  # not active yet: ignored
    assert not book.ready and not decision.became_ready
    book, decision = book.observe(result(startup.name, True), 0.1)
    assert not decision.became_ready and book.started
    assert book.active() == (ready, live)
    assert book.interval(ready) == 0.01  # polls fast until first Ready
    book, decision = book.observe(result(ready.name, True), 0.2)
    assert decision.became_ready and book.ready and decision.serving
    assert book.interval(ready) == 1.0


def test_a_failing_readiness_check_stops_serving_without_a_restart_and_comes_back() -> None:
    ready = spec(failures=2, interval=1.0)
    book, _ = Book.new((ready,)).observe(result(ready.name, True), 0.0)
    book, decision = book.observe(result(ready.name, False), 1.0)
    assert decision.serving  # one failure of two
    book, decision = book.observe(result(ready.name, False), 2.0)
    assert not decision.serving and decision.restart is None and book.ready
    book, decision = book.observe(result(ready.name, True), 3.0)
    assert decision.serving


def test_serving_changes_at_most_once_per_readiness_interval() -> None:
    fast, slow = spec(name="fast", failures=1, interval=1.0), spec(name="slow", interval=5.0)
    book = Book.new((fast, slow))
    book, _ = book.observe(result("fast", True), 0.0)
    book, decision = book.observe(result("slow", True), 0.0)
    assert decision.became_ready
    book, decision = book.observe(result("fast", False), 0.5)  # within the hold: kept
    assert decision.serving
    book, decision = book.observe(result("fast", False), 1.0)
    assert not decision.serving


def test_liveness_restarts_after_failures_in_a_row_with_its_name_and_detail() -> None:
    live = spec("http", "liveness", "alive", failures=3)
    book = Book.new((live,))
    assert book.started and book.active() == (live,)
    for _ in range(2):
        book, decision = book.observe(result("alive", False), 0.0)
        assert decision.restart is None
    book, decision = book.observe(result("alive", False, "connect refused"), 0.0)
    assert decision.restart == "liveness_failed: alive: connect refused"


def test_a_startup_check_with_failures_fails_the_launch() -> None:
    startup = spec("exec", "startup", "boot", failures=2)
    book, decision = Book.new((startup,)).observe(result("boot", False), 0.0)
    assert decision.launch_failed is None
    _, decision = book.observe(result("boot", False, "exit code 1"), 0.0)
    assert decision.launch_failed == "startup_failed: boot: exit code 1"


def test_the_watchdog_expires_only_after_its_period() -> None:
    assert not watchdog_expired(10.0, 11.0, 1.0)
    assert watchdog_expired(10.0, 11.01, 1.0)


CHECKS = (spec("tcp", "startup", "boot", failures=0), spec(name="r1", failures=2, interval=0.5),
          spec(name="r2", failures=1, interval=1.0, successes=2),
          spec("exec", "liveness", "l1", failures=3))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([c.name for c in CHECKS]), st.booleans(),
                          st.floats(min_value=0.0, max_value=1.5)), max_size=80))
def test_invariants_over_any_sequence_of_results(
        events: list[tuple[str, bool, float]]) -> None:
    """Ready never before startup and never undone; serving changes at most once per hold;
    only liveness restarts, and only after its `failures` failures in a row."""
    book, now = Book.new(CHECKS), 0.0
    hold = book.hold()
    changes: list[float] = []
    streak = 0
    readies = 0
    for name, ok, dt in events:
        now += dt
        was_ready, was_serving, active = book.ready, book.serving, book.active()
        book, decision = book.observe(result(name, ok), now)
        if was_ready:
            assert book.ready
        if book.ready:
            assert book.started
        readies += decision.became_ready
        if was_ready and decision.serving != was_serving:
            changes.append(now)
        if name == "l1" and any(c.name == "l1" for c in active):
            streak = 0 if ok else streak + 1
        if decision.restart is not None:
            assert name == "l1" and streak == 3
            break
        assert decision.launch_failed is None  # failures 0: only the deadline fails startup
    assert readies <= 1
    assert all(b - a >= hold for a, b in itertools.pairwise(changes))
