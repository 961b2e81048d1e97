"""The files of an instance's sandbox: handed to the workload's uid, or kept from it.

Pure file-system steps for :mod:`.isolation`: chown/chmod without following symlinks, and the
credentials written as files only their owner can read.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from mycelium.errors import BadInput

__all__ = ["WORKLOAD_PARTS", "own", "own_tree", "private_files", "write_credentials"]

#: The workload's own parts of an instance directory (the rest is the mesh's).
WORKLOAD_PARTS = frozenset({"app", "home", "tmp", "credentials"})


def private_files(root: Path) -> None:
    """The mesh's own files of the instance (its output, its record) for the mesh alone.

    Only needed when the mesh's umask is not 077 (see :meth:`.isolation.Isolation.arm_mesh`): the
    instance's directory is searchable by the workload's uid, so anything in it that is not the
    workload's must not be readable by others.
    """
    for entry in root.iterdir():
        if entry.name in WORKLOAD_PARTS or entry.is_symlink():
            continue
        os.chmod(entry, 0o700 if entry.is_dir() else 0o600)


def own(path: Path, uid: int | None, gid: int | None, mode: int) -> None:
    if uid is not None and gid is not None:
        os.chown(path, uid, gid, follow_symlinks=False)
    os.chmod(path, mode)


def own_tree(top: Path, uid: int | None, gid: int | None) -> None:
    """Hand the extracted app to the workload's uid; its top becomes 0700."""
    if not top.is_dir():
        return
    if uid is not None and gid is not None:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in [*dirnames, *filenames]:
                os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)
        os.chown(top, uid, gid)
    os.chmod(top, 0o700)


def write_credentials(directory: Path, credentials: Mapping[str, bytes], uid: int | None,
                       gid: int | None) -> None:
    """One file per credential, 0400, in a 0500 directory, both owned by the workload's uid."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700)
    for name, value in credentials.items():
        if "/" in name or name in ("", ".", ".."):
            raise BadInput(f"bad credential name {name!r}")
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                     0o400)
        try:
            os.write(fd, value)
            if uid is not None and gid is not None:
                os.fchown(fd, uid, gid)
        finally:
            os.close(fd)
    own(directory, uid, gid, 0o500)

