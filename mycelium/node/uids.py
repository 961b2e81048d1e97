"""Dynamic uids: this home's sub-range of a reserved range, and the pool that hands them out.

The reserved range is 0x70000000-0x7FFDFFFF (1879048192-2147352575), which systemd's
"UIDs and GIDs" document lists as unused by it and by its containers (DynamicUser takes
61184-65519, nspawn containers 524288-1879048191), and which stays below 2^31 so tools that
keep uids in a signed int show them right. It is cut into 4094 sub-ranges of 65536 uids; a
home takes the sub-range its path hashes to, or the next free one, and records the claim in
``/var/lib/mycelium/uid-ranges/<n>`` (the home's path). A claim whose home no longer exists is
free again. So two meshes with different homes on one machine never share a uid, and a home
keeps its sub-range across restarts (the next ``up`` after a kill -9 knows whose leftovers are
whose). gid = uid; nothing is written to /etc/passwd or /etc/group.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from mycelium.errors import BadInput

__all__ = ["RANGE_FIRST", "RANGE_LAST", "RANGE_SIZE", "SUBRANGES", "UidPool", "UidRange",
           "claim_range", "home_index", "subrange_of"]

RANGE_FIRST = 0x70000000
RANGE_LAST = 0x7FFDFFFF
RANGE_SIZE = 65536
SUBRANGES = (RANGE_LAST - RANGE_FIRST + 1) // RANGE_SIZE  # 4094


@dataclass(frozen=True, slots=True)
class UidRange:
    """``first``..``last`` inclusive: one home's dynamic uids."""

    first: int
    last: int

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, int) and self.first <= uid <= self.last


def subrange_of(index: int) -> UidRange:
    """The ``index``-th sub-range (0 ≤ index < SUBRANGES)."""
    first = RANGE_FIRST + (index % SUBRANGES) * RANGE_SIZE
    return UidRange(first, first + RANGE_SIZE - 1)


def home_index(home_root: Path) -> int:
    """The sub-range a home hashes to (it may be taken: see :func:`claim_range`)."""
    digest = hashlib.sha256(str(home_root).encode()).digest()
    return int.from_bytes(digest[:8], "big") % SUBRANGES


def claim_range(home_root: Path, claims: Path) -> UidRange:
    """This home's sub-range: the one its path hashes to, else the next one not claimed.

    Raises:
        BadInput: every sub-range is claimed by a home that still exists.
    """
    home = str(home_root)
    start = home_index(home_root)
    claims.mkdir(mode=0o700, parents=True, exist_ok=True)
    for step in range(SUBRANGES):
        index = (start + step) % SUBRANGES
        path = claims / str(index)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            try:
                owner = path.read_text()
            except OSError:
                continue
            if owner == home:
                return subrange_of(index)
            if Path(owner).is_dir():
                continue
            tmp = claims / f".{index}.{os.getpid()}"  # a stale claim: take it over atomically
            tmp.write_text(home)
            os.replace(tmp, path)
            return subrange_of(index)
        with os.fdopen(fd, "w") as fh:
            fh.write(home)
        return subrange_of(index)
    raise BadInput(f"no free dynamic uid range left in {claims}")


class UidPool:
    """Hands out the uids of one range to live instances; thread-safe.

    Uids are taken round-robin from a cursor, so a uid just given back is the last to be handed
    out again (a straggler of the old instance, should one exist, is never mistaken for the new
    one's).
    """

    def __init__(self, uids: UidRange) -> None:
        self.uids = uids
        self._lock = threading.Lock()
        self._taken: dict[int, str] = {}
        self._cursor = uids.first

    def acquire(self, owner: str) -> int:
        """A uid no live instance holds.

        Raises:
            BadInput: all 65536 are taken.
        """
        with self._lock:
            size = self.uids.last - self.uids.first + 1
            for _ in range(size):
                uid = self._cursor
                self._cursor = uid + 1 if uid < self.uids.last else self.uids.first
                if uid not in self._taken:
                    self._taken[uid] = owner
                    return uid
        raise BadInput(f"every dynamic uid of {self.uids.first}-{self.uids.last} is in use")

    def reserve(self, uid: int, owner: str) -> None:
        """Keep ``uid`` out of the pool (a previous mesh's instance still runs under it)."""
        with self._lock:
            self._taken.setdefault(uid, owner)

    def release(self, uid: int) -> None:
        """Give ``uid`` back (no-op if it was not taken)."""
        with self._lock:
            self._taken.pop(uid, None)

    def taken(self) -> dict[int, str]:
        """``{uid: owner}`` of the uids held now."""
        with self._lock:
            return dict(self._taken)

