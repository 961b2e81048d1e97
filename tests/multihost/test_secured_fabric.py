"""A secured fabric: etcd over TLS with client certificates, etcd users, a three-member etcd
cluster that loses a member, and secrets that reach etcd as ciphertext only.

What they promise: docs/reference.md#secrets and docs/reference.md#multi-machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_helpers import get, two_homes, wait_for
from etcd_secure import Certs, EtcdCluster, make_certs

from mycelium.fabric.etcd_client import EtcdClient
from mycelium.home import Home
from mycelium.operator.control import ControlClient
from mycelium.spores import publish
from tests.meshkit import UpProcess, free_port

SECRETIVE = Path(__file__).resolve().parents[1] / "secrets" / "workloads" / "secretive"
HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello" / "hello"
VALUE = "tls-s3cr3t-9d8c7b"
NEW = "tls-n3w-5e4f3a"


class Member(UpProcess):
    """``mycelium up --fabric URL`` on ``home`` with extra environment."""

    def __init__(self, home: Path, url: str, prefix: str, nodes: int = 1,
                 env: dict[str, str] | None = None) -> None:
        self.home, self.port = home, free_port()
        super().__init__([sys.executable, "-m", "mycelium", "up", "--home", str(home),
                          "--fabric", url, "--node-prefix", prefix, "--nodes", str(nodes),
                          "--lease-ttl", "2", "--edge-port", str(self.port)],
                         {**os.environ, **(env or {})}, f"member {prefix}")
        self.client = ControlClient(Home(home))
        self.wait_line("mesh up", 30.0)

    def ready(self, app: str) -> list[dict[str, object]]:
        return [i for a in self.client.request("status")["apps"] if a["app"] == app
                for i in a["instances"] if i["state"] == "Ready"]


def run(home: Path, *args: str, stdin: bytes = b"",
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "mycelium", *args, "--home", str(home)],
                          input=stdin, capture_output=True, timeout=90, check=False,
                          env={**os.environ, **(env or {})})


def tls_config(home: Path, certs: Certs, ca: Path | None = None) -> None:
    (home / "mycelium.toml").write_text(
        f'[fabric]\nca = "{ca or certs.ca}"\ncert = "{certs.client_cert}"\n'
        f'key = "{certs.client_key}"\n')


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[tuple[Path, Path, dict[str, str]]]:
    """Home a (publishes, signs) and home b (trusts a's key); the digests by name."""
    with two_homes(tmp_path) as (a, b):
        digests = {"vault": publish(a, binary=SECRETIVE, manifest={
                       "name": "vault", "version": "1.0.0", "env_secrets": ["DB_PASSWORD"]}),
                   "hello": publish(a, binary=HELLO, manifest={"name": "hello", "version": "1"})}
        yield a.root, b.root, digests


@pytest.mark.timeout(180)
def test_over_tls_with_client_certs_secrets_reach_every_member_and_etcd_holds_ciphertext(
        tmp_path: Path, homes: tuple[Path, Path, dict[str, str]]) -> None:
    home_a, home_b, digests = homes
    certs = make_certs(tmp_path / "pki")
    cluster = EtcdCluster(tmp_path / "etcd", 1, certs).start()
    members: list[Member] = []
    try:
        for home in (home_a, home_b):
            tls_config(home, certs)
        a = Member(home_a, cluster.url(), "a", nodes=2)
        members.append(a)
        assert run(home_a, "secret", "set", "vault", "DB_PASSWORD",
                   stdin=VALUE.encode()).returncode == 0
        key = run(home_a, "secret", "key", "export")
        assert key.returncode == 0
        assert run(home_b, "secret", "key", "import", stdin=key.stdout).returncode == 0
        b = Member(home_b, cluster.url(), "b", nodes=1)
        members.append(b)
        deployed = run(home_a, "deploy", "vault", digests["vault"], "--max", "3")
        assert deployed.returncode == 0, deployed.stderr
        ready = wait_for(lambda: len(r := a.ready("vault")) == 3 and r, 40.0, "3 Ready")
        assert {str(i["node"]) for i in ready} == {"a-1", "a-2", "b-1"}
        for m in members:  # each member's edge reaches instances on both members
            wait_for(lambda m=m: all(get(f"http://127.0.0.1:{m.port}/vault/")[0] == 200
                                     for _ in range(6)), 20.0, f"{m.home.name}'s edge routes")
            bodies = [get(f"http://127.0.0.1:{m.port}/vault/")[1] for _ in range(9)]
            assert {body["env"] for body in bodies} == {VALUE}
            assert {body["files"]["DB_PASSWORD"]["value"] for body in bodies} == {VALUE}
        values = cluster.values()
        assert any(b"/secrets/vault/DB_PASSWORD" in v for v in values)
        assert not [v for v in values if VALUE.encode() in v], "plaintext in etcd"
        listed = run(home_b, "secret", "list", "vault").stdout.decode()
        assert listed.startswith("DB_PASSWORD\t") and VALUE not in listed
        # set through b: the plan's new secrets count rolls out on both members' nodes
        changed = run(home_b, "secret", "set", "vault", "DB_PASSWORD", stdin=NEW.encode())
        assert changed.returncode == 0, changed.stderr
        assert b"3/3 instances replaced" in changed.stdout
        for m in members:
            bodies = [get(f"http://127.0.0.1:{m.port}/vault/")[1] for _ in range(9)]
            assert {body["env"] for body in bodies} == {NEW}
        assert not [v for v in cluster.values() if NEW.encode() in v], "plaintext in etcd"
    finally:
        for m in members:
            m.stop()
        cluster.stop()


@pytest.mark.timeout(90)
def test_bad_tls_files_and_a_wrong_password_are_one_error_line_exit_2_and_change_nothing(
        tmp_path: Path, homes: tuple[Path, Path, dict[str, str]]) -> None:
    home_a, _home_b, _digests = homes
    certs = make_certs(tmp_path / "pki")
    tls_config(home_a, certs, ca=tmp_path / "missing-ca.pem")
    before = sorted(p.name for p in home_a.iterdir())
    bad = run(home_a, "up", "--fabric", "etcds://127.0.0.1:2379", "--node-prefix", "a")
    assert bad.returncode == 2
    assert bad.stderr.decode().count("\n") == 1 and bad.stderr.startswith(b"error: [fabric] ca")
    assert sorted(p.name for p in home_a.iterdir()) == before
    (home_a / "mycelium.toml").unlink()

    cluster = EtcdCluster(tmp_path / "etcd", 1).start()
    try:
        cluster.enable_auth("right-password")
        (home_a / "mycelium.toml").write_text('[fabric]\nuser = "root"\n')
        wrong = run(home_a, "up", "--fabric", cluster.url(), "--node-prefix", "a",
                    env={"MYCELIUM_ETCD_PASSWORD": "wrong-password"})
        assert wrong.returncode == 2, wrong.stderr
        text = wrong.stderr.decode()
        assert text.count("\n") == 1 and text.startswith("error: ") and "password" in text
        assert "wrong-password" not in text
        nopw = run(home_a, "up", "--fabric", cluster.url(), "--node-prefix", "a")
        assert nopw.returncode == 2 and b"MYCELIUM_ETCD_PASSWORD" in nopw.stderr
        root = EtcdClient([("127.0.0.1", cluster.client_ports["m0"])], user="root",
                          password="right-password")
        assert root.get_prefix("/mycelium/")[0] == [], "a refused member wrote to etcd"
        m = Member(home_a, cluster.url(), "a", env={"MYCELIUM_ETCD_PASSWORD": "right-password"})
        try:
            assert run(home_a, "deploy", "hello", _digests["hello"]).returncode == 0
            assert get(f"http://127.0.0.1:{m.port}/hello/")[0] == 200
        finally:
            assert m.stop() == 0
    finally:
        cluster.stop()


@pytest.mark.timeout(120)
def test_an_unreadable_or_invalid_tls_file_is_one_error_line_exit_2_and_changes_nothing(
        tmp_path: Path, homes: tuple[Path, Path, dict[str, str]]) -> None:
    home_a, _home_b, _digests = homes
    certs = make_certs(tmp_path / "pki")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    directory = tmp_path / "a-directory.pem"
    directory.mkdir()
    url = f"etcds://127.0.0.1:{free_port()}"  # nothing listens: the files fail first
    cases = {"ca": {"ca": garbage}, "ca ": {"ca": directory},
             "cert": {"cert": garbage}, "cert ": {"key": directory},
             "cert  ": {"key": certs.ca}}  # a certificate where its key should be
    def listing() -> list[str]:
        return sorted(p.name for p in home_a.iterdir() if p.name != "mycelium.toml")

    before = listing()
    for expected, bad in cases.items():
        files = {"ca": certs.ca, "cert": certs.client_cert, "key": certs.client_key, **bad}
        (home_a / "mycelium.toml").write_text(
            "[fabric]\n" + "".join(f'{k} = "{v}"\n' for k, v in files.items()))
        done = run(home_a, "up", "--fabric", url, "--node-prefix", "a")
        text = done.stderr.decode()
        assert done.returncode == 2, (bad, text)
        assert text.count("\n") == 1 and text.startswith(f"error: [fabric] {expected.strip()} ")
        assert done.stdout == b""
        assert listing() == before, bad


@pytest.mark.timeout(180)
def test_a_three_member_etcd_cluster_that_loses_a_member_keeps_the_mesh_working(
        tmp_path: Path, homes: tuple[Path, Path, dict[str, str]]) -> None:
    home_a, _home_b, digests = homes
    cluster = EtcdCluster(tmp_path / "etcd", 3).start()
    m = None
    try:
        m = Member(home_a, cluster.url(), "a", nodes=2)
        assert run(home_a, "deploy", "hello", digests["hello"], "--max", "2").returncode == 0
        wait_for(lambda: len(m.ready("hello")) == 2, 30.0, "2 Ready")
        cluster.kill("m0")  # the first endpoint of the list: the one the member used
        for _ in range(10):
            assert get(f"http://127.0.0.1:{m.port}/hello/")[0] == 200
        # the control plane still works: a secret set rolls the app out through etcd
        changed = run(home_a, "secret", "set", "hello", "TOKEN", stdin=b"v1")
        assert changed.returncode == 0, changed.stderr
        assert b"2/2 instances replaced" in changed.stdout
        assert m.client.request("status")["fabric"]["etcd"] == "connected"
        assert get(f"http://127.0.0.1:{m.port}/hello/")[0] == 200
        # and etcd lost entirely: the member keeps serving and says so in status
        cluster.stop()
        m.wait_line("etcd unreachable", 15.0)
        for _ in range(10):
            assert get(f"http://127.0.0.1:{m.port}/hello/")[0] == 200
        assert m.client.request("status")["fabric"]["etcd"] == "unreachable"
    finally:
        if m is not None:
            m.stop()
        cluster.stop()
