"""How a member reaches etcd safely: TLS, client certificates, a user and password, and the
refusal of plain HTTP to another machine.

``--fabric etcds://…`` speaks HTTPS to etcd, verifying its certificate against ``[fabric] ca``
(else the system's CAs) and presenting ``[fabric] cert`` + ``key`` when given (TLS client
auth); ``[fabric] user`` with the password from ``MYCELIUM_ETCD_PASSWORD`` authenticates to
etcd's role-based access control. A plain ``etcd://`` list naming any host that is not loopback
would send the mesh's plans, endpoints and (sealed) secrets over the network unauthenticated,
so it is refused unless ``--insecure-fabric`` says so — before any connection is attempted.
Every check here is done before the mesh starts: a bad setting is one ``error:`` line, exit 2.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass, field

from mycelium.errors import BadInput

from .etcd_client import parse_endpoints

__all__ = ["PASSWORD_ENV", "FabricAccess", "fabric_access", "is_loopback"]

PASSWORD_ENV = "MYCELIUM_ETCD_PASSWORD"
"""Where the etcd user's password comes from (never the command line or the config file)."""


@dataclass(frozen=True, slots=True)
class FabricAccess:
    """Everything :class:`~mycelium.fabric.etcd_client.EtcdClient` needs beyond endpoints."""

    url: str
    tls: ssl.SSLContext | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def fabric_access(url: str, *, ca: str | None = None, cert: str | None = None,
                  key: str | None = None, user: str | None = None,
                  password: str | None = None, insecure: bool = False) -> FabricAccess:
    """Check a ``--fabric`` URL and its credentials; build the TLS context.

    Args:
        url: ``etcd://HOST:PORT[,…]`` or ``etcds://HOST:PORT[,…]``.
        ca: PEM file of the CA that signed etcd's certificate (``etcds://`` only).
        cert: PEM client certificate for TLS client auth (with ``key``).
        key: PEM private key of ``cert``.
        user: etcd user name (needs ``password``).
        password: The user's password (from :data:`PASSWORD_ENV`).
        insecure: ``--insecure-fabric``: allow plain ``etcd://`` to non-loopback hosts.

    Raises:
        BadInput: a malformed URL; plain ``etcd://`` to another machine without ``insecure``;
            TLS files with plain ``etcd://``; a certificate without its key (or the reverse);
            an unreadable or invalid TLS file; a user without a password (or the reverse).
    """
    if not url.startswith(("etcd://", "etcds://")):
        raise BadInput(f"bad --fabric {url!r}: expected etcd://HOST:PORT[,HOST:PORT…] or "
                       "etcds://… (TLS)")
    try:
        endpoints = parse_endpoints(url)
    except ValueError as exc:
        raise BadInput(f"bad --fabric {url!r}: {exc}") from None
    secure = url.startswith("etcds://")
    if not secure:
        remote = [h for h, _p in endpoints if not is_loopback(h)]
        if remote and not insecure:
            raise BadInput(f"insecure fabric: plain etcd:// to {', '.join(remote)} sends the "
                           "mesh's state unencrypted and unauthenticated; use etcds:// with "
                           "[fabric] ca/cert/key, or pass --insecure-fabric")
        if ca or cert or key:
            raise BadInput("[fabric] ca, cert and key need --fabric etcds://… (TLS)")
    if bool(cert) != bool(key):
        raise BadInput("[fabric] cert and key go together (TLS client auth): set both")
    if user and password is None:
        raise BadInput(f"[fabric] user {user!r} needs its password in {PASSWORD_ENV}")
    if password is not None and not user:
        raise BadInput(f"{PASSWORD_ENV} is set but [fabric] user is not")
    return FabricAccess(url=url, tls=_context(ca, cert, key) if secure else None,
                        user=user or None, password=password if user else None)


def _context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """A client TLS context verifying etcd (against ``ca``) and presenting ``cert``."""
    try:
        context = ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise BadInput(f"[fabric] ca {ca!r} is not a readable PEM CA file: "
                       f"{getattr(exc, 'strerror', None) or exc}") from None
    if cert and key:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise BadInput(f"[fabric] cert {cert!r} / key {key!r}: not a readable PEM "
                           f"certificate and its key: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None
    return context
