"""TLS termination on the edge: certificate pairs, the SNI choice, and the HTTPS redirect.

A :class:`CertStore` is an immutable set of loaded ``SSLContext`` objects, one per
certificate/key pair, indexed by the names in each certificate's subjectAltName. The listener's
own context never changes: its ``sni_callback`` hands every new handshake the context the
*current* store picks for the client's server name, so a reload is one attribute store (new
handshakes get the new certificates; open connections keep the ``SSLObject`` they have).
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mycelium.edge.errors import EdgeConfigError

__all__ = ["CIPHERS", "CertPair", "CertStore", "TLSConfigError", "TLSListener", "TLSSettings",
           "cert_names", "https_location", "name_matches", "server_context"]

CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
"""TLS 1.2 suites allowed: forward-secret ECDHE with AEAD ciphers only (1.3's are all fine)."""


class TLSConfigError(EdgeConfigError):
    """A certificate or key is unreadable, malformed, or the two do not match (exit 2)."""


@dataclass(frozen=True, slots=True)
class CertPair:
    """A certificate chain file and its private key file (PEM)."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """The edge's TLS listener.

    Attributes:
        port: The TLS port (0 picks a free one).
        pairs: Certificate/key pairs; the first is the default (no SNI, or no name matches).
        redirect: The plain port answers 308 to ``https://`` for hosts with a certificate.
    """

    port: int = 8443
    pairs: tuple[CertPair, ...] = field(default_factory=tuple)
    redirect: bool = False

    def __post_init__(self) -> None:
        """Raises: EdgeConfigError: no pair, or a port out of range."""
        if not self.pairs:
            raise EdgeConfigError("TLS needs at least one certificate/key pair")
        if not 0 <= self.port <= 65535:
            raise EdgeConfigError(f"edge TLS port {self.port} is not in 0..65535")


def server_context() -> ssl.SSLContext:
    """A server context with the edge's policy and no certificate yet.

    TLS 1.2 minimum, ECDHE+AEAD suites for 1.2, no compression, server cipher order, ALPN
    ``http/1.1``; OpenSSL's server session cache and session tickets stay on (the default).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _load_pair(pair: CertPair) -> tuple[ssl.SSLContext, tuple[str, ...]]:
    """The pair's context and its names.

    Raises:
        TLSConfigError: a file is unreadable, not PEM, or the key does not match.
    """
    for path, what in ((pair.cert, "certificate"), (pair.key, "key")):
        try:
            path.read_bytes()
        except OSError as exc:
            raise TLSConfigError(f"cannot read TLS {what} {path}: "
                                 f"{exc.strerror or exc}") from None
    try:
        names = cert_names(pair.cert.read_bytes())
    except ValueError as exc:
        raise TLSConfigError(f"TLS certificate {pair.cert} is not a PEM certificate: "
                             f"{exc}") from None
    ctx = server_context()
    try:
        ctx.load_cert_chain(str(pair.cert), str(pair.key))
    except ssl.SSLError as exc:
        why = ("the key does not match the certificate" if "mismatch" in str(exc)
               else f"bad certificate or key ({exc.reason or exc})")
        raise TLSConfigError(f"TLS pair {pair.cert} / {pair.key}: {why}") from None
    return ctx, names


def cert_names(pem: bytes) -> tuple[str, ...]:
    """The DNS names and IP addresses of a PEM certificate's subjectAltName, lowercased.

    Raises:
        ValueError: not a PEM certificate.
    """
    from cryptography import x509  # here: an edge without TLS (every worker) never pays it
    from cryptography.x509.oid import ExtensionOID

    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        return ()
    assert isinstance(san, x509.SubjectAlternativeName)
    dns = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return tuple(dns + ips)


def name_matches(pattern: str, host: str) -> bool:
    """Whether ``host`` matches a SAN entry: exact, or ``*.suffix`` for one label (RFC 6125)."""
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:]
    return host == pattern


class CertStore:
    """The loaded pairs and the choice by server name.

    Args:
        pairs: Certificate/key pairs; the first is the default.

    Raises:
        TLSConfigError: any pair is bad (nothing is half-loaded).
    """

    def __init__(self, pairs: Sequence[CertPair]) -> None:
        loaded = [_load_pair(p) for p in pairs]
        if not loaded:
            raise TLSConfigError("TLS needs at least one certificate/key pair")
        self.default = loaded[0][0]
        self._exact: dict[str, ssl.SSLContext] = {}
        self._wild: list[tuple[str, ssl.SSLContext]] = []
        for ctx, names in loaded:
            for name in names:
                if name.startswith("*."):
                    self._wild.append((name, ctx))
                else:
                    self._exact.setdefault(name, ctx)
        self.names: tuple[str, ...] = tuple(dict.fromkeys(
            n for _ctx, names in loaded for n in names))
        """Every name some certificate covers (for the HTTPS redirect)."""

    def pick(self, server_name: str | None) -> ssl.SSLContext:
        """The context for a client's SNI name (exact, then wildcard, else the default)."""
        if not server_name:
            return self.default
        name = server_name.lower().rstrip(".")
        ctx = self._exact.get(name)
        if ctx is not None:
            return ctx
        for pattern, wild in self._wild:
            if name_matches(pattern, name):
                return wild
        return self.default

    def covers(self, host: str) -> bool:
        """Whether some certificate names ``host`` (a host name or an IP, no port)."""
        return any(name_matches(n, host) for n in self.names)


class TLSListener:
    """The listener's fixed context, which serves whatever the current store picks.

    Args:
        settings: The pairs to load.

    Raises:
        TLSConfigError: a pair is bad.
    """

    def __init__(self, settings: TLSSettings) -> None:
        self.settings = settings
        self.store = CertStore(settings.pairs)
        self.context = server_context()
        default = settings.pairs[0]
        self.context.load_cert_chain(str(default.cert), str(default.key))
        self.context.sni_callback = self._choose

    def _choose(self, sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        sslobj.context = self.store.pick(name)  # a new handshake: today's certificates

    def reload(self) -> None:
        """Re-read every pair; new handshakes use them, open connections keep theirs.

        Raises:
            TLSConfigError: a pair is bad now; the old certificates stay in use.
        """
        self.store = CertStore(self.settings.pairs)  # one attribute store


def https_location(host: str | None, target: str, tls_port: int,
                   names: Iterable[str]) -> str | None:
    """The ``Location`` of the plain port's 308, or None when the request is served as is.

    Args:
        host: The request's ``Host`` (port ignored), or None.
        target: The request target (path and query kept).
        tls_port: The TLS port, named in the URL unless it is 443.
        names: The names the certificates cover.
    """
    if host is None or target.startswith("/_mycelium/") or not target.startswith("/"):
        return None
    name = host.strip()
    if name.startswith("["):  # [v6]:port
        name = name[1:name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    name = name.lower().rstrip(".")
    if not name or not any(name_matches(n, name) for n in names):
        return None
    try:
        shown = f"[{name}]" if ipaddress.ip_address(name).version == 6 else name
    except ValueError:
        shown = name
    port = "" if tls_port == 443 else f":{tls_port}"
    return f"https://{shown}{port}{target}"
