"""The content-addressed repo: atomic, idempotent, safe under concurrent puts; lookups by
digest or unique prefix; extraction into a private directory."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from spores_helpers import repo_listing, write_spore

from mycelium.home import Home
from mycelium.spores import (
    Repo,
    SporeError,
    UnknownSpore,
    extract,
    load_trusted,
    pack,
    publish,
    verify,
)


@pytest.mark.timeout(30)
def test_concurrent_puts_of_the_same_spore_leave_one_whole_file(
        tmp_path: Path, home: Home, key: SigningKey) -> None:
    spore = write_spore(tmp_path / "s.spore", key, os.urandom(3 * 1024 * 1024))
    repo, trusted = Repo(home.repo), load_trusted(home)
    barrier = threading.Barrier(8)
    digests: list[str] = []
    errors: list[BaseException] = []

    def put() -> None:
        try:
            barrier.wait(timeout=10)
            digests.append(repo.put(spore, trusted))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert errors == [] and len(set(digests)) == 1 and len(digests) == 8
    assert list(repo_listing(home.repo)) == [f"{digests[0]}.spore"]
    assert repo.path(digests[0]).read_bytes() == spore.read_bytes()


PUBLISH_CHILD = r"""
import sys
from pathlib import Path
from mycelium.home import Home
from mycelium.spores import publish
sys.stdin.readline()  # start together
print(publish(Home(Path(sys.argv[1])), spore=sys.argv[2]))
"""


@pytest.mark.timeout(40)
def test_concurrent_publishes_from_separate_processes(tmp_path: Path, home: Home,
                                                      key: SigningKey) -> None:
    spore = write_spore(tmp_path / "s.spore", key, os.urandom(1024 * 1024))
    procs = [subprocess.Popen([sys.executable, "-c", PUBLISH_CHILD, str(home.root), str(spore)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = [p.communicate("go\n", timeout=30) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    digests = {o.strip() for o, _ in outs}
    assert len(digests) == 1
    assert list(repo_listing(home.repo)) == [f"{digests.pop()}.spore"]


def test_resolve_by_unique_prefix(tmp_path: Path, home: Home, key: SigningKey) -> None:
    repo = Repo(home.repo)
    digests = [repo.put(write_spore(tmp_path / f"{i}.spore", key, b"x" * i))
               for i in range(1, 40)]
    for d in digests:
        assert repo.resolve(d) == d and repo.has(d)
        unique = next(n for n in range(4, 65)
                      if sum(o.startswith(d[:n]) for o in digests) == 1)
        assert repo.resolve(d[:unique].upper()) == d
    with pytest.raises(UnknownSpore, match="too short"):
        repo.resolve(digests[0][:3])
    with pytest.raises(UnknownSpore, match="no spore"):
        repo.resolve("f" * 64)
    for twin in ("abcd" + "0" * 60, "abcd" + "1" * 60):
        (home.repo / f"{twin}.spore").write_bytes(b"")
    with pytest.raises(UnknownSpore, match="ambiguous"):
        repo.resolve("abcd")
    assert repo.resolve("abcd1") == "abcd" + "1" * 60
    with pytest.raises(SporeError, match="does not match its name"):
        repo.path("abcd" + "1" * 60)
    for twin in ("abcd" + "0" * 60, "abcd" + "1" * 60):
        (home.repo / f"{twin}.spore").unlink()
    with pytest.raises(UnknownSpore, match="bad digest"):
        repo.resolve("../../etc/passwd")
    assert repo.digests() == sorted(digests)


def test_failed_publish_leaves_no_temp_file(tmp_path: Path, home: Home, binary: Path) -> None:
    manifest = {"name": "hello", "version": "1"}
    other_home = Home(tmp_path / "other")
    from mycelium.spores import keygen
    keygen(other_home)
    (home.trusted / "default.pub").unlink()  # our own key is no longer trusted
    with pytest.raises(SporeError, match="not trusted"):
        publish(home, binary=binary, manifest=manifest)
    assert repo_listing(home.repo) == {}


def test_extract_writes_an_executable_into_a_private_directory(
        tmp_path: Path, home: Home, key: SigningKey, binary: Path) -> None:
    packed = pack(binary, {"name": "hello", "version": "1"}, key, tmp_path / "s.spore")
    digest = Repo(home.repo).put(packed.path, load_trusted(home))
    assert digest == packed.digest
    dest = tmp_path / "instances" / "hello-1"
    old_umask = os.umask(0o077)
    try:
        path = extract(Repo(home.repo).path(digest), dest, load_trusted(home),
                       expected_digest=digest)
    finally:
        os.umask(old_umask)
    assert path == dest / "binary"
    assert path.read_bytes() == binary.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    assert sorted(os.listdir(dest)) == ["binary"]
    out = subprocess.run([str(path)], capture_output=True, text=True, timeout=10, check=True)
    assert out.stdout.startswith("hello from a spore")
    # again into the same directory (a restart): replaced atomically, still 0755
    assert extract(packed.path, dest, load_trusted(home)) == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o755


def test_extract_never_keeps_setuid_bits(tmp_path: Path, home: Home, key: SigningKey,
                                         binary: Path) -> None:
    os.chmod(binary, 0o4755)
    packed = pack(binary, {"name": "hello", "version": "1"}, key, tmp_path / "s.spore")
    path = extract(packed.path, tmp_path / "i", load_trusted(home))
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert verify(packed.path, load_trusted(home)).manifest.binary_size == binary.stat().st_size


def test_stale_partial_files_from_a_killed_publish_are_cleaned_up(
        tmp_path: Path, home: Home, key: SigningKey) -> None:
    home.repo.mkdir(parents=True, exist_ok=True)
    stale, fresh = home.repo / ".put-old.partial", home.repo / ".put-new.partial"
    stale.write_bytes(b"half a spore")
    fresh.write_bytes(b"being written")
    os.utime(stale, (1_000_000, 1_000_000))
    digest = Repo(home.repo).put(write_spore(tmp_path / "s.spore", key, b"bin"))
    assert sorted(repo_listing(home.repo)) == [".put-new.partial", f"{digest}.spore"]


@pytest.mark.timeout(10)
def test_a_fifo_or_device_in_place_of_a_spore_or_binary_is_refused_without_hanging(
        tmp_path: Path, home: Home, key: SigningKey) -> None:
    fifo = tmp_path / "fifo.spore"
    os.mkfifo(fifo)
    from mycelium.spores import SporeInputError
    for call in (lambda: verify(fifo, load_trusted(home)),
                 lambda: Repo(home.repo).put(fifo),
                 lambda: pack(fifo, {"name": "a", "version": "1"}, key, tmp_path / "o.spore"),
                 lambda: verify("/dev/zero", load_trusted(home))):
        with pytest.raises(SporeInputError, match="not a regular file"):
            call()
    assert repo_listing(home.repo) == {}


STREAM_CHILD = r"""
import resource, sys
from pathlib import Path
from nacl.signing import SigningKey
from mycelium.spores import extract, pack, verify
binary, out, dest = map(Path, sys.argv[1:4])
key = SigningKey.generate(); trusted = frozenset({bytes(key.verify_key).hex()})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
pack(binary, {"name": "big", "version": "1"}, key, out)
verify(out, trusted)
extract(out, dest, trusted)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.timeout(60)
def test_a_large_binary_is_streamed_not_held_in_memory(tmp_path: Path) -> None:
    binary = tmp_path / "big"
    with open(binary, "wb") as f:
        for _ in range(48):
            f.write(os.urandom(1024 * 1024))
    out = subprocess.run([sys.executable, "-c", STREAM_CHILD, str(binary),
                          str(tmp_path / "big.spore"), str(tmp_path / "inst")],
                         capture_output=True, text=True, timeout=50, check=True)
    growth_kb = int(out.stdout.strip())
    assert growth_kb < 16 * 1024, f"peak RSS grew by {growth_kb} KiB for a 48 MiB binary"
    assert (tmp_path / "inst" / "binary").read_bytes() == binary.read_bytes()


