"""A small client for etcd's v3 JSON gateway (``/v3/...`` over HTTP), standard library only.

Why not a client library: the fabric needs eight calls (range, put, delete, txn, lease grant /
keep-alive / revoke, watch) with explicit, short timeouts and a clear error on every failure, so
that a lost etcd never blocks an actor for long. etcd's JSON gateway is its documented HTTP
face of the same gRPC API (keys and values base64), available in every etcd >= 3.4 — Debian's
``etcd-server`` included. The maintained gateway client (etcd3gw) would add requests, futurist
and pbr to the runtime dependencies for the same calls. Consensus stays entirely in etcd.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import random
import socket
import ssl
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import FabricError

__all__ = ["EtcdAuthFailed", "EtcdClient", "EtcdUnavailable", "Event", "KeyValue",
           "parse_endpoints", "prefix_end"]


class EtcdUnavailable(FabricError):
    """No etcd endpoint answered (or it answered with an error)."""


class EtcdAuthFailed(EtcdUnavailable):
    """etcd refused the user name or password (bad input: exit 2; the password never shows)."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key in etcd."""

    key: str
    value: bytes
    mod_revision: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    """One watch event: ``kind`` is ``put`` or ``delete`` (``value`` empty for a delete)."""

    kind: str
    key: str
    value: bytes
    mod_revision: int


def parse_endpoints(spec: str) -> tuple[tuple[str, int], ...]:
    """``etcd://HOST:PORT[,HOST:PORT…]`` (or ``etcds://`` for TLS; scheme optional) →
    ``((host, port), …)``.

    Raises:
        ValueError: an empty list, a missing or bad port.
    """
    body = spec.split("://", 1)[1] if spec.startswith(("etcd://", "etcds://")) else spec
    out = []
    for part in body.split(","):
        part = part.strip().rstrip("/")
        if not part:
            continue
        split = urlsplit(f"//{part}")
        if not split.hostname or split.port is None:
            raise ValueError(f"bad etcd endpoint {part!r}: expected HOST:PORT")
        out.append((split.hostname, split.port))
    if not out:
        raise ValueError(f"no etcd endpoint in {spec!r}: expected etcd://HOST:PORT[,HOST:PORT…]")
    return tuple(out)


