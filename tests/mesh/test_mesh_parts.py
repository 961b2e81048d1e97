"""The mesh's parts on their own: the deploy and kill decisions (pure), the home lock, the log
sink (a real thread, a real file), and the mesh-wide ``[rollout] timeout`` through a real ``up``."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mesh_helpers import MeshProcess, cli, wait_until

from mycelium.defaults import DeployDefaults
from mycelium.fabric.errors import BadPlan
from mycelium.home import Home
from mycelium.mesh import HomeLock, KillScope, LocalFabric, LogSink, MeshLocked
from mycelium.mesh.ops import deploy_plan, kill_targets
from mycelium.messages import PublishPlan, SetBudget
from mycelium.operator import SupervisionLog
from mycelium.operator.control import ControlError
from supervisors import Report
from tests.meshkit import stopped_cleanly

DIGEST = "d" * 64


# -- deploy: what a request means ---------------------------------------------------------


def test_a_bare_deploy_takes_every_default_and_the_meshs_rollout_timeout() -> None:
    plan = deploy_plan({"app": "hello"}, DIGEST, manifest_warmup=2.5, rollout_timeout=7.0)
    assert plan == PublishPlan(
        app="hello", digest=DIGEST, min=DeployDefaults.MIN, max=DeployDefaults.MAX, warmup=2.5,
        timeout=7.0, budget=SetBudget(app="hello", max_instances=DeployDefaults.MAX,
                                      cpu=DeployDefaults.CPU, mem=DeployDefaults.MEM))


def test_a_null_field_is_a_missing_one_and_given_fields_win() -> None:
    req: dict[str, Any] = {"app": "hello", "min": 2, "max": 3, "max_instances": None,
                           "cpu": 0.5, "mem": None, "warmup": 0.0, "rollout_timeout": 9.0}
    plan = deploy_plan(req, DIGEST, manifest_warmup=2.5, rollout_timeout=7.0)
    assert (plan.min, plan.max, plan.warmup, plan.timeout) == (2, 3, 0.0, 9.0)
    assert plan.budget == SetBudget(app="hello", max_instances=3, cpu=0.5,
                                    mem=DeployDefaults.MEM)


@pytest.mark.parametrize("req", [{"app": "Bad"}, {"app": "a", "min": 2, "max": 1},
                                 {"app": "a", "rollout_timeout": 0}, {"app": "a", "cpu": -1}])
def test_a_bad_deploy_request_is_refused(req: dict[str, Any]) -> None:
    with pytest.raises(BadPlan):
        deploy_plan(req, DIGEST, manifest_warmup=0.0, rollout_timeout=60.0)


# -- kill: which pids ---------------------------------------------------------------------

STATES = ("Launching", "Ready", "Draining", "Stopped", "Failed")
instances = st.lists(st.tuples(st.sampled_from(["a-1", "a-2", "b-1"]), st.sampled_from(STATES),
                               st.integers(0, 50)), max_size=12)


def status_of(insts: list[tuple[str, str, int]]) -> dict[str, Any]:
    return {"apps": [{"app": "hello", "instances": [
        {"node": node, "state": state, "pid": pid} for node, state, pid in insts]}]}


@given(instances, st.sampled_from([None, "a-1", "a-2"]))
def test_kill_signals_exactly_the_running_instances_in_scope(
        insts: list[tuple[str, str, int]], node: str | None) -> None:
    scope = KillScope(frozenset({"a-1", "a-2"}), "a")
    want = [pid for n, state, pid in insts if pid and state in ("Launching", "Ready")
            and (n == node if node else n.startswith("a-"))]
    if want:
        assert kill_targets(status_of(insts), "hello", node, scope) == want
    else:
        with pytest.raises(ControlError, match="no running instance of hello"):
            kill_targets(status_of(insts), "hello", node, scope)


def test_kill_refuses_another_members_node_and_names_the_member() -> None:
    status = status_of([("b-1", "Ready", 42)])
    with pytest.raises(ControlError, match="node b-1 is not on this member"):
        kill_targets(status, "hello", "b-1", KillScope(frozenset({"a-1"}), "a"))
    with pytest.raises(ControlError, match=r"on this member \(a\)"):
        kill_targets(status, "hello", None, KillScope(frozenset({"a-1"}), "a"))
    assert kill_targets(status, "hello", None, KillScope()) == [42]


# -- the home lock and the log sink -------------------------------------------------------


def test_one_home_one_lock(tmp_path: Path) -> None:
    home = Home(tmp_path / "home").ensure()
    first, second = HomeLock(home), HomeLock(home)
    first.acquire()
    try:
        with pytest.raises(MeshLocked, match=r"already running .* \(pid \d+\)"):
            second.acquire()
        assert not second.held
    finally:
        first.release()
    second.acquire()
    second.release()
    second.release()  # idempotent


def test_the_log_sink_writes_streams_and_prints_every_report(tmp_path: Path) -> None:
    home = Home(tmp_path / "home").ensure()
    lines: list[str] = []
    seen: list[dict[str, Any]] = []
    got_one = threading.Event()

    def subscriber(record: dict[str, Any]) -> None:
        seen.append(record)
        got_one.set()

    sink = LogSink(home, 1 << 20, 1, lines.append)
    sink.start()
    sink.subscribe(subscriber)
    sink.report(Report(time.time(), "child_started", "mesh/nodes/n-1/apps", "hello",
                       extra={"app": "hello", "pid": 7}))
    assert got_one.wait(10.0)
    sink.unsubscribe(subscriber)
    sink.report(Report(time.time(), "child_terminated", "mesh", "edge", reason="boom"))
    sink.close()  # writes what is queued first
    records = list(SupervisionLog(home).read())
    assert [(r["event"], r["app"]) for r in records] == [("child_started", "hello"),
                                                         ("child_terminated", None)]
    assert records[0]["pid"] == 7
    assert len(seen) == 1 and len(lines) == 2
    sink.close()  # idempotent


def test_the_local_backend_names_its_nodes_and_kills_everywhere(tmp_path: Path) -> None:
    backend = LocalFabric(Home(tmp_path / "home"), 3)
    assert backend.node_names == ("node-1", "node-2", "node-3")
    assert backend.with_edge and backend.kill_scope == KillScope()


# -- [rollout] timeout is the mesh-wide default of deploy --timeout -----------------------


def test_the_configured_rollout_timeout_is_deploys_default(
        home: Path, digests: dict[str, str]) -> None:
    (home / "mycelium.toml").write_text("[rollout]\ntimeout = 7.5\n")
    mesh = MeshProcess(home, nodes=1)
    with stopped_cleanly(mesh, home):
        def timeout_of(app: str) -> float:
            return float(mesh.app(app)["timeout"])

        # the fast path (plain decimals) and the Typer path (an exponent sends it there)
        for args in (("--no-wait",), ("--no-wait", "--cpu", "1e-1")):
            result = cli(home, "deploy", "hello", digests["hello"], *args)
            assert result.returncode == 0, result.stderr
            assert wait_until(lambda: timeout_of("hello") == 7.5, what="timeout 7.5")
            result = cli(home, "deploy", "hello", digests["hello"], *args, "--timeout", "9")
            assert result.returncode == 0, result.stderr
            assert wait_until(lambda: timeout_of("hello") == 9.0, what="timeout 9")
        result = cli(home, "deploy", "hello", digests["hello"])  # waits on the mesh's deadline
        assert result.returncode == 0, result.stderr
        assert timeout_of("hello") == 7.5