def test_verify_of_a_file_inside_the_repo_checks_its_name(tmp_path: Path, home: Home,
                                                           key: SigningKey) -> None:
    from spores_helpers import assert_one_error, run_cli

    digest = Repo(home.repo).put(write_spore(tmp_path / "a.spore", key, b"a"))
    path = home.repo / f"{digest}.spore"
    assert run_cli("verify", path, "--home", home.root).code == 0
    os.chmod(path, 0o644)
    path.write_bytes(write_spore(tmp_path / "b.spore", key, b"b").read_bytes())
    assert_one_error(run_cli("verify", path, "--home", home.root), 1, "does not match its name")


def test_a_spores_info_is_verified_once_until_its_file_or_the_trust_changes(
        home: Home, binary: Path) -> None:
    from mycelium.mesh.sporesource import SporeSource
    from mycelium.spores import Limits

    digest = publish(home, binary=binary, manifest={"name": "hello", "version": "1"})
    source = SporeSource(home, Limits())
    first = source.info(digest)
    again = source.info(digest)
    assert again == first and again.env is not first.env  # each caller its own env
    spore = Repo(home.repo).location(digest)
    data = bytearray(spore.read_bytes())
    data[len(data) // 2] ^= 0x01  # rewritten in place: another ctime, verified anew
    os.chmod(spore, 0o600)
    spore.write_bytes(bytes(data))
    with pytest.raises(SporeError):
        source.info(digest)
    spore.write_bytes(bytes(data[:len(data) // 2]))  # a shorter file
    with pytest.raises(SporeError):
        source.info(digest)
    data[len(data) // 2] ^= 0x01
    spore.write_bytes(bytes(data))
    assert source.info(digest) == first  # the original bytes again: verified, the same
    (home.trusted / "default.pub").unlink()  # the signer is no longer trusted
    with pytest.raises(SporeError, match="not trusted"):
        source.info(digest)
