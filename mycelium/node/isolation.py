"""Who a workload runs as, what it sees and what it may use: the isolation of one node's workloads.

Decided once when the mesh starts (:meth:`Isolation.resolve`), applied at every spawn:

- the environment is built, never inherited (:meth:`Isolation.environment`);
- when the mesh runs as root, each instance gets a uid/gid of its own from this home's
  sub-range of a reserved range (``run_as = "dynamic"``), or the ``run_as`` user's, or stays
  root (the explicit opt-out); without root the workload runs as the mesh's own user;
- the instance's private directories (working directory, HOME, TMPDIR, credentials) belong to
  that uid, mode 0700 (:meth:`Isolation.prepare`);
- every workload starts through ``setpriv``/``prlimit`` (util-linux): the credentials,
  no_new_privs, ``RLIMIT_CORE`` 0 and ``RLIMIT_NOFILE`` are applied by two tiny execs in the
  child, with no Python between fork and exec (:meth:`Isolation.wrapper`).

Why a uid per *instance* rather than per app: blue and green of one app run side by side on a
node, and a restart's replacement may start while the old group is still being killed. With a
uid of its own, "every process of this instance" is exactly "every process of this uid" - a
process cannot shed its uid (no_new_privs forbids setuid binaries), however it detaches
(``setsid``, double fork, ``chdir /``, closing its descriptors). See
:mod:`mycelium.node.containment`.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import resource
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mycelium.defaults import WorkloadDefaults
from mycelium.errors import BadInput

from .cgroups import CgroupTree
from .sandboxfs import own, own_tree, private_files, write_credentials
from .uids import UidPool, UidRange, claim_range

__all__ = [
    "DEFAULT_NOFILE",
    "DEFAULT_PATH",
    "Isolation",
    "IsolationError",
    "Sandbox",
    "UidRange",
    "effective_nofile",
    "fallback_instances_dir",
    "traversable",
]

DEFAULT_PATH = WorkloadDefaults.PATH
DEFAULT_NOFILE = WorkloadDefaults.NOFILE
#: Where instance directories go when the workload's uid cannot reach ``<home>/instances``.
STATE_ROOT = Path("/var/lib/mycelium")
#: The mesh's variables a workload sees although they come from the mesh's environment.
LOCALE_VARS = ("LANG", "LC_ALL")


class IsolationError(BadInput):
    """``[node] run_as`` or ``instances_dir`` cannot be honoured (exit 2, nothing started)."""


def effective_nofile(wanted: int) -> int:
    """``wanted``, lowered to this process's hard ``RLIMIT_NOFILE`` when that is smaller."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


def traversable(path: Path, uid: int, gids: frozenset[int] = frozenset()) -> bool:
    """True if ``uid`` (member of ``gids``) may search every existing directory down to ``path``.

    Decided from the mode bits alone (os.access answers for the mesh's own uid, not this one).
    """
    for parent in [*reversed(path.parents), path]:
        try:
            st = parent.stat()
        except OSError:
            return True  # not there yet: it is created by the mesh, with the mode it needs
        if uid == 0:
            continue
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def fallback_instances_dir(home_root: Path) -> Path:
    """``/var/lib/mycelium/<hash of the home>/instances``: root-owned, outside the home."""
    digest = hashlib.sha256(str(home_root).encode()).hexdigest()[:16]
    return STATE_ROOT / digest / "instances"


@dataclass(frozen=True, slots=True)
class Sandbox:
    """One instance's identity and private directories (made by :meth:`Isolation.prepare`).

    ``root`` (root-owned, 0711 when ``uid`` is another user's) is ``<home>/instances/<id>``,
    where the mesh also keeps the instance's output and process record (0700/0600: the
    workload can neither read nor replace them), or the same name under ``[node]
    instances_dir`` outside the home; ``work`` (the working directory, the extracted binary),
    ``home`` and ``tmp`` belong to ``uid``, mode 0700.
    """

    root: Path
    uid: int | None
    gid: int | None
    groups: tuple[int, ...] | None
    dynamic: bool
    credentials: Path | None = None

    @property
    def work(self) -> Path:
        return self.root / "app"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"


