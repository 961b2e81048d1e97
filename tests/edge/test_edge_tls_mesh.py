"""TLS through the real CLI: ``cert dev``, ``up --tls-cert``, ``reload-certs`` and SIGHUP."""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import stat
import sys
import urllib.request
from pathlib import Path

import pytest
from edge_mesh import ENV, cli, wait_until
from tls_certs import make_pair

from mycelium.edge.tls import cert_names
from tests.meshkit import UpProcess, free_port, stopped_cleanly


def test_cert_dev_writes_a_ca_and_a_leaf_and_reuses_the_ca(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = cli(home, "cert", "dev")
    assert first.returncode == 0, first.stderr
    ca, cert, key = (Path(p) for p in first.stdout.splitlines())
    assert (ca, cert, key) == (home / "tls" / "ca.pem", home / "tls" / "cert.pem",
                               home / "tls" / "key.pem")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "tls" / "ca.key").stat().st_mode) == 0o600
    assert cert_names(cert.read_bytes()) == ("localhost", "127.0.0.1")
    ca_bytes = ca.read_bytes()
    again = cli(home, "cert", "dev", "--host", "shop.test", "--host", "10.1.2.3")
    assert again.returncode == 0, again.stderr
    assert ca.read_bytes() == ca_bytes  # the CA is reused: clients keep trusting it
    assert cert_names(cert.read_bytes()) == ("shop.test", "10.1.2.3")
    ctx = ssl.create_default_context(cafile=str(ca))  # the leaf verifies against the CA
    ctx.load_cert_chain(cert, key)
    bad = cli(home, "cert", "dev", "--host", "bad name!")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1


@pytest.mark.parametrize("case", ["mismatch", "missing", "only-cert"])
def test_up_refuses_bad_tls_files_before_anything_starts(tmp_path: Path, case: str) -> None:
    home = tmp_path / "home"
    cert, key = make_pair("up-bad", "localhost")
    _, other_key = make_pair("up-bad-other", "localhost")
    port = free_port()
    args = {"mismatch": ["--tls-cert", str(cert), "--tls-key", str(other_key)],
            "missing": ["--tls-cert", str(tmp_path / "none.pem"), "--tls-key", str(key)],
            "only-cert": ["--tls-cert", str(cert)]}[case]
    done = cli(home, "up", "--nodes", "1", "--edge-port", str(port), *args, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "mesh up" not in done.stdout
    with socket.socket() as s:  # nothing was started: the edge port is free
        s.bind(("127.0.0.1", port))


@pytest.mark.timeout(120)
def test_up_serves_https_and_reloads_on_the_command_and_on_sighup(tmp_path: Path) -> None:
    home = tmp_path / "home"
    dev = cli(home, "cert", "dev")
    ca, cert, key = (Path(p) for p in dev.stdout.splitlines())
    port, tls_port = free_port(), free_port()
    up = UpProcess([sys.executable, "-m", "mycelium", "up", "--home", str(home), "--nodes", "1",
                    "--edge-port", str(port), "--tls-port", str(tls_port), "--tls-cert",
                    str(cert), "--tls-key", str(key), "--https-redirect"], ENV)
    with stopped_cleanly(up, home):
        line = up.wait_line("mesh up", 60)
        assert f"https://127.0.0.1:{tls_port}" in line
        ctx = ssl.create_default_context(cafile=str(ca))
        url = f"https://localhost:{tls_port}/_mycelium/health"
        with urllib.request.urlopen(url, context=ctx, timeout=10) as resp:
            assert resp.status == 200
        first = ssl.get_server_certificate(("127.0.0.1", tls_port))
        cli(home, "cert", "dev")  # a new leaf under the same CA, same paths
        done = cli(home, "reload-certs")
        assert done.returncode == 0, done.stderr
        assert ssl.get_server_certificate(("127.0.0.1", tls_port)) != first
        second = ssl.get_server_certificate(("127.0.0.1", tls_port))
        shutil.copy(ca, key)  # not a key: the reload fails, the old pair stays
        bad = cli(home, "reload-certs")
        assert bad.returncode == 1 and bad.stderr.startswith("error: ")
        assert bad.stderr.count("\n") == 1, bad.stderr
        assert ssl.get_server_certificate(("127.0.0.1", tls_port)) == second
        up.wait_line("certs_reload_failed", 10)
        cli(home, "cert", "dev")
        up.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: ssl.get_server_certificate(("127.0.0.1", tls_port)) != second,
                   20, "the SIGHUP reload")
        with urllib.request.urlopen(url, context=ssl.create_default_context(cafile=str(ca)),
                                    timeout=10) as resp:
            assert resp.status == 200
