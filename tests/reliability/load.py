"""A steady load through the edge: keep-alive connections in threads, counting failures.

Used by tests/reliability and bench/rollout.py, bench/chaos.py. A request fails if it raises or
answers non-2xx; the body's ``version`` (JSON) is counted per version, so a test can see both
versions served during a switch and only the new one after.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Load"]


@dataclass
class _Stats:
    ok: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    last_seen: dict[str, float] = field(default_factory=dict)


class Load:
    """``threads`` keep-alive clients GETting ``/<app>/`` on the edge until :meth:`stop`.

    Args:
        port: The edge's port on 127.0.0.1.
        app: The app to request.
        threads: Concurrent connections.
        pause: Seconds between two requests of one connection (keeps the 2-core machine usable).
    """

    def __init__(self, port: int, app: str, threads: int = 2, pause: float = 0.005) -> None:
        self.port, self.app, self.pause = port, app, pause
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.stats = _Stats()
        self._threads = [threading.Thread(target=self._run, daemon=True, name=f"load-{k}")
                         for k in range(threads)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> _Stats:
        """Stop every client and return the counts."""
        self._stop.set()
        for t in self._threads:
            t.join(10)
        return self.stats

    @property
    def total(self) -> int:
        """Requests answered so far (ok + failed)."""
        with self._lock:
            return self.stats.ok + self.stats.failed

    def wait_requests(self, n: int, timeout: float = 20.0) -> None:
        """Block until at least ``n`` more requests were answered."""
        target, deadline = self.total + n, time.monotonic() + timeout
        while self.total < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"the load made no progress: {self.stats}")
            time.sleep(0.01)

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        path = f"/{self.app}/"
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
                ok = 200 <= resp.status < 300
                version = ""
                if ok:
                    try:
                        version = str(json.loads(body).get("version", ""))
                    except ValueError:
                        version = "?"
                error = "" if ok else f"HTTP {resp.status} {body[:120]!r}"
            except (OSError, http.client.HTTPException) as exc:
                ok, version, error = False, "", f"{type(exc).__name__}: {exc}"
                if conn is not None:
                    conn.close()
                conn = None
            with self._lock:
                if ok:
                    self.stats.ok += 1
                    self.stats.last_seen[version] = time.monotonic()
                    self.stats.versions[version] += 1
                else:
                    self.stats.failed += 1
                    self.stats.errors[error] += 1
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()
