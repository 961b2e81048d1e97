"""Scale in etcd mode, end to end: two members (processes, homes) on one real etcd.

Many instances per node over both members' nodes, a drain asked through the member that does
not own the node (0 failed requests through both edges), scale to zero woken from both edges
at once (one start), and autoscaling from both edges' in-flight counts summed. The members
are shared by the module's tests (each test has its own app) to keep the suite lean.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from etcd_helpers import EtcdServer, MemberProcess, etcd_binary, kill_workloads, wait_for

from mycelium.home import Home
from mycelium.spores import keygen, publish, trust
from tests.meshkit import forget_machine_state, repo_env

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello" / "hello"
ENV = repo_env()


class Members:
    """Member a (publisher) and member b, 2 nodes each, and the digests of a's spores."""

    def __init__(self, a: MemberProcess, b: MemberProcess, digests: dict[str, str]) -> None:
        self.a, self.b, self.digests = a, b, digests

    def deploy(self, app: str, digest: str | None = None, **settings: object) -> None:
        self.a.client.request("deploy", app=app, digest=digest or self.digests[app],
                              **settings)

    def ready(self, app: str) -> Counter[str]:
        return Counter(i["node"] for i in self.b.instances(app))


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Members]:
    etcd_binary()
    root = tmp_path_factory.mktemp("scale-members")
    (root / "etcd").mkdir()
    etcd = EtcdServer(root / "etcd" / "data").start()
    home_a, home_b = Home(root / "a").ensure(), Home(root / "b").ensure()
    trust(home_b, keygen(home_a))
    digests = {app: publish(home_a, binary=HELLO, manifest={"name": app, "version": "1.0.0"})
               for app in ("hello", "lazy", "auto")}
    digests["hello-v2"] = publish(home_a, binary=HELLO, manifest={
        "name": "hello", "version": "2.0.0", "env": {"HELLO_VERSION": "2.0.0"}})
    started: list[MemberProcess] = []
    try:
        started.append(MemberProcess(home_a.root, etcd.url, "a", ttl=2.0))
        started.append(MemberProcess(home_b.root, etcd.url, "b", ttl=2.0))
        started[0].placeable(4)
        yield Members(started[0], started[1], digests)
    finally:
        for m in started:
            m.stop()
        for home in (home_a, home_b):
            kill_workloads(home.root)
            forget_machine_state(home.root)
        etcd.kill()


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mycelium", *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=90, env=ENV, check=False)


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc).encode()


class Load:
    """Requests in a loop through each given edge until stopped; every failure is kept."""

    def __init__(self, *urls: str) -> None:
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(u,), daemon=True)
                         for u in urls]

    def _run(self, url: str) -> None:
        while not self._stop.is_set():
            status, body = fetch(url)
            if status == 200:
                self.ok += 1
            else:
                self.failed.append(f"{status} {body[:80]!r}")

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(35)


@pytest.mark.timeout(120)
def test_many_per_node_over_both_members_and_a_drain_under_load(members: Members) -> None:
    a, b = members.a, members.b
    members.deploy("hello", min=6, max=6, cpu=0.1, mem=16)
    # spread first over a-1, a-2, b-1, b-2, then the first nodes take a second
    wait_for(lambda: members.ready("hello") == {"a-1": 2, "a-2": 2, "b-1": 1, "b-2": 1},
             40.0, "6 Ready over both members' nodes")
    with Load(f"{a.url}/hello/", f"{b.url}/hello/") as load:
        wait_for(lambda: load.ok > 10, 10.0, "requests flowing through both edges")
        drained = cli(b.home, "node", "drain", "a-1", "--timeout", "60")  # through b
        assert drained.returncode == 0, drained.stderr
        assert "drained a-1 in" in drained.stdout
        after = load.ok
        wait_for(lambda: load.ok > after + 10, 10.0, "requests after the drain")
    assert load.failed == []
    by_node = members.ready("hello")
    assert "a-1" not in by_node and sum(by_node.values()) == 6
    states = {n["name"]: n["state"] for n in a.status()["nodes"]}
    assert states == {"a-1": "drained", "a-2": "up", "b-1": "up", "b-2": "up"}

    unknown = cli(a.home, "node", "drain", "z-9")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: unknown node 'z-9'")
    assert unknown.stderr.count("\n") == 1
    undrained = cli(a.home, "node", "undrain", "a-1")
    assert undrained.returncode == 0 and "undrained a-1 (up)" in undrained.stdout

    # a blue/green rollout replaces every instance, per instance, on both members
    v2 = members.digests["hello-v2"]
    with Load(f"{a.url}/hello/", f"{b.url}/hello/") as load:
        members.deploy("hello", v2, min=6, max=6, cpu=0.1, mem=16)
        wait_for(lambda: [i["digest"] for app in b.status()["apps"] if app["app"] == "hello"
                          for i in app["instances"]] == [v2] * 6 and
                 sum(members.ready("hello").values()) == 6, 60.0, "6 of v2, blue gone")
    assert load.failed == []
    assert members.ready("hello") == by_node  # the rollout moves nothing
    a.client.request("stop", app="hello")
    wait_for(lambda: not members.ready("hello"), 30.0, "hello stopped")


@pytest.mark.timeout(90)
def test_scale_to_zero_woken_from_both_edges_starts_one_instance(members: Members) -> None:
    a, b = members.a, members.b
    members.deploy("lazy", min=0, max=1, idle=2.0)
    for m in (a, b):
        wait_for(lambda m=m: [x for x in m.status()["apps"] if x["app"] == "lazy"
                              and x["state"] == "idle"], 10.0, "idle on both members")
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(fetch, [f"{a.url}/lazy/", f"{b.url}/lazy/"] * 8))
    assert [status for status, _ in answers] == [200] * 16
    assert len({json.loads(body)["instance"] for _, body in answers}) == 1  # ONE start
    logs = [cli(m.home, "logs", "--app", "lazy", "--json").stdout for m in (a, b)]
    started = {json.loads(line)["child"] for text in logs for line in text.splitlines()
               if '"started"' in line and "@" in (json.loads(line).get("child") or "")}
    assert len(started) == 1, started
    for m in (a, b):  # idle again, as both members see it
        wait_for(lambda m=m: [x for x in m.status()["apps"] if x["app"] == "lazy"
                              and x["state"] == "idle" and not x["instances"]], 30.0,
                 "idle again")
    a.client.request("stop", app="lazy")


@pytest.mark.timeout(90)
def test_autoscaling_counts_both_edges_in_flight(members: Members) -> None:
    a, b = members.a, members.b
    members.deploy("auto", min=1, max=6, target_concurrency=1.0)
    wait_for(lambda: sum(members.ready("auto").values()) == 1, 30.0, "1 Ready")
    # two clients per edge, each always in a 0.3 s request: at most 2 in flight at one edge,
    # about 4 mesh-wide; with C = 1 only the sum wants more than 2 instances
    slow = ("/auto/slow?delay=0.3",)
    with Load(*(m.url + slow[0] for m in (a, b, a, b))) as load:
        app = wait_for(lambda: next((x for x in b.status()["apps"] if x["app"] == "auto"
                                     and x.get("desired", 0) >= 3), None), 30.0,
                       "desired from the summed in-flight counts")
    assert load.failed == []
    assert "in flight / target 1" in app["desired_reason"]
    a.client.request("stop", app="auto")
