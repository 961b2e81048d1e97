"""A mesh that does not run as root: its workloads run as its own user, with a built
environment, no privileges and the same limits (what the README says of the non-root mode).

CI runs as root, so the test makes the unprivileged mesh itself: ``mycelium up`` started as
``nobody`` (``setpriv``) on a home that user owns. The interpreter may sit under a directory
``nobody`` cannot enter (pyenv's under ``/root``): then the mesh runs in a mount namespace of
its own (``unshare``) in which that directory is an empty tmpfs holding only the interpreter's
tree, at the same path. The code tree is used in place when ``nobody`` can read it, else copied.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from isokit import deploy, get, needs_root
from mesh_helpers import MeshProcess, cli, wait_until

from mycelium.home import Home
from mycelium.node.isolation import traversable
from mycelium.operator.control import ControlClient
from tests.meshkit import REPO, UpProcess, free_port, kill_leftovers, workload_pids

pytestmark = needs_root

MARKER = "ISO_UNPRIVILEGED_MARKER"
TOOLS = ("setpriv", "unshare", "mount")


def _tools() -> dict[str, str]:
    found = {name: shutil.which(name) for name in TOOLS}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"util-linux tools missing: {missing}")
        pytest.skip(f"util-linux tools missing: {missing}")
    return {name: str(path) for name, path in found.items()}


def _readable_tree(root: Path, uid: int) -> bool:
    """Whether ``uid`` may import the packages under ``root`` (mode bits, as ``traversable``)."""
    if not traversable(root, uid):
        return False
    for package in ("mycelium", "supervisors"):
        for path in [root / package, *(root / package).rglob("*")]:
            mode = path.stat().st_mode
            if not mode & (stat.S_IXOTH if path.is_dir() else stat.S_IROTH):
                return False
    return True


def _code_for(uid: int, gid: int, base: Path) -> Path:
    """The repository when ``uid`` can read it, else a copy of its packages it owns."""
    if _readable_tree(REPO, uid):
        return REPO
    code = base / "code"
    for package in ("mycelium", "supervisors"):
        shutil.copytree(REPO / package, code / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    _chown_tree(code, uid, gid)
    return code


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for path in root.rglob("*"):
        os.lchown(path, uid, gid)


def _namespace_script(uid: int, stage: Path) -> str | None:
    """Shell lines that make the interpreter reachable for ``uid`` in a private mount
    namespace (None: it is reachable as it is)."""
    executable = Path(os.path.realpath(sys.executable))
    chain = [*reversed(executable.parents)]
    blocked = next((p for p in chain if not traversable(p, uid)), None)
    if blocked is None:
        return None
    keep = chain[chain.index(blocked) + 1] if blocked != chain[-1] else executable.parent
    q = shlex.quote
    return "\n".join([
        "set -e",
        f"mount --bind {q(str(keep))} {q(str(stage))}",
        f"mount -t tmpfs -o mode=0755 mycelium-test {q(str(blocked))}",
        f"mkdir -p {q(str(keep))}",
        f"mount --bind {q(str(stage))} {q(str(keep))}",
        f"umount {q(str(stage))}",
    ])


def as_user(user: pwd.struct_passwd, code: Path, base: Path, extra: dict[str, str],
            argv: list[str]) -> list[str]:
    """``argv`` (run with this interpreter) as ``user``, in a clean environment holding only
    ``extra`` beside what Python and the CLI need, its home ``<base>/home``."""
    tools = _tools()
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(base / "home"),
           "USER": user.pw_name, "LANG": "C.UTF-8", "PYTHONPATH": str(code), **extra}
    drop = [tools["setpriv"], f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
            "--clear-groups", "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
            sys.executable, *argv]
    stage = base / "stage"
    stage.mkdir(exist_ok=True)
    script = _namespace_script(user.pw_uid, stage)
    if script is None:
        return drop
    return [tools["unshare"], "--mount", "--propagation", "private", "sh", "-c",
            script + "\nexec " + shlex.join(drop)]


class UnprivilegedMesh(MeshProcess):
    """``mycelium up`` as ``user`` (see :func:`as_user`) on ``<base>/home``, which it owns."""

    def __init__(self, user: pwd.struct_passwd, code: Path, base: Path,
                 extra: dict[str, str]) -> None:
        self.home = base / "home"
        self.port = free_port()
        argv = as_user(user, code, base, extra, [
            "-m", "mycelium", "up", "--home", str(self.home), "--edge-port", str(self.port),
            "--nodes", "1"])
        UpProcess.__init__(self, argv, {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                           label="the unprivileged mesh")
        self.client = ControlClient(Home(self.home))
        self.wait_line("mesh up", 60.0)


@pytest.fixture
def nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        if os.environ.get("CI"):
            pytest.fail("no user nobody on this machine")
        pytest.skip("no user nobody on this machine")


@pytest.fixture
def base(nobody: pwd.struct_passwd) -> Iterator[Path]:
    """A directory ``nobody`` owns, outside the root-only pytest temp tree."""
    path = Path(tempfile.mkdtemp(prefix="mycelium-unprivileged-"))
    os.chown(path, nobody.pw_uid, nobody.pw_gid)
    try:
        yield path
    finally:
        home = path / "home"
        leftovers = kill_leftovers(home)
        shutil.rmtree(path, ignore_errors=True)
        assert not leftovers, f"workload processes survived the test: {leftovers}"


@pytest.fixture
def nobody_home(spores: tuple[Path, dict[str, str]], nobody: pwd.struct_passwd,
                base: Path) -> Path:
    """A copy of the template home at ``base/home``, all of it ``nobody``'s."""
    home = base / "home"
    shutil.copytree(spores[0], home, symlinks=True)
    _chown_tree(home, nobody.pw_uid, nobody.pw_gid)
    return home


