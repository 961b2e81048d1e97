"""The isolation's parts without a mesh: uid ranges and pool, the built environment, the
sandbox's files, the wrapper, and a confined spawn whose escaped processes die with it."""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import time
from pathlib import Path

import psutil
from hypothesis import given
from hypothesis import strategies as st
from isokit import needs_root

from mycelium.node.containment import UidJail
from mycelium.node.isolation import Isolation, effective_nofile, traversable
from mycelium.node.process import spawn
from mycelium.node.sandboxed import confinement
from mycelium.node.uids import (
    RANGE_FIRST,
    RANGE_LAST,
    RANGE_SIZE,
    SUBRANGES,
    UidPool,
    UidRange,
    claim_range,
    home_index,
    subrange_of,
)
from mycelium.operator import load_config


def test_two_homes_get_disjoint_ranges_and_one_home_keeps_its_own(tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    homes = [tmp_path / f"h{i}" for i in range(20)]
    for h in homes:
        h.mkdir()
    ranges = [claim_range(h, claims) for h in homes]
    assert len({r.first for r in ranges}) == len(homes)
    assert all(r.first >= RANGE_FIRST and r.last <= RANGE_LAST and
               r.last - r.first + 1 == RANGE_SIZE for r in ranges)
    assert [claim_range(h, claims) for h in homes] == ranges


def test_a_range_claimed_by_a_live_home_is_skipped_and_a_dead_homes_is_taken_over(
        tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    claims.mkdir()
    alive, mine, late = tmp_path / "alive", tmp_path / "mine", tmp_path / "late"
    alive.mkdir()
    index = home_index(mine)
    (claims / str(index)).write_text(str(alive))  # a collision with a home that exists
    got = claim_range(mine, claims)
    assert got == subrange_of(index + 1) and claim_range(alive, claims) != got
    (claims / str(home_index(late))).write_text(str(tmp_path / "gone"))  # a stale claim
    assert claim_range(late, claims) == subrange_of(home_index(late))
    assert (claims / str(home_index(late))).read_text() == str(late)


def test_subranges_tile_the_reserved_range() -> None:
    assert subrange_of(0).first == RANGE_FIRST
    assert subrange_of(SUBRANGES - 1).last <= RANGE_LAST
    assert subrange_of(SUBRANGES - 1).last + RANGE_SIZE > RANGE_LAST


@given(st.lists(st.sampled_from(["acquire", "release"]), max_size=200))
def test_the_pool_never_hands_out_a_uid_that_is_held(ops: list[str]) -> None:
    pool = UidPool(UidRange(100, 107))
    held: list[int] = []
    for op in ops:
        if op == "acquire" and len(held) < 8:
            uid = pool.acquire("x")
            assert uid not in held and 100 <= uid <= 107
            held.append(uid)
        elif op == "release" and held:
            pool.release(held.pop(0))
    assert sorted(pool.taken()) == sorted(held)


def test_a_released_uid_is_the_last_to_come_back() -> None:
    pool = UidPool(UidRange(10, 13))
    a = pool.acquire("a")
    pool.release(a)
    assert [pool.acquire(str(i)) for i in range(3)] == [11, 12, 13]
    assert pool.acquire("again") == a


def test_a_reserved_uid_is_never_handed_out_until_released() -> None:
    pool = UidPool(UidRange(10, 12))
    pool.reserve(11, "a previous mesh's instance")  # still running: the next up keeps it out
    assert [pool.acquire("a"), pool.acquire("b")] == [10, 12]
    pool.release(11)
    assert pool.acquire("c") == 11


def test_the_environment_is_built_in_order(tmp_path: Path) -> None:
    iso = Isolation(locale={"LANG": "C.UTF-8"}, tools=None)
    root = tmp_path / "i"
    (root / "app").mkdir(parents=True)
    box = iso.prepare(root, "k", {"TOKEN": b"s3cret"})
    env = iso.environment(box, {"PORT": "1", "MYCELIUM_APP": "a"},
                          {"PATH": "/opt/bin", "PORT": "9", "HOME": "/", "A": "manifest"},
                          {"A": "secret", "B": "secret"})
    assert env == {"PATH": "/opt/bin", "LANG": "C.UTF-8", "PORT": "1", "MYCELIUM_APP": "a",
                   "A": "secret", "B": "secret", "HOME": str(root / "home"),
                   "TMPDIR": str(root / "tmp"), "CREDENTIALS_DIRECTORY": str(root / "credentials")}
    cred = root / "credentials" / "TOKEN"
    assert cred.read_bytes() == b"s3cret" and stat.S_IMODE(cred.stat().st_mode) == 0o400
    iso.release(box)
    assert not (root / "credentials").exists() and not (root / "home").exists()


def test_nofile_is_lowered_to_the_hard_limit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert effective_nofile(10**9) == (10**9 if hard == resource.RLIM_INFINITY else hard)
    assert effective_nofile(64) == 64


def test_a_uid_reaches_a_directory_only_through_searchable_parents(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    (closed / "inner").mkdir(parents=True)
    os.chmod(closed, 0o700)
    assert not traversable(closed / "inner", RANGE_FIRST)
    os.chmod(closed, 0o711)
    assert traversable(closed / "inner", RANGE_FIRST) == traversable(tmp_path, RANGE_FIRST)


def test_the_config_knows_the_isolation_keys(tmp_path: Path) -> None:
    node = load_config(None, {}).node
    assert (node.run_as, node.path, node.nofile, node.instances_dir) == (
        "dynamic", "/usr/local/bin:/usr/bin:/bin", 65536, "auto")
    assert load_config(None, {"MYCELIUM_NODE_RUN_AS": "nobody"}).node.run_as == "nobody"


@needs_root
def test_a_confined_spawn_takes_its_escaped_processes_with_it(tmp_path: Path) -> None:
    """Through the wrapper (this test's thread has no no_new_privs of its own)."""
    iso = Isolation.resolve(tmp_path / "home", instances_dir=str(tmp_path / "instances"))
    assert iso.uids is not None
    root = iso.instances_dir / "esc"
    (root / "app").mkdir(parents=True)
    iso.ensure_dirs(tmp_path / "home")
    box, env, confine = confinement(iso, root, "esc", {"PORT": "0"}, {})
    assert isinstance(confine.jail, UidJail) and confine.jail.uid == box.uid
    script = ("id -u; grep NoNewPrivs /proc/self/status; ulimit -Hc; ulimit -n; umask; "
              "setsid sleep 3606 & (cd / && exec setsid sleep 3606 <&- >&- 2>&- &) & wait")
    work = spawn(["/bin/sh", "-c", script], root / "app", env, root / "workload.log",
                 confine=confine)
    try:
        def sleeps() -> list[int]:
            return [p.pid for p in psutil.process_iter(["cmdline", "uids"])
                    if p.info["cmdline"] == ["sleep", "3606"] and p.info["uids"].real == box.uid]
        deadline = time.monotonic() + 10
        while len(sleeps()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # no event tells when a detached grandchild has started
        assert len(sleeps()) == 2
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        assert (root / "workload.log").read_text().split() == [
            str(box.uid), "NoNewPrivs:", "1", "0", str(min(65536, nofile)), "0077"]
        work.terminate(grace=1.0)
        assert sleeps() == [] and confine.jail.members() == []
    finally:
        work.terminate(grace=0)
        iso.release(box)
        subprocess.run(["rm", "-rf", str(root)], check=False)


def test_the_wrapper_sets_uid_groups_no_new_privs_and_limits(tmp_path: Path) -> None:
    iso = Isolation(nofile=1024, tools=("/usr/bin/setpriv", "/usr/bin/prlimit"))
    root = tmp_path / "i"
    (root / "app").mkdir(parents=True)
    box = iso.prepare(root, "k")
    assert iso.wrapper(box) == ["/usr/bin/setpriv", "--no-new-privs", "--", "/usr/bin/prlimit",
                                "--core=0:0", "--nofile=1024:1024", "--"]
    named = Isolation(tools=("sp", "pl"), user=(7, 8, (8, 9)))
    boxed = named.prepare(root, "k") if os.geteuid() == 0 else None
    if boxed is not None:
        assert named.wrapper(boxed)[:5] == ["sp", "--regid=8", "--reuid=7", "--groups=8,9",
                                            "--no-new-privs"]
