"""A local certificate authority and leaf certificates for development (``mycelium cert dev``).

The CA (``ca.pem``/``ca.key``) is made once per home and reused, so a client told to trust it
(``curl --cacert``) keeps trusting every leaf made later. Keys are ECDSA P-256, written 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DEFAULT_NAMES", "DevCerts", "san_of", "write_dev_certs"]

DEFAULT_NAMES = ("localhost", "127.0.0.1")
"""What ``cert dev`` covers when no ``--host`` is given."""
_DNS = re.compile(r"(\*\.)?[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*")
_CA_DAYS = 3650
_LEAF_DAYS = 825


@dataclass(frozen=True, slots=True)
class DevCerts:
    """Where ``cert dev`` wrote: the CA certificate, the leaf certificate, the leaf's key."""

    ca: Path
    cert: Path
    key: Path


def san_of(names: list[str] | tuple[str, ...]) -> x509.SubjectAlternativeName:
    """The subjectAltName for ``names``: IP addresses as IP entries, the rest as DNS names.

    Raises:
        ValueError: an empty or malformed name.
    """
    entries: list[x509.GeneralName] = []
    for raw in names:
        name = raw.strip().lower()
        if not _is_ip(name) and not _DNS.fullmatch(name):
            raise ValueError(f"bad host name {raw!r} (a DNS name, *.suffix, or an IP address)")
        if _is_ip(name):
            entries.append(x509.IPAddress(ipaddress.ip_address(name.strip("[]"))))
        else:
            entries.append(x509.DNSName(name))
    if not entries:
        raise ValueError("no host names")
    return x509.SubjectAlternativeName(entries)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _ca(directory: Path, now: datetime.datetime) -> tuple[x509.Certificate,
                                                          ec.EllipticCurvePrivateKey]:
    """The home's CA: loaded when both files exist, else made and written."""
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if cert_path.is_file() and key_path.is_file():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Mycelium development CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=_CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    _write_private(key_path, _pem_key(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def write_dev_certs(directory: Path, names: list[str] | tuple[str, ...] = DEFAULT_NAMES
                    ) -> DevCerts:
    """Make (or reuse) the CA in ``directory`` and a new leaf certificate for ``names``.

    Raises:
        ValueError: a bad name.
        OSError: the directory cannot be written.
    """
    san = san_of(names)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_cert, ca_key = _ca(directory, now)
    key = ec.generate_private_key(ec.SECP256R1())
    first = str(san[0].value)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=_LEAF_DAYS))
            .add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    _write_private(key_path, _pem_key(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return DevCerts(directory / "ca.pem", cert_path, key_path)
