"""Two members (separate processes and homes) joined to one real etcd.

What they promise: docs/reference.md#multi-machine.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_helpers import (
    EtcdServer,
    MemberProcess,
    answers,
    free_port,
    get,
    kill_workloads,
    two_homes,
    wait_for,
)

from mycelium.fabric import Names
from mycelium.fabric.switch import ClaimSwitch
from mycelium.home import Home
from mycelium.member import Member
from mycelium.mesh import LocalFabric
from mycelium.operator.control import ControlError
from mycelium.spores import Limits, Repo, publish

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello" / "hello"
TTL = 2.0


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    """Home a (publishes hello, signed by a's key) and home b (trusts a's key only)."""
    with two_homes(tmp_path) as (a, b):
        digest = publish(a, binary=HELLO, manifest={"name": "hello", "version": "1.0.0"})
        yield a.root, b.root, digest


def seen_nodes(edge: str, n: int) -> set[str]:
    """The nodes that answered ``n`` GETs of hello through ``edge``."""
    return answers(f"{edge}/hello/", "node", n)


@pytest.mark.timeout(90)
def test_members_place_route_fail_over_and_converge(
        etcd: EtcdServer, homes: tuple[Path, Path, str]) -> None:
    home_a, home_b, digest = homes
    a = MemberProcess(home_a, etcd.url, "a", ttl=TTL)
    b = MemberProcess(home_b, etcd.url, "b", ttl=TTL)
    members = {"a": a, "b": b}
    try:
        # placement across members; the spore published on a is fetched and verified by b
        a.placeable(4)
        a.client.request("deploy", app="hello", digest=digest, min=1, max=3)
        ready = wait_for(lambda: len(r := b.instances("hello")) == 3 and r, 30.0, "3 Ready")
        placed = {i["node"] for i in ready}
        assert {n[0] for n in placed} == {"a", "b"}, placed  # 3 instances on 2+2 nodes
        assert Repo(Path(home_b) / "repo").has(digest)
        assert set(b.nodes()) == {"a-1", "a-2", "b-1", "b-2"}
        # max_instances holds across members: never a 4th instance
        assert len(a.instances("hello")) == 3
        # routing from either edge reaches every member's instances
        for edge in (a.url, b.url):
            wait_for(lambda edge=edge: seen_nodes(edge, 6) == placed, 10.0, "round robin")

        # kill -9 the member holding most instances: its endpoints leave the other edge
        # after the lease expires, its nodes show lost, the plan is re-placed on live nodes
        victim = max(members.values(), key=lambda m: sum(n.startswith(m.prefix + "-")
                                                         for n in placed))
        survivor = b if victim is a else a
        lost = {n for n in placed if n.startswith(victim.prefix + "-")}
        victim.kill9()
        killed_at = time.monotonic()
        wait_for(lambda: not (seen_nodes(survivor.url, 4) & lost), TTL + 3.0,
                 "the dead member's endpoints to leave the surviving edge")
        gone_after = time.monotonic() - killed_at
        assert gone_after <= TTL + 2.0, gone_after
        assert {n: s for n, s in survivor.nodes().items() if n.startswith(victim.prefix)} == \
            {f"{victim.prefix}-1": "lost", f"{victim.prefix}-2": "lost"}
        # re-placed on the survivor's 2 nodes, many per node: all 3 again, spread first
        moved = wait_for(lambda: len(r := survivor.instances("hello")) == 3 and r, 20.0,
                         "re-placement")
        assert sorted(Counter(i["node"] for i in moved).values()) == [1, 2]
        assert {i["node"][0] for i in moved} == {survivor.prefix}
        assert seen_nodes(survivor.url, 4) <= {f"{survivor.prefix}-1", f"{survivor.prefix}-2"}

        # the member comes back: it reaps what it left, rejoins, and the mesh converges
        back = MemberProcess(victim.home, etcd.url, victim.prefix, ttl=TTL)
        members[victim.prefix] = back
        back.wait_line("reaped", 60.0)  # at once, or at the takeover if it adopted its edge
        wait_for(lambda: set(back.nodes().values()) == {"up"}, 10.0, "every node up")
        # what runs stays where it is; one more instance goes to the returned member's node
        a.client.request("deploy", app="hello", digest=digest, min=4, max=4)
        live = wait_for(lambda: len(r := back.instances("hello")) == 4 and r, 20.0,
                        "4 Ready after the return")
        assert Counter(i["node"] for i in live) - Counter(i["node"] for i in moved) == \
            Counter({f"{back.prefix}-1": 1})
        every = [i for app in back.status()["apps"] for i in app["instances"]]
        assert len(every) == 4, every  # no orphan endpoint of the previous life

        # kill signals only the member's own workloads (a pid means nothing on another host)
        theirs = next(i for i in every if not i["node"].startswith(back.prefix))
        with pytest.raises(ControlError, match="not on this member"):
            back.client.request("kill", app="hello", node=theirs["node"], signal=0)
        pids = back.client.request("kill", app="hello", signal=0)
        assert sorted(pids) == sorted(i["pid"] for i in every
                                      if i["node"].startswith(back.prefix))

        # a stop through any member stops the app everywhere
        survivor.client.request("stop", app="hello")
        wait_for(lambda: not [i for a in back.status()["apps"] for i in a["instances"]],
                 20.0, "every instance to stop")
        # a member that leaves gracefully: its nodes show down (not lost) on the others
        assert survivor.stop() == 0
        wait_for(lambda: {n: s for n, s in back.nodes().items()
                          if n.startswith(survivor.prefix)} == {
                     f"{survivor.prefix}-1": "down", f"{survivor.prefix}-2": "down"},
                 10.0, "the graceful member's nodes to show down")
    finally:
        for m in members.values():
            m.stop()


@pytest.mark.timeout(60)
def test_a_member_cut_off_past_its_lease_gives_back_what_was_replaced(
        etcd: EtcdServer, homes: tuple[Path, Path, str]) -> None:
    home_a, home_b, digest = homes
    a = MemberProcess(home_a, etcd.url, "a", ttl=TTL)
    b = MemberProcess(home_b, etcd.url, "b", ttl=TTL, edge=False)
    assert "mesh up: no edge, 2 nodes (b-1, b-2)" in b.wait_line("mesh up")
    try:
        b.placeable(4)
        b.client.request("deploy", app="hello", digest=digest, min=1, max=2)  # b fetches it
        placed = wait_for(lambda: len(r := a.instances("hello")) == 2 and r, 30.0, "2 Ready")
        count = {m: sum(i["node"].startswith(m.prefix) for i in placed) for m in (a, b)}
        frozen = a if count[a] >= count[b] else b
        other = b if frozen is a else a
        frozen.proc.send_signal(signal.SIGSTOP)  # cut off: its workloads keep running
        try:
            wait_for(lambda: len(r := other.instances("hello")) == 2 and all(
                i["node"].startswith(other.prefix) for i in r), 20.0, "re-placement")
        finally:
            frozen.proc.send_signal(signal.SIGCONT)
        frozen.wait_line("lease had expired", 15.0)
        # the returning member stops what it ran on slots now held elsewhere
        wait_for(lambda: [i["node"][0] for i in frozen.instances("hello")] == [other.prefix] * 2
                 and set(frozen.nodes().values()) == {"up"}, 20.0, "convergence")
        wait_for(lambda: not [i for i in frozen.status()["apps"][0]["instances"]
                              if i["node"].startswith(frozen.prefix)], 20.0,
                 "the cut-off member's instances to stop")
    finally:
        for m in (a, b):
            m.proc.send_signal(signal.SIGCONT)
            m.stop()


@pytest.mark.timeout(60)
def test_etcd_lost_while_running_keeps_serving(
        etcd: EtcdServer, homes: tuple[Path, Path, str]) -> None:
    home_a, _home_b, digest = homes
    a = MemberProcess(home_a, etcd.url, "solo", nodes=1, ttl=TTL)
    try:
        a.client.request("deploy", app="hello", digest=digest, min=1, max=1)
        wait_for(lambda: a.instances("hello"), 20.0, "hello Ready")
        etcd.kill()
        a.wait_line("etcd unreachable", 10.0)
        for _ in range(20):
            assert get(f"{a.url}/hello/")[0] == 200
        assert a.status()["fabric"]["etcd"] == "unreachable"
        etcd.start()
        a.wait_line("etcd reachable again", 15.0)
        assert a.status()["fabric"]["etcd"] == "connected"
        assert get(f"{a.url}/hello/")[0] == 200
        assert a.stop() == 0
    finally:
        a.stop()


def test_etcd_down_at_start_is_one_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mycelium", "up", "--home", str(tmp_path / "h"), "--fabric",
         f"etcd://127.0.0.1:{free_port()}", "--node-prefix", "x"],
        capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot reach the fabric at etcd://127.0.0.1:")
    assert proc.stderr.count("\n") == 1, proc.stderr


@pytest.mark.timeout(60)
def test_a_planned_spore_outlives_the_member_that_published_it(
        etcd: EtcdServer, homes: tuple[Path, Path, str]) -> None:
    home_a, home_b, digest = homes
    a = MemberProcess(home_a, etcd.url, "a", nodes=1, ttl=TTL)
    members = [a]
    try:
        a.client.request("deploy", app="hello", digest=digest, min=1, max=1)
        wait_for(lambda: a.instances("hello"), 20.0, "hello Ready on a")
        b = MemberProcess(home_b, etcd.url, "b", nodes=1, ttl=TTL)
        members.append(b)
        # b runs nothing (max 1 is taken) but keeps a verified copy of the planned spore
        wait_for(lambda: Repo(Path(home_b) / "repo").has(digest), 10.0, "b's prefetch")
        assert [i["node"] for i in b.instances("hello")] == ["a-1"]
        a.kill9()
        kill_workloads(home_a)  # the machine is gone, spore server and workloads included
        wait_for(lambda: [i["node"] for i in b.instances("hello")] == ["b-1"], TTL + 15.0,
                 "hello re-placed on b from its own copy")
    finally:
        for m in members:
            m.stop()


@pytest.mark.parametrize("mode", ["local", "etcd"])
def test_rollout_parallel_reaches_the_fabric_in_both_modes(
        mode: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """``[rollout] parallel`` goes through the backend's one fabric-building method: two nodes
    may switch at once with parallel = 2, a third waits, on one machine as in etcd mode."""
    home = Home(tmp_path / "h").ensure()
    repo = Repo(home.repo)
    backend: LocalFabric | Member
    if mode == "local":
        backend = LocalFabric(home, 3)
    else:
        etcd = request.getfixturevalue("etcd")
        backend = Member(home, Limits.from_mb(64, 64), 3, fabric=etcd.url, node_prefix="p")
    lines: list[str] = []
    backend.open(repo, lines.append)
    try:
        ref = backend.fabric_child(Names(), repo, parallel=2).start()
        try:
            nodes = backend.node_names
            granted = [ref.ask(ClaimSwitch("hello", node), timeout=10.0) for node in nodes]
            assert granted == [True, True, False]
        finally:
            ref.stop()
    finally:
        backend.close()