@dataclass(frozen=True, slots=True)
class Isolation:
    """A node's isolation policy, fixed when the mesh starts.

    Attributes:
        run_as: ``dynamic``, a user name, or ``root`` (as configured).
        path: The workloads' ``PATH``.
        nofile: Their ``RLIMIT_NOFILE`` (already lowered to the machine's hard limit).
        locale: ``LANG``/``LC_ALL`` as set for the mesh.
        instances_dir: Where the instances' directories live.
        user: ``(uid, gid, groups)`` of a named ``run_as`` user, None otherwise.
        uids: This home's dynamic uid range (``run_as = dynamic`` under root), else None.
        setpriv: ``(setpriv, prlimit)`` paths, or None where util-linux is missing.
        cgroups: The home's cgroup v2 tree (set by the mesh when it starts), else None.
    """

    run_as: str = "dynamic"
    path: str = DEFAULT_PATH
    nofile: int = DEFAULT_NOFILE
    locale: Mapping[str, str] = field(default_factory=dict)
    instances_dir: Path = Path("instances")
    user: tuple[int, int, tuple[int, ...]] | None = None
    uids: UidRange | None = None
    tools: tuple[str, str] | None = None
    pool: UidPool | None = None
    cgroups: CgroupTree | None = None

    @classmethod
    def resolve(cls, home_root: Path, *, run_as: str = "dynamic", path: str = DEFAULT_PATH,
                nofile: int = DEFAULT_NOFILE, instances_dir: str = "auto",
                environ: Mapping[str, str] | None = None) -> Isolation:
        """The policy for a mesh on ``home_root`` (touches nothing but the uid-range claim).

        Raises:
            IsolationError: the ``run_as`` user does not exist, or is another user while the
                mesh is not root.
        """
        environ = os.environ if environ is None else environ
        locale = {k: environ[k] for k in LOCALE_VARS if environ.get(k)}
        tools = _tools()
        root = os.geteuid() == 0
        user: tuple[int, int, tuple[int, ...]] | None = None
        uids: UidRange | None = None
        if run_as not in ("dynamic", "root"):
            try:
                entry = pwd.getpwnam(run_as)
            except KeyError:
                raise IsolationError(f"config: node.run_as: no user {run_as!r} on this "
                                     f"machine (use dynamic, root or an existing user)") from None
            if not root and entry.pw_uid != os.geteuid():
                raise IsolationError(f"config: node.run_as = {run_as!r} needs the mesh to run "
                                     f"as root (it runs as uid {os.geteuid()})")
            groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, entry.pw_gid))))
            user = (entry.pw_uid, entry.pw_gid, groups) if root else None
        elif run_as == "dynamic" and root:
            uids = claim_range(home_root, STATE_ROOT / "uid-ranges")
        where = _instances_dir(home_root, instances_dir, user, uids)
        return cls(run_as=run_as, path=path, nofile=effective_nofile(nofile), locale=locale,
                   instances_dir=where, user=user, uids=uids, tools=tools,
                   pool=UidPool(uids) if uids is not None else None)

    # -- what the mesh shows ----------------------------------------------------------------

    @property
    def as_root(self) -> bool:
        """True when workloads keep root (``run_as = root`` under a root mesh)."""
        return os.geteuid() == 0 and self.uids is None and self.user is None

    @property
    def limits(self) -> str:
        """``cgroup`` where the kernel enforces the memory budget, else ``sampled``."""
        return "cgroup" if self.cgroups is not None and self.cgroups.limits else "sampled"

    @property
    def containment(self) -> str:
        """How an instance's processes are found: ``cgroup``, ``uid`` or ``env``."""
        if self.cgroups is not None:
            return "cgroup"
        return "uid" if self.uids is not None else "env"

    def summary(self) -> dict[str, object]:
        """The ``isolation`` section of ``status --json``."""
        if self.uids is not None:
            who = "dynamic"
        elif self.user is not None:
            who = self.run_as
        else:
            who = "root" if self.as_root else "mesh-user"
        return {"run_as": who, "uids": None if self.uids is None else
                [self.uids.first, self.uids.last], "instances_dir": str(self.instances_dir),
                "limits": self.limits, "containment": self.containment}

    def describe(self) -> str:
        """One line for ``up``'s output: who workloads run as and where their directories are."""
        if self.uids is not None:
            who = f"a uid of their own per instance ({self.uids.first}-{self.uids.last})"
        elif self.user is not None:
            who = f"user {self.run_as} (uid {self.user[0]})"
        elif self.as_root:
            who = "root"
        else:
            who = f"the mesh's user (uid {os.geteuid()})"
        return f"isolation: workloads run as {who}, limits: {self.limits}, " \
               f"instances in {self.instances_dir}, containment: {self.containment}"

    @property
    def confined_uid(self) -> bool:
        """True when workloads run under a uid other than the mesh's."""
        return self.uids is not None or (self.user is not None and self.user[0] != os.geteuid())

    def ensure_dirs(self, home_root: Path) -> None:
        """Create the instances directory so that the workloads' uid can reach its own part.

        Inside the home, the home becomes 0711 (searchable, not listable) and every other
        entry of it loses its group and other bits; outside, each directory down from
        ``/var/lib/mycelium`` is root's, 0711.
        """
        where = self.instances_dir
        if not self.confined_uid:
            where.mkdir(mode=0o700, parents=True, exist_ok=True)
            return
        if where.parent == home_root:
            os.chmod(home_root, 0o711)
            for entry in home_root.iterdir():
                if entry != where and not entry.is_symlink():
                    mode = entry.lstat().st_mode
                    if mode & 0o077:
                        os.chmod(entry, stat.S_IMODE(mode) & 0o700)
            chain = [where]
        else:
            chain = [p for p in [*reversed(where.parents), where]
                     if p == STATE_ROOT or STATE_ROOT in p.parents]
            chain = chain or [where]
        for directory in chain:
            directory.mkdir(mode=0o711, exist_ok=True, parents=True)
            os.chmod(directory, 0o711)

    def forget_dirs(self) -> None:
        """After a clean stop: remove an empty fallback instances directory (outside the home)."""
        if str(self.instances_dir).startswith(str(STATE_ROOT) + os.sep):
            for directory in (self.instances_dir, self.instances_dir.parent):
                try:
                    directory.rmdir()
                except OSError:
                    return

    # -- per instance -----------------------------------------------------------------------

    def prepare(self, root: Path, key: str, credentials: Mapping[str, bytes] | None = None,
                *, armed: bool = False) -> Sandbox:
        """Give the instance at ``root`` its uid and private directories.

        Called after the spore was extracted into ``root/app``: that tree is handed to the
        workload's uid. ``credentials`` become files (0400, owned by that uid) in
        ``root/credentials``. The uid of a dynamic instance is taken from the pool here and
        given back by :meth:`release`. ``armed``: the mesh's umask is 077 already (see
        :meth:`inherited`), so its files here need no chmod.
        """
        uid: int | None = None
        gid: int | None = None
        groups: tuple[int, ...] | None = None
        if self.pool is not None:
            uid = gid = self.pool.acquire(key)
            groups = ()
        elif self.user is not None:
            uid, gid, groups = self.user
        os.chmod(root, 0o711 if uid is not None else 0o700)
        if not armed:
            private_files(root)
        sandbox = Sandbox(root=root, uid=uid, gid=gid, groups=groups,
                          dynamic=self.pool is not None,
                          credentials=root / "credentials" if credentials else None)
        for directory in (sandbox.home, sandbox.tmp):
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(mode=0o700)
        own_tree(sandbox.work, uid, gid)
        for directory in (sandbox.home, sandbox.tmp):
            own(directory, uid, gid, 0o700)
        if credentials:
            write_credentials(root / "credentials", credentials, uid, gid)
        return sandbox

    def release(self, sandbox: Sandbox) -> None:
        """Remove the instance's private directories and give a dynamic uid back.

        Call only once no process of the instance is left (see :mod:`.containment`).
        """
        for directory in (sandbox.work, sandbox.home, sandbox.tmp, sandbox.root / "credentials"):
            shutil.rmtree(directory, ignore_errors=True)
        if self.pool is not None and sandbox.uid is not None:
            self.pool.release(sandbox.uid)

    def environment(self, sandbox: Sandbox, mesh_vars: Mapping[str, str],
                    manifest_env: Mapping[str, str],
                    extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The workload's whole environment: nothing of the mesh's own is inherited.

        ``PATH`` and the locale first (the manifest may override them), then the manifest's
        env, then ``extra_env`` (secrets), then what the mesh owns and nobody overrides:
        ``PORT``, ``MYCELIUM_*`` (``mesh_vars``), ``HOME``, ``TMPDIR`` and
        ``CREDENTIALS_DIRECTORY``.
        """
        env = {"PATH": self.path, **self.locale, **manifest_env, **(extra_env or {})}
        env.update(mesh_vars)
        env["HOME"], env["TMPDIR"] = str(sandbox.home), str(sandbox.tmp)
        if sandbox.credentials is not None:
            env["CREDENTIALS_DIRECTORY"] = str(sandbox.credentials)
        else:
            env.pop("CREDENTIALS_DIRECTORY", None)
        return env

    def arm_mesh(self) -> None:
        """Give the mesh itself what every workload must start with, so that they inherit it.

        Call from the thread that starts the mesh, before it starts any other: no_new_privs
        (per thread, inherited by every thread and child made after it; the mesh never needs
        to gain privileges through exec), ``RLIMIT_CORE`` 0:0 (the mesh holds keys and
        secrets: it must never dump core either) and ``RLIMIT_NOFILE`` ``nofile`` - only when
        that raises the mesh's own soft limit, never lowers it. A spawn then needs no wrapper
        exec at all (:meth:`inherited`); otherwise it goes through :meth:`wrapper`.
        """
        _no_new_privs()
        os.umask(0o077)  # what the mesh writes (logs, records, state) is its own
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if self.nofile >= soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def inherited(self) -> bool:
        """True if a child of the calling thread inherits no_new_privs, both limits and umask
        077 (then the mesh's own files of an instance are private without a chmod)."""
        return (resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)
                and resource.getrlimit(resource.RLIMIT_NOFILE) == (self.nofile, self.nofile)
                and _thread_armed())

    def wrapper(self, sandbox: Sandbox, inherited: bool = False) -> list[str]:
        """The command prefix that drops privileges and sets the limits, then execs the binary.

        ``setpriv`` sets the gid, the groups and the uid (as root), then no_new_privs;
        ``prlimit`` sets ``RLIMIT_CORE`` 0:0 and ``RLIMIT_NOFILE``; each execs the next, so
        the workload keeps the pid the mesh spawned. When the spawning thread passes on
        no_new_privs and both limits (``inherited``, see :meth:`arm_mesh`), only ``setpriv``
        is left, and only to switch to another uid.

        Why an exec rather than ``subprocess``'s ``user=``/``group=``: those make subprocess
        fork instead of vfork, and a fork copies the page tables of the whole mesh - ~20 ms
        for a 300 MB mesh, against ~1 ms for one more exec (bench/isolation.py). Empty where
        util-linux is missing (see ``node/sandboxed.py``).
        """
        if self.tools is None:
            return []
        setpriv, prlimit = self.tools
        if inherited:
            if sandbox.uid is None or sandbox.gid is None:
                return []
            return [setpriv, f"--regid={sandbox.gid}", f"--reuid={sandbox.uid}",
                    "--groups=" + ",".join(map(str, sandbox.groups)) if sandbox.groups
                    else "--clear-groups", "--"]
        cmd = [setpriv]
        if sandbox.uid is not None and sandbox.gid is not None:
            cmd += [f"--regid={sandbox.gid}", f"--reuid={sandbox.uid}"]
            if sandbox.groups:
                cmd.append("--groups=" + ",".join(map(str, sandbox.groups)))
            else:
                cmd.append("--clear-groups")
        cmd += ["--no-new-privs", "--", prlimit, "--core=0:0",
                f"--nofile={self.nofile}:{self.nofile}", "--"]
        return cmd

    def preexec(self, sandbox: Sandbox) -> PreExec:
        """The slow fallback of :meth:`wrapper`: the same steps in Python before exec."""
        return PreExec(sandbox.uid, sandbox.gid, sandbox.groups, self.nofile)


@dataclass(frozen=True, slots=True)
class PreExec:
    """Drop privileges and set the limits between fork and exec (only without util-linux)."""

    uid: int | None
    gid: int | None
    groups: tuple[int, ...] | None
    nofile: int

    def __call__(self) -> None:
        if self.gid is not None:
            os.setgroups(list(self.groups or ()))
            os.setresgid(self.gid, self.gid, self.gid)
        if self.uid is not None:
            os.setresuid(self.uid, self.uid, self.uid)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))
        _no_new_privs()


