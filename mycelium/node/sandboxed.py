"""One instance's confinement, put together at spawn: its sandbox, its environment, its jail.

The seam between :mod:`.isolation` (policy: uids, directories, environment, limits) and
:mod:`.process` (which only knows a :class:`~.containment.Confinement`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from .containment import Confinement, Jail, TagJail, UidJail
from .isolation import Isolation, Sandbox

__all__ = ["InstanceSandbox", "confinement"]


def confinement(isolation: Isolation, root: Path, key: str, own: Mapping[str, str],
                manifest_env: Mapping[str, str], extra_env: Mapping[str, str] | None = None,
                credentials: Mapping[str, bytes] | None = None
                ) -> tuple[Sandbox, dict[str, str], Confinement]:
    """Prepare the instance at ``root`` and say how to spawn its workload.

    Args:
        isolation: The node's policy.
        root: The instance's directory (the spore is already extracted into ``root/app``).
        key: The instance id (names the uid's holder in the pool).
        own: ``PORT`` and the ``MYCELIUM_*`` variables.
        manifest_env: The manifest's ``env``.
        extra_env: More variables after the manifest's (secrets).
        credentials: Files for ``$CREDENTIALS_DIRECTORY``.

    Returns:
        The sandbox (give it back with :meth:`Isolation.release`), the whole environment, and
        the :class:`Confinement` for :func:`~.process.spawn`.
    """
    inherited = isolation.inherited()
    sandbox = isolation.prepare(root, key, credentials, armed=inherited)
    env = isolation.environment(sandbox, own, manifest_env, extra_env)
    jail: Jail
    if sandbox.dynamic and sandbox.uid is not None:
        jail = UidJail(sandbox.uid)
    else:
        jail = TagJail(os.geteuid() if sandbox.uid is None else sandbox.uid, str(sandbox.home))
    if isolation.tools is None:  # no util-linux: the kernel switches ids, Python the rest
        return sandbox, env, Confinement(
            umask=0o077, jail=jail, user=sandbox.uid, group=sandbox.gid,
            extra_groups=sandbox.groups, preexec=None if inherited else isolation.preexec(sandbox))
    return sandbox, env, Confinement(prefix=tuple(isolation.wrapper(sandbox, inherited)),
                                     umask=0o077, jail=jail)


class InstanceSandbox:
    """One instance's side of isolation, for :class:`~.instance.AppInstance`.

    ``mesh_dir`` (``<home>/instances/<id>``) keeps the mesh's files of the instance (its
    output, its process record); ``root`` is where the workload's own directories go: the same
    directory, or the same name under ``[node] instances_dir`` when that is outside the home.
    Without an isolation policy the workload is spawned as before (inherited environment).
    """

    def __init__(self, isolation: Isolation | None, mesh_dir: Path) -> None:
        self.isolation = isolation
        self.mesh_dir = mesh_dir
        self.root = mesh_dir if isolation is None else isolation.instances_dir / mesh_dir.name
        self.sandbox: Sandbox | None = None

    def enter(self, key: str, own: Mapping[str, str], manifest_env: Mapping[str, str],
              extra_env: Mapping[str, str], credentials: Mapping[str, bytes]
              ) -> tuple[dict[str, str], Confinement | None]:
        """The workload's environment and confinement (after the spore is in ``root/app``)."""
        if self.isolation is None:
            return {**manifest_env, **extra_env, **own}, None
        self.sandbox, env, confine = confinement(self.isolation, self.root, key, own,
                                                 manifest_env, extra_env, credentials)
        return env, confine

    def fields(self) -> dict[str, object]:
        """``uid``, ``limits`` and ``dir`` for the instance's info (empty before :meth:`enter`)."""
        box = self.sandbox
        if box is None:
            return {}
        return {"uid": box.uid, "limits": self.isolation.limits if self.isolation else "sampled",
                "dir": str(box.work)}

    def release(self) -> None:
        """Once no process of the instance is left: its directories go, its uid is free."""
        box, self.sandbox = self.sandbox, None
        if self.isolation is not None:
            if box is not None:
                self.isolation.release(box)
            shutil.rmtree(self.root / "app", ignore_errors=True)
            if self.root != self.mesh_dir:
                with contextlib.suppress(OSError):
                    self.root.rmdir()
