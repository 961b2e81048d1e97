"""A real etcd for the multihost tests: one process on free loopback ports with a tmp data dir."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from mycelium.fabric.etcd_client import EtcdClient, EtcdUnavailable
from mycelium.home import Home
from mycelium.operator.control import ControlClient
from mycelium.spores import keygen, trust
from tests.meshkit import UpProcess, forget_machine_state, free_port

__all__ = ["EtcdServer", "MemberProcess", "answers", "etcd_binary", "free_port", "get",
           "kill_workloads", "two_homes", "wait_for"]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


def etcd_binary() -> str:
    """The etcd binary; skip outside CI when it is missing, fail in CI."""
    path = shutil.which("etcd")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("etcd is not installed (CI must install etcd-server: see .ci/run)")
        pytest.skip("etcd binary not found (apt-get install etcd-server)")
    return path


class EtcdServer:
    """One etcd member on 127.0.0.1; ``start()`` returns once it answers."""

    def __init__(self, data_dir: Path, hosts: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.data_dir = data_dir
        self.hosts = hosts
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``etcd://127.0.0.1:PORT`` for ``mycelium up --fabric``."""
        return f"etcd://127.0.0.1:{self.client_port}"

    def client(self) -> EtcdClient:
        """A client of this server."""
        return EtcdClient([("127.0.0.1", self.client_port)], timeout=2.0)

    def start(self) -> EtcdServer:
        """Start (or restart, same data) etcd and wait until it answers."""
        c = ",".join(f"http://{h}:{self.client_port}" for h in self.hosts)
        p = f"http://127.0.0.1:{self.peer_port}"
        log = open(self.data_dir.parent / "etcd.log", "ab")  # noqa: SIM115 - kept by the child
        self.proc = subprocess.Popen(
            [etcd_binary(), "--name", "t", "--data-dir", str(self.data_dir),
             "--listen-client-urls", c, "--advertise-client-urls", c,
             "--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
             "--initial-cluster", f"t={p}", "--logger", "zap", "--log-level", "error"],
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        client = self.client()

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"etcd exited with {self.proc.returncode}")
            try:
                client.status()
            except EtcdUnavailable:
                return False
            return True

        wait_for(up, 20.0, "etcd to answer")
        return self

    def kill(self) -> None:
        """SIGKILL etcd and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


class MemberProcess(UpProcess):
    """``mycelium up --fabric … --node-prefix P`` in the background, stdout collected."""

    def __init__(self, home: Path, etcd_url: str, prefix: str, nodes: int = 2,
                 ttl: float = 2.0, edge: bool = True, advertise: str | None = None,
                 wrap: tuple[str, ...] = (), insecure: bool = False) -> None:
        self.home = home
        self.prefix = prefix
        self.port = free_port()
        argv = [*wrap, sys.executable, "-m", "mycelium", "up", "--home", str(home), "--fabric",
                etcd_url, "--node-prefix", prefix, "--nodes", str(nodes), "--lease-ttl",
                str(ttl), "--edge-port", str(self.port)]
        if not edge:
            argv.append("--no-edge")
        if advertise:
            argv += ["--advertise-host", advertise]
        if insecure:  # plain etcd:// to a host that is not loopback (a test's netns)
            argv.append("--insecure-fabric")
        super().__init__(argv, {**os.environ, "MYCELIUM_DEBUG": "1"}, f"member {prefix}")
        self.client = ControlClient(Home(home))
        self.wait_line("mesh up", 30.0)

    @property
    def url(self) -> str:
        """This member's edge."""
        return f"http://127.0.0.1:{self.port}"

    def status(self) -> dict[str, Any]:
        """The whole mesh's status through this member's control socket."""
        result: dict[str, Any] = self.client.request("status")
        return result

    def instances(self, app: str, state: str = "Ready") -> list[dict[str, Any]]:
        """Every instance of ``app`` in ``state``, as this member sees the mesh."""
        return [i for a in self.status()["apps"] if a["app"] == app
                for i in a["instances"] if i["state"] == state]

    def placeable(self, count: int) -> None:
        """Wait until this member sees ``count`` nodes with their capacity: the placer places
        only over nodes whose capacity it knows, and what it placed stays where it is."""
        wait_for(lambda: sum("cpu" in n for n in self.status()["nodes"]) == count, 15.0,
                 f"{count} nodes with their capacity")

    def nodes(self) -> dict[str, str]:
        """Node → state, as this member sees the mesh."""
        return {n["name"]: n["state"] for n in self.status()["nodes"]}


def get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    """One GET; (status, JSON body or {})."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def answers(url: str, field: str, n: int) -> set[str]:
    """``field`` of the JSON bodies of ``n`` GETs of ``url`` (which instances, which nodes
    answered); each GET must answer 200."""
    out = set()
    for _ in range(n):
        status, body = get(url)
        assert status == 200, status
        out.add(body[field])
    return out


def kill_workloads(home: Path) -> list[int]:
    """SIGKILL every process whose command line names ``home`` or, for a root member's isolated
    workloads, its instances directory outside the home (a killed member's workloads), and
    whatever is left in their homes' cgroups (those cgroups are removed)."""
    from mycelium.node.isolation import fallback_instances_dir

    homes = [Path(home).absolute()]  # ``home`` may also be a directory of member homes
    with contextlib.suppress(OSError):
        homes += [p for p in homes[0].iterdir() if p.is_dir()]
    markers = (str(home), *(str(fallback_instances_dir(h)) for h in homes))
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(m in part for part in proc.info["cmdline"] or () for m in markers):
                proc.kill()
                pids.append(proc.info["pid"])
        except (psutil.Error, TypeError):
            continue
    from tests.meshkit import clear_cgroups  # what left its instance stays in its cgroup

    for member in homes:
        pids += [pid for pid in clear_cgroups(member) if pid not in pids]
    return pids


@contextlib.contextmanager
def two_homes(root: Path) -> Iterator[tuple[Home, Home]]:
    """Home ``root/a`` (with the signing key) and home ``root/b`` (trusting a's key only); at
    the end every workload of both is killed (a member a test killed leaves its workloads)."""
    a, b = Home(root / "a").ensure(), Home(root / "b").ensure()
    trust(b, keygen(a))
    try:
        yield a, b
    finally:
        for home in (a, b):
            kill_workloads(home.root)
            forget_machine_state(home.root)