@pytest.mark.timeout(180)
def test_a_mesh_that_is_not_root_runs_its_workloads_as_its_own_user_with_a_clean_env(
        spores: tuple[Path, dict[str, str]], nobody: pwd.struct_passwd, base: Path,
        nobody_home: Path) -> None:
    home = nobody_home
    code = _code_for(nobody.pw_uid, nobody.pw_gid, base)
    mesh = UnprivilegedMesh(nobody, code, base, {MARKER: "leaked"})
    try:
        assert f"workloads run as the mesh's user (uid {nobody.pw_uid})" in mesh.wait_line(
            "isolation:")
        assert psutil.Process(mesh.proc.pid).uids() == (nobody.pw_uid,) * 3
        deploy(home, "probe", spores[1]["probe"])
        inst = mesh.ready("probe", 1)[0]
        # status: null is "the mesh's own user" (docs/reference.md); the process says which
        assert inst["uid"] is None
        assert mesh.status()["isolation"]["run_as"] == "mesh-user"
        assert psutil.Process(inst["pid"]).uids() == (nobody.pw_uid,) * 3
        me = get(mesh, "probe", "/id")
        assert me["uid"] == me["euid"] == nobody.pw_uid and me["gid"] == nobody.pw_gid
        assert me["groups"] == [] and me["no_new_privs"] == "1"
        assert me["core"] == [0, 0] and me["umask"] == 0o077
        env = get(mesh, "probe", "/env")
        root = Path(inst["dir"]).parent
        assert root.parent == home / "instances"
        assert env == {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
                       "HOME": str(root / "home"), "TMPDIR": str(root / "tmp"),
                       "PORT": inst["url"].rsplit(":", 1)[1], "MYCELIUM_APP": "probe",
                       "MYCELIUM_NODE": "node-1", "MYCELIUM_DIGEST": spores[1]["probe"],
                       "MYCELIUM_INSTANCE": inst["id"], "FROM_MANIFEST": "yes"}
        assert not any(MARKER in v for v in env.values())
        assert cli(home, "stop", "probe").returncode == 0
        wait_until(lambda: not workload_pids(home), 20, "the probe stopped")
    finally:
        exit_code = mesh.stop()
    assert exit_code == 0, "\n".join(mesh.lines[-30:])
    assert workload_pids(home) == []


@pytest.mark.timeout(120)
def test_a_tls_file_the_meshs_user_cannot_read_is_one_error_line_exit_2_and_changes_nothing(
        nobody: pwd.struct_passwd, base: Path, nobody_home: Path) -> None:
    home = nobody_home
    hidden = base / "ca.pem"  # root's, 0600: nobody cannot read it (root could)
    hidden.write_text("-----BEGIN CERTIFICATE-----\n")
    hidden.chmod(0o600)
    (home / "mycelium.toml").write_text(f'[fabric]\nca = "{hidden}"\n')
    before = sorted(p.name for p in home.iterdir())
    done = subprocess.run(as_user(nobody, _code_for(nobody.pw_uid, nobody.pw_gid, base), base,
                                  {}, ["-m", "mycelium", "up", "--home", str(home), "--fabric",
                                       f"etcds://127.0.0.1:{free_port()}", "--node-prefix", "a"]),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: [fabric] ca ") and "Permission denied" in done.stderr
    assert sorted(p.name for p in home.iterdir()) == before
