"""The node's pure decisions: placement by capacity, the app supervisor's intensity, and the
drain's reading of the kernel's socket table (from a real listening socket)."""

from __future__ import annotations

import dataclasses
import socket

from hypothesis import given
from hypothesis import strategies as st

from mycelium.messages import Budget, Plan
from mycelium.node.placement import Usage, decline_reason, default_budget, usage
from mycelium.node.settings import NodeSettings, backoff_intensity
from mycelium.node.sockets import established, port_of
from supervisors import Backoff

BUDGET = Budget("hello", 3, 0.1, 256)


def test_an_app_fits_until_cpu_or_memory_runs_out() -> None:
    assert decline_reason(usage([(0.1, 256), (0.1, 256)]), BUDGET, 0.3, 1024) is None
    reason = decline_reason(usage([(0.1, 256)] * 3), BUDGET, 0.3, 2048)
    assert reason == "node capacity: cpu 0.3+0.1/0.3, mem 768+256/2048 MB"
    assert decline_reason(Usage(0.0, 900), BUDGET, 4.0, 1024) is not None


@given(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 4096)), max_size=8),
       st.floats(0.1, 8), st.integers(256, 8192))
def test_placing_what_fits_never_exceeds_the_nodes_capacity(
        apps: list[tuple[float, int]], cpu: float, mem: int) -> None:
    placed: list[tuple[float, int]] = []
    for c, m in apps:
        if decline_reason(usage(placed), Budget("a", 1, c, m), cpu, mem) is None:
            placed.append((c, m))
    total = usage(placed)
    assert total.cpu <= cpu + 1e-6 and total.mem <= mem


def test_an_app_without_a_budget_gets_the_default_one() -> None:
    plan = Plan(app="hello", digest="e" * 64, min=1, max=2, warmup=0.0, timeout=10.0)
    assert default_budget(plan) == Budget("hello", 2, 0.1, 256)


def test_intensity_lets_backoff_reach_its_cap() -> None:
    settings = NodeSettings(cpu=1.0, mem_mb=1024, health_interval=1.0, health_timeout=1.0,
                            health_failures=3, sample_interval=1.0, stop_grace=5.0,
                            backoff=Backoff(base=0.1, cap=30.0), startup_deadline=30.0,
                            intensity=5, period=30.0, output_max_bytes=1 << 20,
                            output_files=5, output_keep=5, exec_checks_parallel=4,
                            isolation=None)
    assert backoff_intensity(settings) > 5


def test_established_counts_connections_to_a_port() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert established(port) == 0
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            with accepted:
                assert established(port) >= 1  # the client's side (and the server's)
            client.close()
    assert port_of(f"http://127.0.0.1:{port}/x") == port
    assert port_of("http://nohost") is None


def test_node_settings_keep_no_default_of_their_own_for_what_the_config_sets() -> None:
    with_default = {f.name for f in dataclasses.fields(NodeSettings)
                    if f.default is not dataclasses.MISSING
                    or f.default_factory is not dataclasses.MISSING}
    assert with_default == {"probe_interval", "drain_grace", "host"}  # none is in the config
