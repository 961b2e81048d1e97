"""A member in its own network namespace, cut off for real (iproute2), then reconnected."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_helpers import EtcdServer, MemberProcess, etcd_binary, wait_for

from mycelium.home import Home
from mycelium.spores import Repo, keygen, publish, trust

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello" / "hello"
TTL = 2.0


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


@pytest.fixture
def netns() -> Iterator[tuple[str, str, str, str]]:
    """A namespace joined to the host by a veth pair: (namespace, host veth, host IP, ns IP)."""
    salt = os.urandom(2)
    tag = f"{os.getpid() % 10000}{salt.hex()}"
    ns, host_if, ns_if = f"myc{tag}", f"mh{tag}", f"mn{tag}"
    subnet = (os.getpid() + int.from_bytes(salt, "big")) % 250 + 1
    host_ip, ns_ip = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
    if shutil.which("ip") is None or ip("netns", "add", ns).returncode != 0:
        message = "network namespaces are not available here (needs root and iproute2)"
        if os.environ.get("CI"):  # CI installs iproute2 and runs as root: it must not skip
            pytest.fail(message)
        pytest.skip(message)
    try:
        for cmd in (("link", "add", host_if, "type", "veth", "peer", "name", ns_if),
                    ("link", "set", ns_if, "netns", ns),
                    ("addr", "add", f"{host_ip}/30", "dev", host_if),
                    ("link", "set", host_if, "up"),
                    ("netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if),
                    ("netns", "exec", ns, "ip", "link", "set", ns_if, "up"),
                    ("netns", "exec", ns, "ip", "link", "set", "lo", "up")):
            done = ip(*cmd)
            assert done.returncode == 0, (cmd, done.stderr)
        yield ns, host_if, host_ip, ns_ip
    finally:
        ip("link", "del", host_if)
        ip("netns", "del", ns)


@pytest.mark.timeout(60)
def test_a_member_cut_off_by_the_network(tmp_path: Path,
                                         netns: tuple[str, str, str, str]) -> None:
    ns, host_if, host_ip, ns_ip = netns
    etcd_binary()
    (tmp_path / "etcd").mkdir()
    etcd = EtcdServer(tmp_path / "etcd" / "data", hosts=("127.0.0.1", host_ip)).start()
    a_home, b_home = Home(tmp_path / "a").ensure(), Home(tmp_path / "b").ensure()
    trust(b_home, keygen(a_home))
    digest = publish(a_home, binary=HELLO, manifest={"name": "hello", "version": "1.0.0"})
    url = f"etcd://{host_ip}:{etcd.client_port}"
    members: list[MemberProcess] = []
    try:
        a = MemberProcess(a_home.root, url, "a", ttl=TTL, advertise=host_ip, insecure=True)
        members.append(a)
        b = MemberProcess(b_home.root, url, "b", ttl=TTL, advertise=ns_ip, insecure=True,
                          wrap=("ip", "netns", "exec", ns))
        members.append(b)
        # b's spore comes over the veth from a's spore server, verified by b's own trust
        a.placeable(4)
        a.client.request("deploy", app="hello", digest=digest, min=1, max=3)
        wait_for(lambda: len(a.instances("hello")) == 3, 30.0, "3 Ready")
        assert Repo(b_home.repo).has(digest)
        on_b = [i for i in a.instances("hello") if i["node"].startswith("b-")]
        assert on_b and all(i["url"].startswith(f"http://{ns_ip}:") for i in on_b)

        assert ip("link", "set", host_if, "down").returncode == 0  # the cable is cut
        b.wait_line("etcd unreachable", 10.0)  # b keeps its workloads and retries
        wait_for(lambda: {n: s for n, s in a.nodes().items() if n.startswith("b-")}
                 == {"b-1": "lost", "b-2": "lost"}, TTL + 5.0, "b's nodes to be lost")
        wait_for(lambda: len(r := a.instances("hello")) == 3 and all(
            i["node"].startswith("a-") for i in r), 20.0, "re-placement on a (many per node)")
        assert b.status()["fabric"]["etcd"] == "unreachable"

        assert ip("link", "set", host_if, "up").returncode == 0  # reconnected
        b.wait_line("lease had expired", 20.0)
        # what runs on a stays there; b gives back what it ran while cut off
        wait_for(lambda: set(a.nodes().values()) == {"up"}
                 and len(r := a.instances("hello")) == 3
                 and all(i["node"].startswith("a-") for i in r)
                 and not [i for app in b.status()["apps"] for i in app["instances"]
                          if i["node"].startswith("b-")], 30.0, "convergence after the return")
    finally:
        for m in members:
            m.stop()
        etcd.kill()
