"""The edge's hold and load meter without a mesh: futures and samples, no sleeps."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mycelium.edge.hold import HoldLedger, Holds
from mycelium.edge.load import LoadMeter
from mycelium.edge.routes import Endpoint, Route, RouteTable

_IDLE = RouteTable({"app": Route("app", (), hold=True)})
_UP = RouteTable({"app": Route("app", (Endpoint("http://127.0.0.1:9", "app@n#1"),), hold=True)})


@pytest.mark.timeout(10)
def test_held_requests_share_one_wake_and_go_on_when_an_endpoint_arrives() -> None:
    async def main() -> None:
        woken: list[str] = []
        holds = Holds(asyncio.get_running_loop(), 5.0, 10, woken.append)
        waits = [asyncio.ensure_future(holds.wait("app", lambda: _IDLE)) for _ in range(5)]
        while holds.held("app") < 5:
            await asyncio.sleep(0)
        assert woken == ["app"]
        holds.release(_IDLE)  # a push without an endpoint releases nothing
        await asyncio.sleep(0)
        assert not any(w.done() for w in waits)
        holds.release(_UP)
        results = await asyncio.gather(*waits)
        assert all(isinstance(r, Route) and r.endpoints for r in results)
        assert holds.held("app") == 0
    asyncio.run(main())


@pytest.mark.timeout(10)
def test_beyond_the_limit_503_at_once_and_a_timeout_is_504() -> None:
    async def main() -> None:
        holds = Holds(asyncio.get_running_loop(), 0.05, 2, None)
        waits = [asyncio.ensure_future(holds.wait("app", lambda: _IDLE)) for _ in range(2)]
        while holds.held("app") < 2:
            await asyncio.sleep(0)
        assert await holds.wait("app", lambda: _IDLE) == 503
        assert await asyncio.gather(*waits) == [504, 504]
    asyncio.run(main())


@pytest.mark.timeout(10)
def test_a_push_that_landed_before_the_wait_is_not_missed() -> None:
    async def main() -> None:
        holds = Holds(asyncio.get_running_loop(), 5.0, 10, None)
        assert isinstance(await holds.wait("app", lambda: _UP), Route)
    asyncio.run(main())


def test_load_is_upstream_seconds_per_second_and_reported_only_when_it_moves() -> None:
    meter = LoadMeter()
    assert meter.sample(0.0, {}) == []
    loads = meter.sample(0.5, {"app": (10, 2.5)})  # 2.5 s upstream in 0.5 s: 5 in flight
    assert [(x.app, x.in_flight, x.requests) for x in loads] == [("app", 5.0, 10)]
    loads = meter.sample(1.0, {"app": (20, 5.0)})
    assert [(x.in_flight, x.requests) for x in loads] == [(5.0, 10)]
    loads = meter.sample(1.5, {"app": (20, 5.0)})  # quiet: the mean over the last second
    assert [(x.in_flight, x.requests) for x in loads] == [(2.5, 0)]
    assert [x.in_flight for x in meter.sample(2.0, {"app": (20, 5.0)})] == [0.0]
    assert meter.sample(2.5, {"app": (20, 5.0)}) == []  # zero and unchanged: nothing to say


@given(st.lists(st.tuples(st.integers(0, 50), st.floats(0, 20, allow_nan=False)),
                min_size=1, max_size=30))
def test_load_is_never_negative(steps: list[tuple[int, float]]) -> None:
    meter, count, seconds = LoadMeter(), 0, 0.0
    for i, (n, s) in enumerate(steps):
        count, seconds = count + n, seconds + s
        for load in meter.sample(i * 0.5, {"app": (count, seconds)}):
            assert load.in_flight >= 0 and load.requests >= 0


class _Gate:
    """A HoldGate whose answers the test gives from the ledger, as the edge actor would."""

    def __init__(self, ledger: HoldLedger, worker: int) -> None:
        self.ledger, self.worker = ledger, worker
        self.asked: list[tuple[str, int]] = []
        self.wakes = 0

    def ask(self, app: str, ticket: int) -> None:
        self.asked.append((app, ticket))

    def leave(self, app: str, ticket: int) -> None:
        self.ledger.leave(self.worker, app, ticket)

    def answer_all(self, holds: Holds) -> None:
        for app, ticket in self.asked:
            admitted, wake = self.ledger.ask(self.worker, app, ticket)
            self.wakes += wake
            holds.answer(ticket, admitted)
        self.asked.clear()


@pytest.mark.timeout(10)
def test_workers_share_one_limit_and_one_wake_through_the_ledger() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ledger = HoldLedger(3)
        gates = [_Gate(ledger, 1), _Gate(ledger, 2)]
        holds = [Holds(loop, 5.0, 3, None, gate) for gate in gates]
        waits = [asyncio.ensure_future(holds[i % 2].wait("app", lambda: _IDLE))
                 for i in range(4)]
        while sum(len(g.asked) for g in gates) < 4:
            await asyncio.sleep(0)
        for gate, h in zip(gates, holds, strict=True):
            gate.answer_all(h)
        assert sum(g.wakes for g in gates) == 1  # one wake for the wave, over both workers
        while not any(w.done() for w in waits):
            await asyncio.sleep(0)
        assert [w.result() for w in waits if w.done()] == [503]  # the fourth, over the edge
        assert ledger.held("app") == 3
        for h in holds:
            h.release(_UP)
        results = [r for r in await asyncio.gather(*waits) if r != 503]
        assert len(results) == 3 and all(isinstance(r, Route) for r in results)
        assert ledger.held("app") == 0  # every admitted request left
    asyncio.run(main())


@pytest.mark.timeout(10)
def test_an_unanswered_gate_times_out_504_and_still_leaves() -> None:
    async def main() -> None:
        ledger = HoldLedger(3)
        gate = _Gate(ledger, 1)
        holds = Holds(asyncio.get_running_loop(), 0.05, 3, None, gate)
        assert await holds.wait("app", lambda: _IDLE) == 504
        holds.answer(1, True)  # a late answer is dropped
    asyncio.run(main())


@given(st.lists(st.tuples(st.sampled_from(["ask", "leave", "forget"]), st.integers(1, 3),
                          st.sampled_from(["a", "b"]), st.integers(1, 6)), max_size=60),
       st.integers(1, 4))
def test_the_ledger_never_holds_more_than_its_limit_and_wakes_once_per_wave(
        steps: list[tuple[str, int, str, int]], limit: int) -> None:
    ledger = HoldLedger(limit)
    model: dict[str, set[tuple[int, int]]] = {"a": set(), "b": set()}
    for op, worker, app, ticket in steps:
        held = model[app]
        if op == "ask":
            if (worker, ticket) in held:
                expected = (True, False)  # asked again: the same place, no second wake
            elif len(held) >= limit:
                expected = (False, False)
            else:
                expected = (True, not held)
                held.add((worker, ticket))
            assert ledger.ask(worker, app, ticket) == expected
        elif op == "leave":
            ledger.leave(worker, app, ticket)
            held.discard((worker, ticket))
        else:
            ledger.forget(worker)
            for keys in model.values():
                keys -= {k for k in keys if k[0] == worker}
        assert ledger.held(app) == len(held) <= limit
