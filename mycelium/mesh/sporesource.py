"""The spores a mesh runs: resolved, fetched if the backend can, verified against local trust.

Every spore an agent starts and every digest ``deploy`` names goes through here, so that a
member of a multi-machine mesh fetches what it lacks at the same two points the single-machine
mesh only reads its repo: the backend's :meth:`~mycelium.mesh.backend.FabricBackend.fetch` is
called first, then the local repo answers (verified against this home's own trusted keys).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

from mycelium.fabric.validate import DIGEST
from mycelium.home import Home
from mycelium.node.settings import SporeInfo
from mycelium.spores import Limits, Manifest, Repo, extract, load_trusted

__all__ = ["SporeSource"]


class SporeSource:
    """The home's repo plus a way to fill it.

    Args:
        home: The mesh home (its repo and trusted keys).
        limits: Size limits checked before a spore is extracted.
        fetch: Makes a digest present locally if it can (the backend's ``fetch``).
    """

    def __init__(self, home: Home, limits: Limits,
                 fetch: Callable[[str], None] = lambda _digest: None) -> None:
        self.home = home
        self.limits = limits
        self.repo = Repo(home.repo)
        self.fetch = fetch
        self._lock = threading.Lock()
        self._infos: dict[str, tuple[tuple[object, ...], SporeInfo]] = {}

    def resolve(self, digest: str) -> str:
        """The full digest ``digest`` names (a full one is fetched first if missing).

        Raises:
            UnknownSpore: no such spore here, nor (for a full digest) anywhere it can fetch.
        """
        if DIGEST.fullmatch(digest):
            self.fetch(digest)
        return self.repo.resolve(digest)

    def manifest(self, digest: str) -> Manifest:
        """The verified manifest of a local spore.

        Raises:
            SporeError: missing, tampered with, untrusted or over the limits.
        """
        return self.repo.verify(digest, load_trusted(self.home), self.limits).manifest

    def info(self, digest: str) -> SporeInfo:
        """What an agent needs to start ``digest`` (fetched first if missing).

        Verified once per spore file and trusted set, not once per instance: a mass start of
        300 instances of 100 spores hashed and checked every file six times (its name, then
        its manifest; ~6 % of the mesh's time). The file is known again by its inode, size and
        change times, so a replaced or rewritten file is verified anew, and a trusted key
        added or removed verifies every spore anew; every instance's :meth:`extract` still
        verifies the spore it unpacks.
        """
        self.fetch(digest)
        try:
            st = self.repo.location(digest).stat()
        except OSError:
            return self._info(digest)  # says what is wrong
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, load_trusted(self.home))
        with self._lock:
            known = self._infos.get(digest)
        if known is not None and known[0] == key:
            return dataclasses.replace(known[1], env=dict(known[1].env))  # each its own env
        info = self._info(digest)
        with self._lock:
            self._infos[digest] = (key, info)
        return info

    def _info(self, digest: str) -> SporeInfo:
        m = self.manifest(digest)
        return SporeInfo(path=self.repo.path(digest), args=tuple(m.args), env=dict(m.env),
                         health=m.health, checks=m.checks,
                         env_secrets=tuple(m.env_secrets))

    def extract(self, spore: Path, dest: Path) -> Path:
        """Unpack a verified spore into ``dest`` (the instance's directory)."""
        return extract(spore, dest, load_trusted(self.home), self.limits)
