"""Spores by digest between the members of a mesh: no shared filesystem assumed.

Each member serves its repo read-only over HTTP (:class:`SporeServer`, ``GET /spores/<digest>``
on its advertise host, a port of its own, never the edge's). A member that must run a digest it
lacks fetches it with :func:`fetch` from the members that advertise a server. Nothing fetched
is trusted: the download must hash to the digest asked for, and the spore is then verified in
full against this home's LOCAL trusted keys (signature, hashes, archive safety) before it is
renamed into the repo — what etcd says can never make a member run a spore it does not trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tempfile
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from .errors import SporeError
from .limits import Limits
from .repo import DIGEST_RE, Repo

__all__ = ["SporeServer", "fetch"]

_CHUNK = 1 << 16


class SporeServer:
    """Serves ``GET /spores/<digest>`` from a repo, read-only (anything else: 404/405).

    Args:
        repo: The repo to serve.
        host: Where to listen (the member's advertise host).
        port: The port (0: any free port; see :attr:`url`).
    """

    def __init__(self, repo: Repo, host: str = "127.0.0.1", port: int = 0) -> None:
        self.repo = repo
        handler = _handler(repo)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.host = host

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port`` for other members."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> SporeServer:
        """Serve in a daemon thread (the socket already listens)."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="spore-server",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5.0)
            self._thread = None
        self._server.server_close()


def _handler(repo: Repo) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "mycelium-spores"

        def do_GET(self) -> None:
            name = self.path.split("?", 1)[0]
            digest = name[len("/spores/"):] if name.startswith("/spores/") else ""
            if not DIGEST_RE.fullmatch(digest) or not repo.has(digest):
                self.send_error(404, "no such spore")
                return
            path = repo.root / f"{digest}.spore"
            try:
                f = open(path, "rb")  # noqa: SIM115 - closed below
            except OSError:
                self.send_error(404, "no such spore")
                return
            with f:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(os.fstat(f.fileno()).st_size))
                self.end_headers()
                with contextlib.suppress(OSError):
                    while chunk := f.read(_CHUNK):
                        self.wfile.write(chunk)

        def do_POST(self) -> None:
            self.send_error(405, "read-only")

        do_PUT = do_DELETE = do_POST

        def log_message(self, *_args: object) -> None:
            return  # quiet: the mesh has its own log

    return Handler


def fetch(repo: Repo, digest: str, sources: Iterable[str], trusted: frozenset[str],
          limits: Limits | None = None, timeout: float = 10.0) -> Path:
    """Make ``digest`` present in ``repo``, fetching it from the first source that has it.

    Args:
        repo: This home's repo.
        digest: The 64-hex digest wanted.
        sources: Spore server URLs (``http://host:port``) of other members.
        trusted: This home's trusted keys (the only ones that count).
        limits: Size limits (also cap the download).
        timeout: Seconds per connection step.

    Returns:
        The spore's path in the repo.

    Raises:
        SporeError: no source had a spore of that digest that verifies here (the reasons of
            every source are in the message); the repo is unchanged.
    """
    if repo.has(digest):
        return repo.path(digest)
    if not DIGEST_RE.fullmatch(digest):
        raise SporeError(f"bad digest {digest!r}")
    limits = limits or Limits()
    reasons = []
    for source in sources:
        try:
            tmp = _download(repo, digest, source, limits, timeout)
        except (OSError, http.client.HTTPException, SporeError) as exc:
            reasons.append(f"{source}: {exc}")
            continue
        try:
            repo.adopt(tmp, trusted, limits, digest=digest)
        except SporeError as exc:
            reasons.append(f"{source}: {exc}")
            continue
        return repo.path(digest)
    raise SporeError(f"spore {digest[:12]} could not be fetched from another member: "
                     + ("; ".join(reasons) if reasons else "no member serves spores"))


def _download(repo: Repo, digest: str, source: str, limits: Limits, timeout: float) -> Path:
    split = urlsplit(source)
    if split.scheme != "http" or not split.hostname:
        raise SporeError(f"bad spore source {source!r}")
    conn = http.client.HTTPConnection(split.hostname, split.port or 80, timeout=timeout)
    repo.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".fetch-", suffix=".partial", dir=repo.root)
    tmp = Path(name)
    try:
        conn.request("GET", f"/spores/{digest}")
        resp = conn.getresponse()
        if resp.status != 200:
            raise SporeError(f"HTTP {resp.status}")
        size = int(resp.getheader("Content-Length") or 0)
        if size > limits.max_archive_bytes:
            raise SporeError(f"archive is over the limit of {limits.max_archive_bytes} bytes")
        sha, got = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            fd = -1
            while chunk := resp.read(_CHUNK):
                got += len(chunk)
                if got > limits.max_archive_bytes:
                    raise SporeError(f"archive is over the limit of "
                                     f"{limits.max_archive_bytes} bytes")
                sha.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if sha.hexdigest() != digest:
            raise SporeError(f"the download's sha256 is {sha.hexdigest()}, not {digest}")
        return tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if fd >= 0:
            os.close(fd)
        conn.close()
