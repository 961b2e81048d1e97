"""The data plane outlives the control plane: edge workers keep serving after a kill -9 of the
mesh, the next ``up`` adopts them without a failed request, ``down`` stops everything."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from edge_helpers import table
from edge_mesh import ENV, EdgeMesh, cli, wait_until

from mycelium.edge.handover import (
    Legacy,
    WorkerRecord,
    live_records,
    merge_legacy,
    orphan_should_exit,
    remaining_legacy,
)
from mycelium.edge.worker import routes_to_wire
from tests.meshkit import edge_worker_pids, workload_pids

# -- the pure decisions ----------------------------------------------------------------------


def test_legacy_endpoints_are_added_until_the_app_has_as_many_of_its_own():
    legacy = table(hello=["http://127.0.0.1:1", "http://127.0.0.1:2"], gone=["http://127.0.0.1:3"])
    none_yet = table(hello=[])
    merged = merge_legacy(none_yet, legacy)
    assert [ep.url for ep in merged["hello"].endpoints] == ["http://127.0.0.1:1",
                                                            "http://127.0.0.1:2"]
    assert "gone" in merged
    one = table(hello=["http://127.0.0.1:9"])
    left = remaining_legacy(one, legacy)
    assert set(left) == {"hello", "gone"}
    assert [ep.url for ep in merge_legacy(one, left)["hello"].endpoints] == [
        "http://127.0.0.1:9", "http://127.0.0.1:1", "http://127.0.0.1:2"]
    two = table(hello=["http://127.0.0.1:9", "http://127.0.0.1:8"], gone=["http://127.0.0.1:7"])
    assert not remaining_legacy(two, legacy)
    assert merge_legacy(two, remaining_legacy(two, legacy)) == two


def test_the_legacy_hands_over_once_with_every_old_url_and_never_comes_back():
    legacy = Legacy()
    old = table(hello=["http://127.0.0.1:1"], other=["http://127.0.0.1:2"])
    legacy.take({"version": 7, "routes": routes_to_wire(old)}, now=0.0)
    legacy.take({"version": 3, "routes": routes_to_wire(table(x=[]))}, now=0.0)  # older
    assert legacy.version == 7
    sent, handed = legacy.push(table(hello=["http://127.0.0.1:5"]), now=1.0)
    assert handed is None and set(sent) == {"hello", "other"}
    assert [ep.url for ep in sent["hello"].endpoints] == ["http://127.0.0.1:5"]
    sent, handed = legacy.push(table(hello=[]), now=2.0)  # hello's legacy is gone for good
    assert handed is None and sent["hello"].endpoints == ()
    sent, handed = legacy.push(table(other=["http://127.0.0.1:6"]), now=3.0)
    assert handed == ("http://127.0.0.1:1", "http://127.0.0.1:2") and not legacy
    assert legacy.push(table(), now=4.0) == (table(), None)


def test_the_legacy_expires_whatever_the_new_count():
    legacy = Legacy()
    legacy.take({"version": 1, "routes": routes_to_wire(table(a=["http://127.0.0.1:1"]))}, 0.0)
    assert not legacy.expired(legacy.until - 1)
    assert legacy.expired(legacy.until)
    sent, handed = legacy.push(table(a=[]), now=legacy.until)
    assert handed == ("http://127.0.0.1:1",) and sent == table(a=[])


def test_an_orphan_exits_when_its_home_is_gone_or_nobody_adopted_it_in_time():
    assert not orphan_should_exit(100.0, None, 10.0, run_dir_exists=False)  # it has a mesh
    assert not orphan_should_exit(105.0, 100.0, 10.0, run_dir_exists=True)
    assert orphan_should_exit(110.0, 100.0, 10.0, run_dir_exists=True)
    assert orphan_should_exit(100.5, 100.0, 10.0, run_dir_exists=False)


# -- real processes ---------------------------------------------------------------------------


class Load:
    """Client threads sending GET /hello/ through the edge, each on a new connection."""

    def __init__(self, port: int, threads: int = 2) -> None:
        self.port = port
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", "/hello/")
                resp = conn.getresponse()
                body = resp.read()
                failure = None if resp.status == 200 else f"{resp.status} {body[:80]!r}"
            except OSError as exc:
                failure = repr(exc)
            finally:
                conn.close()
            with self._lock:
                if failure is None:
                    self.ok += 1
                else:
                    self.failures.append(f"{time.time():.3f} {failure}")

    def served(self) -> int:
        with self._lock:
            return self.ok

    def more(self, n: int, timeout: float = 30.0) -> None:
        """Wait until ``n`` more requests succeeded."""
        goal = self.served() + n
        wait_until(lambda: self.served() >= goal, timeout, f"{n} more requests served")

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)


def _edge_workers(mesh: EdgeMesh) -> list[dict]:  # type: ignore[type-arg]
    tree = mesh.client.request("tree")
    return list(next(c for c in tree["children"] if c["id"] == "edge")["children"])


def _gone(pids: list[int]) -> bool:
    return not [p for p in pids if psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


@pytest.fixture
def worker_home(mesh_home: Path) -> Iterator[Path]:
    (mesh_home / "mycelium.toml").write_text("[edge]\nworkers = 2\n")
    yield mesh_home
    assert edge_worker_pids(mesh_home) == [], "edge workers survived the test"


@pytest.mark.timeout(240)
def test_kill9_of_the_mesh_under_load_fails_no_request_and_the_next_up_adopts_the_workers(
        worker_home: Path, hello_spores: tuple[Path, dict[str, str]]) -> None:
    mesh = EdgeMesh(worker_home, nodes=2)
    port = mesh.port
    load: Load | None = None
    try:
        deployed = cli(worker_home, "deploy", "hello", hello_spores[1]["hello"], "--min", "2",
                       "--max", "2")
        assert deployed.returncode == 0, deployed.stderr
        old = {i["pid"] for i in mesh.ready("hello", 2)}
        wait_until(lambda: all(w["routes_version"] > 0 for w in _edge_workers(mesh)), 10,
                   "both workers routed")
        workers = sorted(w["pid"] for w in _edge_workers(mesh))
        load = Load(port)
        load.more(50)
        mesh.kill9()  # the control plane is gone; the data plane is not
        load.more(200)
        dead = min(old)
        os.kill(dead, signal.SIGKILL)  # with no mesh: the workers eject it by themselves
        load.more(300)
        assert sorted(edge_worker_pids(worker_home)) == workers
        assert {r.pid for r in live_records(worker_home / "run")} == set(workers)

        mesh = EdgeMesh(worker_home, nodes=2, port=port)
        mesh.wait_line("adopting the edge workers of a previous mesh", 10)
        line = mesh.wait_line("once ours took over", 90)
        assert all(str(pid) in line for pid in old - {dead}), line
        new = {i["pid"] for i in mesh.ready("hello", 2)}
        assert not new & old and _gone(list(old))
        adopted = _edge_workers(mesh)
        assert sorted(w["pid"] for w in adopted) == workers  # the same processes
        assert all(w["status"] == "running" for w in adopted)
        mesh.wait_line("child_adopted worker-1", 10)
        load.more(200)
    finally:
        if load is not None:
            load.stop()
        code = mesh.stop()
    assert load is not None and load.failures == [], load.failures[:20]
    assert code == 0, "\n".join(mesh.lines[-30:])
    wait_until(lambda: _gone(workers), 10, "the adopted workers stopped by the shutdown")
    assert workload_pids(worker_home) == []
    assert not list((worker_home / "run").glob("edge-*.json"))


def _killed_with_hello(home: Path, digest: str) -> tuple[EdgeMesh, list[int]]:
    """A 1-node mesh on ``home`` serving hello, then killed with SIGKILL: the dead mesh (its
    port) and its edge workers' pids, as its tree showed them."""
    mesh = EdgeMesh(home, nodes=1)
    try:
        deployed = cli(home, "deploy", "hello", digest)
        assert deployed.returncode == 0, deployed.stderr
        mesh.ready("hello", 1)
        return mesh, [w["pid"] for w in _edge_workers(mesh)]
    finally:
        mesh.kill9()


