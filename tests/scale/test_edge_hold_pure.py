"""The edge's hold and load meter without a mesh: futures and samples, no sleeps."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mycelium.edge.hold import Holds
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