def _no_new_privs() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")


def _thread_armed() -> bool:
    """no_new_privs set and umask 077 in the calling thread (no_new_privs is per thread,
    inherited by what it creates), from one read of /proc/thread-self/status."""
    nnp = umask = False
    try:
        with open("/proc/thread-self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Umask:"):
                    umask = line.split()[1] == b"0077"
                elif line.startswith(b"NoNewPrivs:"):
                    nnp = line.split()[1] == b"1"
                    break
    except OSError:
        pass
    return nnp and umask


def _tools() -> tuple[str, str] | None:
    setpriv, prlimit = shutil.which("setpriv"), shutil.which("prlimit")
    return (setpriv, prlimit) if setpriv and prlimit else None


def _instances_dir(home_root: Path, configured: str, user: tuple[int, int, tuple[int, ...]]
                   | None, uids: UidRange | None) -> Path:
    """``configured`` unless ``auto``; then ``<home>/instances`` if the workloads' uid can
    reach it, else :func:`fallback_instances_dir`."""
    if configured != "auto":
        return Path(configured).expanduser().absolute()
    inside = home_root / "instances"
    if user is not None:
        ok = traversable(home_root.parent, user[0], frozenset(user[2]))
    elif uids is not None:
        ok = traversable(home_root.parent, uids.first)
    else:
        return inside  # the mesh's own user (or root) reaches its own home
    return inside if ok else fallback_instances_dir(home_root)