@pytest.mark.timeout(180)
def test_down_after_a_kill9_stops_the_orphaned_workers_and_the_workloads(
        worker_home: Path, hello_spores: tuple[Path, dict[str, str]]) -> None:
    mesh, workers = _killed_with_hello(worker_home, hello_spores[1]["hello"])
    status = http.client.HTTPConnection("127.0.0.1", mesh.port, timeout=10)
    status.request("GET", "/hello/")
    assert status.getresponse().status == 200  # still served with no mesh
    status.close()
    down = cli(worker_home, "down")
    assert down.returncode == 0, down.stderr
    assert "2 edge worker(s) and 1 workload(s)" in down.stdout, down.stdout
    assert _gone(workers)
    assert workload_pids(worker_home) == []
    again = cli(worker_home, "down")  # nothing left: as with no mesh at all
    assert again.returncode == 1 and "no mesh running" in again.stderr


@pytest.mark.timeout(180)
def test_a_down_during_the_takeover_leaves_nothing_running(
        worker_home: Path, hello_spores: tuple[Path, dict[str, str]]) -> None:
    mesh, _ = _killed_with_hello(worker_home, hello_spores[1]["hello"])
    workers = edge_worker_pids(worker_home)
    mesh = EdgeMesh(worker_home, nodes=1, port=mesh.port)  # adopts, then at once:
    down = cli(worker_home, "down")
    assert down.returncode == 0, down.stderr
    assert mesh.proc.wait(30) == 0
    assert _gone(workers) and edge_worker_pids(worker_home) == []
    assert workload_pids(worker_home) == []


