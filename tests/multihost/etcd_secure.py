"""Real etcd clusters on loopback for the secured-fabric tests: TLS with client certificates
(a CA and certificates made here with ``cryptography``), user/password auth, three members."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import signal
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from etcd_helpers import etcd_binary, wait_for

from mycelium.fabric.etcd_client import EtcdClient, EtcdUnavailable
from tests.meshkit import free_port

__all__ = ["Certs", "EtcdCluster", "make_certs"]


@dataclass(frozen=True)
class Certs:
    """PEM files: the CA, etcd's server pair, a client pair, and a CA etcd does not trust."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def _ca(path: Path, cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, cn: str, cert_path: Path,
          key_path: Path, *usages: x509.ObjectIdentifier) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)


def make_certs(where: Path) -> Certs:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate, another CA."""
    where.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca(where / "ca.pem", "mycelium test CA")
    # etcd's JSON gateway dials etcd's own gRPC port with the server pair: it needs client auth
    _leaf(ca, ca_key, "etcd", where / "server.pem", where / "server-key.pem",
          ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
    _leaf(ca, ca_key, "root", where / "client.pem", where / "client-key.pem",
          ExtendedKeyUsageOID.CLIENT_AUTH)
    _ca(where / "other-ca.pem", "a CA nobody trusts")
    return Certs(where / "ca.pem", where / "server.pem", where / "server-key.pem",
                 where / "client.pem", where / "client-key.pem", where / "other-ca.pem")


class EtcdCluster:
    """``size`` etcd members on 127.0.0.1 (plain HTTP, or TLS with client-cert auth)."""

    def __init__(self, root: Path, size: int = 1, certs: Certs | None = None) -> None:
        self.root = root
        self.certs = certs
        self.names = [f"m{i}" for i in range(size)]
        self.client_ports = {n: free_port() for n in self.names}
        self.peer_ports = {n: free_port() for n in self.names}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def scheme(self) -> str:
        return "https" if self.certs else "http"

    def url(self, names: list[str] | None = None) -> str:
        """``etcd[s]://127.0.0.1:P,…`` for ``mycelium up --fabric``."""
        scheme = "etcds" if self.certs else "etcd"
        return f"{scheme}://" + ",".join(f"127.0.0.1:{self.client_ports[n]}"
                                         for n in names or self.names)

    def client(self, name: str | None = None) -> EtcdClient:
        """A client of every member (or one), with the client certificate under TLS."""
        tls = None
        if self.certs:
            tls = ssl.create_default_context(cafile=str(self.certs.ca))
            tls.load_cert_chain(str(self.certs.client_cert), str(self.certs.client_key))
        names = [name] if name else self.names
        return EtcdClient([("127.0.0.1", self.client_ports[n]) for n in names], timeout=2.0,
                          tls=tls)

    def start(self) -> EtcdCluster:
        """Start every member and wait until each answers."""
        initial = ",".join(f"{n}=http://127.0.0.1:{self.peer_ports[n]}" for n in self.names)
        for name in self.names:
            data = self.root / name
            data.mkdir(parents=True, exist_ok=True)
            client = f"{self.scheme}://127.0.0.1:{self.client_ports[name]}"
            peer = f"http://127.0.0.1:{self.peer_ports[name]}"
            argv = [etcd_binary(), "--name", name, "--data-dir", str(data / "data"),
                    "--listen-client-urls", client, "--advertise-client-urls", client,
                    "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                    "--initial-cluster", initial, "--initial-cluster-state", "new",
                    "--initial-cluster-token", f"t-{self.peer_ports[self.names[0]]}",
                    "--logger", "zap", "--log-level", "error"]
            if self.certs:
                argv += ["--cert-file", str(self.certs.server_cert), "--key-file",
                         str(self.certs.server_key), "--trusted-ca-file", str(self.certs.ca),
                         "--client-cert-auth"]
            log = open(data / "etcd.log", "ab")  # noqa: SIM115 - kept by the child
            self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=log,
                                                start_new_session=True)
            log.close()
        for name in self.names:
            client = self.client(name)

            def up(client: EtcdClient = client, name: str = name) -> bool:
                if self.procs[name].poll() is not None:
                    raise AssertionError(f"etcd {name} exited: see {self.root / name}")
                try:
                    client.status()
                    client.get_prefix("/probe/")  # a quorum read: the cluster has a leader
                except EtcdUnavailable:
                    return False
                return True

            wait_for(up, 30.0, f"etcd {name} to answer")
        return self

    def enable_auth(self, password: str) -> None:
        """Add the ``root`` user with ``password`` and turn authentication on."""
        client = self.client()
        client.call("auth/user/add", {"name": "root", "password": password})
        client.call("auth/user/grant", {"user": "root", "role": "root"})
        client.call("auth/enable", {})

    def kill(self, name: str) -> None:
        """SIGKILL one member."""
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def stop(self) -> None:
        """SIGKILL every member."""
        for name in list(self.procs):
            self.kill(name)

    def values(self) -> list[bytes]:
        """Every value under every key (for scans for plaintext)."""
        everything = base64.b64encode(b"\0").decode()  # key \0 with range_end \0: all keys
        reply = self.client().call("kv/range", {"key": everything, "range_end": everything})
        return [base64.b64decode(kv["key"]) + b"=" + base64.b64decode(kv.get("value", ""))
                for kv in reply.get("kvs", [])]