def prefix_end(prefix: str) -> str:
    """The ``range_end`` that selects every key starting with ``prefix`` (ASCII prefixes)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def _kv(item: dict[str, Any]) -> KeyValue:
    return KeyValue(key=_unb64(item.get("key")).decode(), value=_unb64(item.get("value")),
                    mod_revision=int(item.get("mod_revision", 0)),
                    lease=int(item.get("lease", 0)))


class EtcdClient:
    """Calls etcd's JSON gateway; tries each endpoint in turn until one answers.

    Args:
        endpoints: ``(host, port)`` pairs of the etcd cluster's client URLs.
        timeout: Seconds for one HTTP call (connect and answer).
        tls: HTTPS with this context (CA, and the client certificate for TLS client auth);
            None: plain HTTP.
        user: etcd's user name (role-based access); the password comes with it.
        password: That user's password (kept only to re-authenticate; never in a message).
    """

    def __init__(self, endpoints: Sequence[tuple[str, int]], timeout: float = 2.0, *,
                 tls: ssl.SSLContext | None = None, user: str | None = None,
                 password: str | None = None) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint")
        self.endpoints = tuple(endpoints)
        self.timeout = timeout
        self._tls = tls
        self._user = user
        self._password = password
        self._token: str | None = None
        self._preferred = 0
        self._lock = threading.Lock()
        self._streams: set[http.client.HTTPConnection] = set()

    def __repr__(self) -> str:
        scheme = "etcds" if self._tls is not None else "etcd"
        who = f", user={self._user!r}" if self._user else ""
        return (f"EtcdClient({scheme}://"
                f"{','.join(f'{h}:{p}' for h, p in self.endpoints)}{who})")

    # -- transport -------------------------------------------------------------------------

    def _connect(self, host: str, port: int, timeout: float) -> http.client.HTTPConnection:
        """A connection to one endpoint: HTTPS with the client's TLS context, else HTTP."""
        if self._tls is not None:
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._tls)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._user is not None:
            if self._token is None:
                self._token = self._authenticate()
            headers["Authorization"] = self._token
        return headers

    def _authenticate(self) -> str:
        """A fresh auth token for the user (etcd's ``/v3/auth/authenticate``).

        Raises:
            EtcdAuthFailed: etcd refused the user or password.
            EtcdUnavailable: no endpoint answered.
        """
        body = json.dumps({"name": self._user, "password": self._password or ""}).encode()
        status, payload, where, _ = self._post("/v3/auth/authenticate", body,
                                               {"Content-Type": "application/json"})
        try:
            token = json.loads(payload).get("token") if status == 200 else None
        except ValueError:
            token = None
        if not token:
            raise EtcdAuthFailed(f"etcd {where} refused user {self._user!r}: wrong "
                                 "user name or password (MYCELIUM_ETCD_PASSWORD), or "
                                 "authentication is not enabled")
        return str(token)

    def _post(self, path: str, data: bytes,
              headers: dict[str, str]) -> tuple[int, bytes, str, int]:
        """POST to the first endpoint that answers: its status, body, ``host:port`` and index.

        Raises:
            EtcdUnavailable: no endpoint answered.
        """
        errors = []
        for i in self._order():
            host, port = self.endpoints[i]
            conn = self._connect(host, port, self.timeout)
            try:
                conn.request("POST", path, data, headers)
                resp = conn.getresponse()
                return resp.status, resp.read(), f"{host}:{port}", i
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"{host}:{port}: {exc or type(exc).__name__}")
            finally:
                conn.close()
        raise EtcdUnavailable("etcd unreachable (" + "; ".join(errors) + ")")

    def _order(self) -> list[int]:
        n = len(self.endpoints)
        return [(self._preferred + i) % n for i in range(n)]

    def call(self, path: str, body: dict[str, Any], *, _fresh: bool = False) -> dict[str, Any]:
        """POST ``body`` to ``/v3/<path>`` on the first endpoint that answers.

        Raises:
            EtcdUnavailable: no endpoint answered, or etcd refused the request.
        """
        status, payload, where, index = self._post(f"/v3/{path}", json.dumps(body).encode(),
                                                   self._headers())
        if status != 200 and self._user is not None and not _fresh and b"auth token" in payload:
            self._token = None  # expired (etcd's simple tokens do): once more, fresh
            return self.call(path, body, _fresh=True)
        if status != 200:
            raise EtcdUnavailable(f"etcd {where} refused {path}: HTTP {status} {payload[:200]!r}")
        self._preferred = index
        result: dict[str, Any] = json.loads(payload)
        return result

    # -- key/value -------------------------------------------------------------------------

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` and the store's revision at that moment."""
        reply = self.call("kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))})
        return ([_kv(i) for i in reply.get("kvs", [])],
                int(reply.get("header", {}).get("revision", 0)))

    def get(self, key: str) -> KeyValue | None:
        """One key, or None."""
        kvs = self.call("kv/range", {"key": _b64(key)}).get("kvs", [])
        return _kv(kvs[0]) if kvs else None

    def put(self, key: str, value: bytes, lease: int = 0) -> None:
        """Write one key (under ``lease`` when non-zero)."""
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        self.call("kv/put", body)

    def delete(self, key: str) -> None:
        """Delete one key."""
        self.call("kv/deleterange", {"key": _b64(key)})

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
            failure: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """One etcd transaction (raw gateway structures; see :meth:`put_op` and friends)."""
        return self.call("kv/txn", {"compare": compare, "success": success,
                                    "failure": failure or []})

    @staticmethod
    def put_op(key: str, value: bytes, lease: int = 0) -> dict[str, Any]:
        """A put inside a transaction."""
        op: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            op["lease"] = str(lease)
        return {"request_put": op}

    @staticmethod
    def delete_op(key: str) -> dict[str, Any]:
        """A delete inside a transaction."""
        return {"request_delete_range": {"key": _b64(key)}}

    @staticmethod
    def absent(key: str) -> dict[str, Any]:
        """A comparison that holds while ``key`` does not exist."""
        return {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}

    @staticmethod
    def value_is(key: str, value: bytes) -> dict[str, Any]:
        """A comparison that holds while ``key`` has exactly ``value``."""
        return {"key": _b64(key), "target": "VALUE", "result": "EQUAL", "value": _b64(value)}

    # -- leases ----------------------------------------------------------------------------

    def lease_grant(self, ttl: float) -> int:
        """A new lease of ``ttl`` seconds (rounded up to whole seconds, etcd's unit)."""
        reply = self.call("lease/grant", {"TTL": str(max(1, int(-(-ttl // 1))))})
        if reply.get("error"):
            raise EtcdUnavailable(f"etcd refused a lease: {reply['error']}")
        return int(reply["ID"])

    def lease_keepalive(self, lease: int) -> bool:
        """Refresh a lease once; False when it has already expired (its keys are gone)."""
        reply = self.call("lease/keepalive", {"ID": str(lease)})
        return int(reply.get("result", {}).get("TTL", 0)) > 0

    def lease_revoke(self, lease: int) -> None:
        """End a lease now (its keys are deleted)."""
        self.call("lease/revoke", {"ID": str(lease)})

    def status(self) -> dict[str, Any]:
        """The answering member's status (version, leader, …): a cheap liveness probe."""
        return self.call("maintenance/status", {})

    # -- watches ---------------------------------------------------------------------------

    def watch_prefix(self, prefix: str, start_revision: int,
                     stop: threading.Event) -> Iterator[list[Event]]:
        """Yield batches of events under ``prefix`` from ``start_revision`` on, until ``stop``.

        The stream is one long HTTP response; ``stop`` is looked at whenever a batch or etcd's
        progress notification arrives, so callers also close it by letting the connection drop.

        Raises:
            EtcdUnavailable: the stream could not start or broke (the caller resumes from the
                last revision it saw + 1).
        """
        body = json.dumps({"create_request": {
            "key": _b64(prefix), "range_end": _b64(prefix_end(prefix)),
            "start_revision": str(start_revision), "progress_notify": True}}).encode()
        host, port = self.endpoints[self._order()[0]]
        conn = self._connect(host, port, self.timeout + 10.0)
        with self._lock:
            self._streams.add(conn)
        try:
            try:
                conn.request("POST", "/v3/watch", body, self._headers())
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                self._preferred = random.randrange(len(self.endpoints))
                raise EtcdUnavailable(f"etcd watch on {host}:{port} failed: {exc}") from exc
            while not stop.is_set():
                try:
                    line = resp.readline()
                except (OSError, http.client.HTTPException) as exc:
                    raise EtcdUnavailable(f"etcd watch broke: {exc}") from exc
                if not line:
                    raise EtcdUnavailable("etcd closed the watch")
                if not line.strip():
                    continue
                result = json.loads(line).get("result", {})
                if result.get("canceled"):
                    raise EtcdUnavailable(f"etcd cancelled the watch: "
                                          f"{result.get('cancel_reason', '?')}")
                events = [Event("delete" if e.get("type") == "DELETE" else "put",
                                _unb64(e["kv"].get("key")).decode(),
                                _unb64(e["kv"].get("value")),
                                int(e["kv"].get("mod_revision", 0)))
                          for e in result.get("events", [])]
                yield events
        finally:
            with self._lock:
                self._streams.discard(conn)
            conn.close()

    def abort_watches(self) -> None:
        """Break every open watch stream now (their iterators raise :class:`EtcdUnavailable`)."""
        with self._lock:
            streams = list(self._streams)
        for conn in streams:
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
