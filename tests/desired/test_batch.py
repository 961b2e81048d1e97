"""The fabric's all-or-nothing batch (``apply``'s one write), on its real stores."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mycelium.fabric import Fabric, MemoryStore, Names, SqliteStore
from mycelium.fabric.batch import PlanMoved, moved_plans, next_plan
from mycelium.fabric.errors import BadPlan
from mycelium.messages import Budget, Plan, PlanVersion, PublishBatch, PublishPlan, SetBudget

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "multihost"))

A, B = "a" * 64, "b" * 64


def _plan(app: str, digest: str = A, **kw: Any) -> PublishPlan:
    return PublishPlan(app=app, digest=digest, budget=SetBudget(app, 1, 0.1, 64), **kw)


@pytest.fixture
def fabric(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    db = tmp_path / "fabric.db"
    ref = Fabric.start(Names(), lambda: SqliteStore(db), ("node-1",))
    yield ref, db
    ref.stop()


def _plans(ref: Any) -> dict[str, Plan]:
    from mycelium.messages import GetPlans, from_wire

    reply = ref.ask(GetPlans())
    return {p.app: p for p in (from_wire(w) for w in reply["plans"])}


def test_a_batch_publishes_and_stops_in_one_durable_write(fabric: tuple[Any, Path]) -> None:
    ref, db = fabric
    ref.ask(PublishBatch(plans=(_plan("x"), _plan("y")),
                         expect=(PlanVersion("x", 0), PlanVersion("y", 0))))
    gens = {a: p.generation for a, p in _plans(ref).items()}
    reply = ref.ask(PublishBatch(plans=(_plan("x", B, max=2),), stops=("y",),
                                 expect=(PlanVersion("x", gens["x"]), PlanVersion("y", gens["y"]))))
    assert [p["app"] for p in reply["plans"]] == ["x"] and reply["stopped"] == ["y"]
    after = _plans(ref)
    assert set(after) == {"x"} and after["x"].digest == B and after["x"].previous == A
    stored = SqliteStore(db).load()
    assert stored.plans == after and stored.budgets["x"] == Budget("x", 1, 0.1, 64)


def test_a_moved_plan_refuses_the_whole_batch(fabric: tuple[Any, Path]) -> None:
    ref, _ = fabric
    ref.ask(_plan("x"))
    seen = _plans(ref)["x"].generation
    ref.ask(_plan("x", max=2))  # a deploy in between
    before = _plans(ref)
    with pytest.raises(PlanMoved, match=r"x moved from generation \d+ to \d+") as caught:
        ref.ask(PublishBatch(plans=(_plan("y"), _plan("x", B)),
                             expect=(PlanVersion("x", seen), PlanVersion("y", 0))))
    assert caught.value.exit_code == 1 and _plans(ref) == before


def test_one_bad_plan_refuses_the_whole_batch(fabric: tuple[Any, Path]) -> None:
    ref, _ = fabric
    with pytest.raises(BadPlan, match="min 3 is greater than --max 1"):
        ref.ask(PublishBatch(plans=(_plan("y"), _plan("x", min=3)), expect=()))
    with pytest.raises(BadPlan, match="names app 'y' twice"):
        ref.ask(PublishBatch(plans=(_plan("y"),), stops=("y",)))
    with pytest.raises(BadPlan, match="no plan for app 'z'"):
        ref.ask(PublishBatch(plans=(_plan("y"),), stops=("z",)))
    assert _plans(ref) == {}


def test_moved_plans_and_next_plan_are_pure() -> None:
    old = Plan("x", A, 1, 1, 0.0, 60.0, generation=4)
    assert moved_plans({"x": old}, [PlanVersion("x", 4), PlanVersion("y", 0)]) == []
    assert moved_plans({"x": old}, [PlanVersion("x", 3), PlanVersion("y", 2)]) == [
        "x moved from generation 3 to 4", "y was stopped"]
    assert moved_plans({"x": old}, [PlanVersion("x", 0)]) == ["x was deployed (generation 4)"]
    plan, budget = next_plan(PublishPlan("x", B, max=3), old, None, 7, 1.5)
    assert (plan.previous, plan.generation, plan.published_at) == (A, 7, 1.5)
    assert budget == Budget("x", 3, 0.1, 256)


def test_the_memory_store_checks_what_it_is_told_to_expect() -> None:
    store = MemoryStore()
    old = Plan("x", A, 1, 1, 0.0, 60.0, generation=1)
    assert store.save_batch([(old, None)], [], {"x": None})
    assert not store.save_batch([(Plan("y", A, 1, 1, 0.0, 60.0), None)], [], {"x": None})
    assert store.load().plans == {"x": old}


def test_etcd_refuses_a_batch_whose_member_view_is_stale(tmp_path: Path) -> None:
    from etcd_helpers import EtcdServer, etcd_binary

    from mycelium.fabric.etcd import connect

    etcd_binary()  # skips where etcd is missing (fails under CI)
    (tmp_path / "etcd").mkdir()
    server = EtcdServer(tmp_path / "etcd" / "data").start()
    a = connect(server.url, "a", "home-a", ttl=2.0)
    b = connect(server.url, "b", "home-b", ttl=2.0)
    try:
        seen = Plan("x", A, 1, 1, 0.0, 60.0, generation=1)
        a.save(seen, None)
        newer = Plan("x", B, 1, 1, 0.0, 60.0, generation=2)
        assert b.save_batch([(newer, Budget("x", 1, 0.1, 64))], [], {"x": seen})
        mine = Plan("x", A, 1, 3, 0.0, 60.0, generation=2)
        assert not a.save_batch([(mine, None), (Plan("y", A, 1, 1, 0.0, 60.0), None)], [],
                                {"x": seen, "y": None})  # a's view of x is stale
        assert a.load().plans == {"x": newer}
        assert a.save_batch([], ["x"], {"x": newer}) and a.load().plans == {}
    finally:
        a.close()
        b.close()
        server.kill()
