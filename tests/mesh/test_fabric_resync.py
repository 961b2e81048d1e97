"""A restarted fabric's re-sync with its agents, when an agent restarts at the same moment.

The fabric asks each node's agent what runs there (``FabricRestarted`` → ``AgentSync``) and
grants nothing until every node answered. An agent that crashed with the fabric may lose the
question in its dying mailbox, or start after the fabric asked; and it knows its adopted
instances only once each has reported again. The pure parts first (no threads), then the real
fabric and agents in one process, then a real mesh.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pykka
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mesh_helpers import MeshProcess, cli, wait_until

from mycelium.fabric import Fabric, MemoryStore, Names
from mycelium.fabric import fabric as fabric_module
from mycelium.fabric.sync_wait import SyncWait
from mycelium.mesh.tree import node_settings
from mycelium.messages import AgentSync, Crash, GetInfo, InstanceInfo
from mycelium.node.agent import Agent
from mycelium.node.resync import SyncAnswer, complete
from mycelium.operator.config import MeshConfig
from mycelium.states import InstanceState

NODES = ("node-1", "node-2", "node-3")


# -- the fabric's wait (pure) ---------------------------------------------------------------


@given(st.lists(st.tuples(st.sampled_from(["ask", "answer"]), st.sampled_from(NODES)),
                max_size=12))
def test_the_wait_ends_when_the_last_node_answers_and_owes_plans_to_who_asked(
        events: list[tuple[str, str]]) -> None:
    wait = SyncWait()
    wait.begin(NODES)
    answered: set[str] = set()
    asked: set[str] = set()
    for kind, node in events:
        if not wait:
            break
        if kind == "ask":
            assert wait.asked(node)  # its plans wait for the end of the wait
            asked.add(node)
        else:
            last = wait.answered(node)
            answered.add(node)
            assert last == (answered == set(NODES))
            assert not wait.answered(node)  # a second answer ends nothing
    if answered == set(NODES):
        assert not wait and wait.waiting == set()
    else:
        assert wait.waiting == set(NODES) - answered
    assert wait.end() == sorted(asked)
    assert not wait and not wait.asked("node-1") and wait.end() == []


# -- the agent's answer (pure) ------------------------------------------------------------


@dataclass
class _Here:
    children: dict[str, Any] = field(default_factory=dict)
    infos: dict[str, InstanceInfo] = field(default_factory=dict)


def _info(child: str) -> InstanceInfo:
    return InstanceInfo(f"hello@node-1#{child}", "hello", "node-1", "d" * 64,
                        InstanceState.READY, child, pid=7)


def test_an_agent_answers_once_every_adopted_instance_has_reported() -> None:
    told: list[Any] = []
    answer = SyncAnswer("node-1", told.append)
    apps = {"hello": _Here(children={"a": object(), "b": object()})}
    assert not complete(apps)
    assert not answer.owe(apps) and told == []  # it would say the node runs nothing
    apps["hello"].infos["a"] = _info("a")
    assert not answer.answer(apps) and told == []
    apps["hello"].infos["b"] = _info("b")
    assert answer.answer(apps)
    assert told == [AgentSync("node-1", ("hello",), (_info("a"), _info("b")))]
    assert answer.answer(apps) and len(told) == 1  # owed once, answered once


def test_an_agent_whose_instances_stay_silent_answers_what_it_knows_when_forced() -> None:
    told: list[Any] = []
    answer = SyncAnswer("node-1", told.append)
    apps = {"hello": _Here(children={"a": object()}), "idle": _Here()}
    assert not answer.owe(apps)
    assert answer.answer(apps, force=True)
    assert told == [AgentSync("node-1", ("hello", "idle"), ())]
    assert SyncAnswer("node-2", told.append).owe({}) and told[-1] == AgentSync("node-2", (), ())


# -- the real fabric and agents, in one process ----------------------------------------------


class _Dying(pykka.ThreadingActor):
    """An agent that has crashed but not yet left: what it is told is lost with it."""

    def on_receive(self, message: Any) -> None:
        return None


def _fabric_info(ref: pykka.ActorRef[Any]) -> dict[str, Any]:
    info: dict[str, Any] = ref.ask(GetInfo(), block=True)
    return info


@pytest.fixture
def actors() -> Iterator[list[pykka.ActorRef[Any]]]:
    refs: list[pykka.ActorRef[Any]] = []
    yield refs
    for ref in reversed(refs):
        ref.stop()


@pytest.mark.timeout(60)
def test_agents_that_missed_a_restarted_fabrics_question_are_asked_again(
        actors: list[pykka.ActorRef[Any]], tmp_path: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fabric_module, "SYNC_GRACE", 60.0)  # only the answers end this wait
    names = Names()
    dying = _Dying.start()
    actors.append(dying)
    names.register("node-1", dying)  # node-2 has no agent at all: it is between two
    fabric = Fabric.start(names, MemoryStore, ("node-1", "node-2"))
    actors.append(fabric)
    assert _fabric_info(fabric)["syncing"] == ["node-1", "node-2"]
    dying.stop()
    settings = node_settings(MeshConfig())

    def no_spores(_digest: str) -> Any:
        raise AssertionError("no plan, so no spore")

    for node in ("node-1", "node-2"):  # each registers and asks for its plans
        actors.append(Agent.start(node, names, settings, no_spores, no_spores, tmp_path, None))
    wait_until(lambda: _fabric_info(fabric)["syncing"] == [], 30, "every agent answered")
    assert _fabric_info(fabric)["plans"] == 0


# -- a real mesh ----------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_an_agent_crashing_with_the_fabric_keeps_its_instances_where_they_run(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    assert cli(mesh.home, "deploy", "hello", digests["hello"], "--max", "3").returncode == 0
    before = {i["node"]: i["pid"] for i in mesh.ready("hello", 3)}

    def known() -> dict[str, int] | None:
        if mesh.client.ask("fabric", GetInfo())["syncing"]:
            return None
        now = {i["node"]: i["pid"] for i in mesh.app("hello")["instances"]
               if i["state"] == "Ready"}
        return now if len(now) == 3 else None

    for round_ in range(4):  # the two crashes race differently each round
        mesh.client.tell("node-1", Crash())
        mesh.client.tell("fabric", Crash())
        assert wait_until(known, 30, f"round {round_}: the fabric knows hello again") == before
