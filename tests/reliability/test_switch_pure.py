"""The switch gate alone (pure): at most ``parallel`` nodes switch an app, leases expire."""

from __future__ import annotations

from mycelium.cli.mesh_tools import chaos_summary
from mycelium.fabric.switch import SwitchGate


def test_at_most_parallel_nodes_switch_and_a_holder_may_ask_again() -> None:
    gate = SwitchGate()
    assert gate.claim("web", "node-1", 1, now=0.0, lease=10.0)
    assert not gate.claim("web", "node-2", 1, now=0.0, lease=10.0)
    assert gate.claim("web", "node-1", 1, now=1.0, lease=10.0)  # idempotent for the holder
    assert gate.claim("api", "node-2", 1, now=0.0, lease=10.0)  # per app
    gate.release("web", "node-1")
    assert gate.claim("web", "node-2", 1, now=2.0, lease=10.0)
    assert gate.claim("web", "node-3", 2, now=2.0, lease=10.0)
    assert gate.holders("web") == ["node-2", "node-3"]


def test_a_lost_holder_loses_the_switch_after_its_lease_and_stop_forgets() -> None:
    gate = SwitchGate()
    assert gate.claim("web", "node-1", 1, now=0.0, lease=5.0)
    assert not gate.claim("web", "node-2", 1, now=4.9, lease=5.0)
    assert gate.claim("web", "node-2", 1, now=5.0, lease=5.0)
    gate.forget("web")
    assert gate.holders("web") == []


def test_a_node_refused_a_switch_is_told_once_when_a_holder_releases_it() -> None:
    from mycelium.fabric.switch import SwitchBook, SwitchFreed

    told: list[tuple[str, object]] = []
    book = SwitchBook(SwitchGate(), 1, lambda node, message: told.append((node, message)))
    assert book.claim("web", "node-1", 10.0)
    assert not book.claim("web", "node-2", 10.0)
    assert not book.claim("web", "node-3", 10.0)
    assert not book.claim("web", "node-2", 10.0)  # asked again: still told once
    book.release("api", "node-1")  # another app's release frees nothing of web's
    assert told == []
    book.release("web", "node-1")
    assert told == [("node-2", SwitchFreed("web")), ("node-3", SwitchFreed("web"))]
    assert book.claim("web", "node-2", 10.0)
    assert not book.claim("web", "node-3", 10.0)
    book.forget("web")  # the app was stopped: its waiters are forgotten with it
    book.release("web", "node-2")
    assert len(told) == 2


def test_a_nodes_switch_ends_once_every_blue_it_keeps_is_being_stopped() -> None:
    from mycelium.messages import Plan
    from mycelium.node.rollout import ChildView, switched

    plan = Plan(app="web", digest="e" * 64, min=1, max=1, warmup=0.0, timeout=10.0,
                generation=2, published_at=0.0, previous="b" * 64, secrets=1)
    blue = ChildView("blue", "b" * 64, "Ready", 0.0, 0.5)
    green = ChildView("green", "e" * 64, "Ready", 1.0, 1.2, secrets=1)
    old_secrets = ChildView("old", "e" * 64, "Ready", 0.0, 0.5, secrets=0)
    assert not switched(plan, {"blue": blue, "green": green}, ())
    assert switched(plan, {"blue": blue, "green": green}, {"blue"})  # draining: it left
    assert not switched(plan, {"old": old_secrets, "green": green}, ())  # same digest, old count
    assert switched(plan, {"green": green}, ())


def test_chaos_summary_percentiles() -> None:
    doc = chaos_summary(4, [0.3, 0.1, 0.2, 0.4])
    assert doc == {"kills": 4, "recoveries": 4, "slowest_ms": 400.0, "p50_ms": 200.0,
                   "p99_ms": 400.0}
    assert chaos_summary(0, [])["p99_ms"] == 0.0


def test_a_failed_probe_during_warmup_starts_the_warmup_again() -> None:
    from mycelium.messages import Plan
    from mycelium.node.rollout import ChildView, Stop, WakeAt, step

    p = Plan(app="web", digest="e" * 64, min=1, max=1, warmup=1.0, timeout=10.0, generation=2,
             published_at=0.0, previous="b" * 64)
    blue = ChildView("blue", "b" * 64, "Ready", 0.0, 0.5)
    assert step(p, [blue, ChildView("green", "e" * 64, "Ready", 1.0, 1.2)], 2.3) == [
        Stop("blue")]
    # the instance moved ready_at to its failed probe at 2.0: warmup runs until 3.0
    assert step(p, [blue, ChildView("green", "e" * 64, "Ready", 1.0, 2.0)], 2.3) == [
        WakeAt(3.0)]