_POOL = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from mycelium.edge import EdgeConfig, Endpoint, Route, RouteTable
    from mycelium.edge.workers import EdgeWorkers
    access = sys.argv[3] == "access"
    pool = EdgeWorkers(EdgeConfig(port=0, edge_id="orphan-test", workers=2,
                                  run_dir=Path(sys.argv[1]), orphan_timeout=float(sys.argv[2]),
                                  access_log_home=Path(sys.argv[1]).parent if access else None))
    pool.start()
    urls = sys.argv[4:]
    if urls:
        v = pool.set_routes(RouteTable({"hello": Route("hello", tuple(
            Endpoint(u, f"hello#{i}") for i, u in enumerate(urls)))}))
        assert pool.wait_applied(v, 10)
    print(pool.port, " ".join(str(w["pid"]) for w in pool.describe()), flush=True)
    threading.Event().wait()
""")


def _orphans(run_dir: Path, timeout: float, *urls: str, access: bool = False) -> list[int]:
    """Start a pool in a process of its own (routing hello to ``urls``; with an access log
    in the run dir's home) and kill -9 that process: its port, then its workers' pids."""
    proc = subprocess.Popen([sys.executable, "-c", _POOL, str(run_dir), str(timeout),
                             "access" if access else "-", *urls],
                            stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()]
    proc.kill()
    proc.wait(10)
    assert len(pids) == 3
    return pids


@pytest.mark.timeout(60)
def test_an_orphan_exits_once_its_home_is_gone(tmp_path: Path) -> None:
    run_dir = tmp_path / "home" / "run"
    pids = _orphans(run_dir, 600.0)[1:]
    try:
        wait_until(lambda: len(live_records(run_dir)) == 2, 10, "both orphans recorded")
        assert not _gone(pids)
        for path in run_dir.iterdir():
            path.unlink()
        run_dir.rmdir()
        wait_until(lambda: _gone(pids), 10, "the orphans exited")
    finally:
        for pid in pids:
            with_suppress_kill(pid)


@pytest.mark.timeout(60)
def test_an_orphan_nobody_adopts_exits_after_orphan_timeout(tmp_path: Path) -> None:
    run_dir = tmp_path / "home" / "run"
    pids = _orphans(run_dir, 1.0)[1:]
    try:
        wait_until(lambda: _gone(pids), 20, "the orphans exited")
        assert live_records(run_dir) == [] and not list(run_dir.glob("edge-[0-9]*"))
    finally:
        for pid in pids:
            with_suppress_kill(pid)


def with_suppress_kill(pid: int) -> None:
    """Teardown: SIGKILL ``pid`` if it still runs (a failed test's orphan)."""
    with contextlib.suppress(psutil.Error):
        psutil.Process(pid).kill()


def _get(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/hello/")
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@pytest.mark.timeout(90)
def test_a_pool_adopts_the_orphans_serves_their_routes_until_its_own_then_hands_over(
        tmp_path: Path, upstreams) -> None:
    old_up, new_up = upstreams(), upstreams()
    run_dir = tmp_path / "home" / "run"
    port, *pids = _orphans(run_dir, 600.0, old_up.url)
    handed: list[tuple[str, ...]] = []
    done = threading.Event()

    def hook(urls: tuple[str, ...]) -> None:
        handed.append(urls)
        done.set()

    from mycelium.edge import EdgeConfig
    from mycelium.edge.workers import EdgeWorkers
    pool = EdgeWorkers(EdgeConfig(port=port, edge_id="orphan-test", workers=2, run_dir=run_dir,
                                  orphan_timeout=600.0, on_handover=hook))
    try:
        pool.start()
        assert sorted(w["pid"] for w in pool.describe()) == sorted(pids)  # adopted, not new
        assert [_get(port) for _ in range(10)] == [200] * 10  # the old routes, no mesh push
        v = pool.set_routes(table(hello=[]))  # ours not Ready yet: the legacy still serves
        assert pool.wait_applied(v, 10) and not done.is_set()
        assert [_get(port) for _ in range(10)] == [200] * 10
        pool.set_routes(table(hello=[new_up.url]))
        assert done.wait(10) and handed == [(old_up.url,)]
        assert [_get(port) for _ in range(10)] == [200] * 10
    finally:
        pool.stop(grace=2.0)
    wait_until(lambda: _gone(pids), 10, "the adopted workers stopped")


@pytest.mark.timeout(90)
def test_orphans_with_another_config_are_replaced_once_the_new_workers_listen(
        tmp_path: Path, upstreams) -> None:
    up = upstreams()
    run_dir = tmp_path / "home" / "run"
    port, *pids = _orphans(run_dir, 600.0, up.url)
    handed: list[tuple[str, ...]] = []

    from mycelium.edge import EdgeConfig
    from mycelium.edge.workers import EdgeWorkers
    pool = EdgeWorkers(EdgeConfig(port=port, edge_id="another-edge", workers=2, run_dir=run_dir,
                                  on_handover=handed.append))
    try:
        pool.start()
        assert not set(w["pid"] for w in pool.describe()) & set(pids)
        wait_until(lambda: _gone(pids), 15, "the replaced orphans stopped")
        wait_until(lambda: handed == [()], 5, "nothing to hand over")
        pool.wait_applied(pool.set_routes(table(hello=[up.url])), 10)
        assert [_get(port) for _ in range(10)] == [200] * 10
    finally:
        pids += [w["pid"] for w in pool.describe()]
        pool.stop(grace=2.0)
    assert _gone(pids)


@pytest.mark.timeout(90)
def test_access_lines_written_while_orphaned_reach_the_adopting_pools_log(
        tmp_path: Path, upstreams) -> None:
    up = upstreams()
    home = tmp_path / "home"
    port, *pids = _orphans(home / "run", 600.0, up.url, access=True)
    assert [_get(port) for _ in range(20)] == [200] * 20  # no mesh: the lines are kept

    from mycelium.edge import EdgeConfig
    from mycelium.edge.workers import EdgeWorkers
    pool = EdgeWorkers(EdgeConfig(port=port, edge_id="orphan-test", workers=2,
                                  run_dir=home / "run", orphan_timeout=600.0,
                                  access_log_home=home))
    log = home / "logs" / "access.jsonl"

    def lines() -> int:
        return len(log.read_bytes().splitlines()) if log.exists() else 0

    try:
        pool.start()
        assert sorted(w["pid"] for w in pool.describe()) == sorted(pids)
        wait_until(lambda: lines() >= 15, 10, "the orphaned requests' access lines")
    finally:
        pool.stop(grace=2.0)
    wait_until(lambda: _gone(pids), 10, "the adopted workers stopped")


@pytest.mark.timeout(90)
def test_a_home_too_deep_for_a_socket_address_still_adopts(tmp_path: Path) -> None:
    run_dir = tmp_path / ("d" * 60) / ("e" * 60) / "home" / "run"  # > 107 bytes with the name
    port, *pids = _orphans(run_dir, 600.0)
    assert len(str(WorkerRecord.socket_path(run_dir, pids[0]))) > 107

    from mycelium.edge import EdgeConfig
    from mycelium.edge.workers import EdgeWorkers
    pool = EdgeWorkers(EdgeConfig(port=port, edge_id="orphan-test", workers=2, run_dir=run_dir,
                                  orphan_timeout=600.0))
    try:
        pool.start()
        assert sorted(w["pid"] for w in pool.describe()) == sorted(pids)
    finally:
        pool.stop(grace=2.0)
    wait_until(lambda: _gone(pids), 10, "the adopted workers stopped")
