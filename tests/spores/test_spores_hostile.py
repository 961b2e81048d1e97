"""A hostile-spore corpus, built here: every one is rejected with its precise reason, before
anything is extracted, and neither ``verify`` nor ``publish`` changes the repo."""

from __future__ import annotations

import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from spores_helpers import (
    Entry,
    assert_one_error,
    manifest_entries,
    repo_listing,
    run_cli,
    signed_manifest,
    write_canonical,
    write_spore,
    write_zip,
)

from mycelium.home import Home
from mycelium.spores import Limits, ManifestError, SporeError, extract, load_trusted, verify
from mycelium.spores.manifest import canonical_json

Builder = Callable[[Path, SigningKey, bytes], Path]
STRANGER = SigningKey.generate()


def _zip(*entries: Entry) -> Builder:
    return lambda p, k, b: write_zip(p, entries)


def _regular(k: SigningKey, b: bytes) -> list[Entry]:
    return manifest_entries(signed_manifest(k, b), b)


def _with_entries(edit: Callable[[list[Entry], SigningKey, bytes], list[Entry]]) -> Builder:
    return lambda p, k, b: write_zip(p, edit(_regular(k, b), k, b))


def _patched(offset_of: Callable[[bytes], int], value: bytes) -> Builder:
    def build(p: Path, k: SigningKey, b: bytes) -> Path:
        write_spore(p, k, b)
        raw = bytearray(p.read_bytes())
        at = offset_of(bytes(raw))
        raw[at:at + len(value)] = value
        p.write_bytes(bytes(raw))
        return p
    return build


def _encrypted(p: Path, k: SigningKey, b: bytes) -> Path:
    raw = bytearray(write_spore(p, k, b).read_bytes())
    local = raw.index(b"PK\x03\x04", 4)
    central = raw.rindex(b"PK\x01\x02")
    raw[local + 6] |= 1
    raw[central + 8] |= 1
    p.write_bytes(bytes(raw))
    return p


def _with_comment(p: Path, k: SigningKey, b: bytes) -> Path:
    raw = bytearray(write_spore(p, k, b).read_bytes())
    raw[-2:] = (4).to_bytes(2, "little")
    p.write_bytes(bytes(raw) + b"note")
    return p


def _many_entries(p: Path, k: SigningKey, b: bytes) -> Path:
    raw = bytearray(write_spore(p, k, b).read_bytes())
    raw[-14:-12] = raw[-12:-10] = (65000).to_bytes(2, "little")
    p.write_bytes(bytes(raw))
    return p


def _broken_central(p: Path, k: SigningKey, b: bytes) -> Path:
    raw = bytearray(write_spore(p, k, b).read_bytes())
    at = raw.index(b"PK\x01\x02")
    raw[at:at + 4] = b"XXXX"
    p.write_bytes(bytes(raw))
    return p


def _binary_local_usize(raw: bytes) -> int:
    return raw.index(b"PK\x03\x04", 4) + 22  # second local header, uncompressed size field


CASES: dict[str, tuple[Builder, str]] = {
    "garbage": (lambda p, k, b: (p.write_bytes(b"not a zip at all" * 8), p)[1],
                "no zip end record"),
    "empty file": (lambda p, k, b: (p.write_bytes(b""), p)[1], "not a valid zip archive"),
    "zip comment": (_with_comment, "no zip end record at its very end"),
    "65000 entries": (_many_entries, "archive holds 65000 entries"),
    "bad central directory": (_broken_central, "not a valid zip archive"),
    "missing binary": (_with_entries(lambda es, k, b: es[:1]), "missing entry 'binary'"),
    "missing manifest": (_with_entries(lambda es, k, b: es[1:]),
                         "missing entry 'manifest.json'"),
    "extra entry": (_with_entries(lambda es, k, b: [*es, Entry("README", b"hi")]),
                    "unexpected entry 'README'"),
    "duplicate binary": (_with_entries(lambda es, k, b: [*es, Entry("binary", b"evil")]),
                         "duplicate entry 'binary'"),
    "dot-dot path": (_with_entries(lambda es, k, b: [es[0], Entry("../binary", b)]),
                     "unsafe path '../binary'"),
    "nested dot-dot": (_with_entries(lambda es, k, b: [*es, Entry("a/../../etc/x", b)]),
                       "unsafe path"),
    "absolute path": (_with_entries(lambda es, k, b: [es[0], Entry("/binary", b)]),
                      "unsafe path '/binary'"),
    "symlink binary": (_with_entries(lambda es, k, b: [es[0], Entry(
        "binary", b"/bin/sh", attr=(stat.S_IFLNK | 0o777) << 16)]), "is a symlink"),
    "directory entry": (_with_entries(lambda es, k, b: [*es, Entry(
        "binary/", b"", attr=(stat.S_IFDIR | 0o755) << 16)]), "is a directory"),
    "fifo entry": (_with_entries(lambda es, k, b: [es[0], Entry(
        "binary", b, attr=(stat.S_IFIFO | 0o644) << 16)]), "not a regular file"),
    "no unix file type": (_with_entries(lambda es, k, b: [es[0], Entry(
        "binary", b, attr=0, create_system=0)]), "does not declare a unix file type"),
    "zip bomb": (_with_entries(lambda es, k, b: [es[0], Entry(
        "binary", bytes(4 * 1024 * 1024), method=zipfile.ZIP_DEFLATED)]),
        "compression ratio"),
    "deflated entry": (_with_entries(lambda es, k, b: [es[0], Entry(
        "binary", b, method=zipfile.ZIP_DEFLATED)]), "is compressed"),
    "encrypted flag": (_encrypted, "is encrypted"),
    "stdlib zip layout": (_with_entries(lambda es, k, b: es), "not in canonical spore form"),
    "trailing data": (lambda p, k, b: (p.write_bytes(write_spore(p, k, b).read_bytes()
                                                     + b"junk"), p)[1],
                      "no zip end record at its very end"),
    "prefixed data": (lambda p, k, b: (p.write_bytes(b"#!/bin/sh\n" + write_spore(
        p, k, b).read_bytes()), p)[1], "not in canonical spore form"),
    "declared size differs": (_patched(_binary_local_usize, b"\xff\x00\x00\x00"),
                              "local header disagrees"),
    "bad signature": (lambda p, k, b: write_canonical(p, canonical_json(
        {**signed_manifest(k, b), "version": "6.6.6"}), b), "bad signature"),
    "missing signature": (lambda p, k, b: write_canonical(p, canonical_json(
        {kk: v for kk, v in signed_manifest(k, b).items() if kk != "signature"}), b),
        "missing signature"),
    "signature from another key": (lambda p, k, b: write_spore(p, k, b, sign_with=STRANGER),
                                   "bad signature"),
    "untrusted signer": (lambda p, k, b: write_spore(p, STRANGER, b), "is not trusted"),
    "binary hash mismatch": (lambda p, k, b: write_spore(p, k, b, binary_sha256="0" * 64),
                             "binary hash mismatch"),
    "binary size mismatch": (lambda p, k, b: write_spore(p, k, b, binary_size=len(b) + 1),
                             "binary size mismatch"),
    "binary swapped": (lambda p, k, b: write_canonical(
        p, canonical_json(signed_manifest(k, b)), b[::-1]), "binary hash mismatch"),
    "unknown manifest key": (lambda p, k, b: write_spore(p, k, b, extra="x"),
                             "unknown key 'extra'"),
    "bad app name": (lambda p, k, b: write_spore(p, k, b, name="Hello!"), "name 'Hello!'"),
    "missing manifest key": (lambda p, k, b: write_spore(p, k, b, created_at=...),
                             "missing key 'created_at'"),
    "manifest not canonical": (lambda p, k, b: write_canonical(p, canonical_json(
        signed_manifest(k, b)).replace(b",", b", "), b), "not in canonical form"),
    "manifest not json": (lambda p, k, b: write_canonical(p, b"{nope", b), "invalid JSON"),
    "manifest not an object": (lambda p, k, b: write_canonical(p, b"[1,2]", b),
                               "must be a JSON object"),
    "health without slash": (lambda p, k, b: write_spore(p, k, b, health="health"),
                             "health 'health'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_spore_is_rejected_by_verify_and_publish_without_a_trace(
        case: str, tmp_path: Path, home: Home, key: SigningKey, binary_bytes: bytes) -> None:
    build, reason = CASES[case]
    spore = build(tmp_path / "hostile.spore", key, binary_bytes)
    before = repo_listing(home.repo)

    with pytest.raises(SporeError) as info:
        verify(spore, load_trusted(home))
    assert reason in str(info.value)
    assert not isinstance(info.value, ManifestError) or info.value.exit_code == 1

    assert_one_error(run_cli("verify", spore, "--home", home.root), 1, reason)
    assert_one_error(run_cli("publish", "--spore", spore, "--home", home.root), 1, reason)
    dest = tmp_path / "instance"
    with pytest.raises(SporeError):
        extract(spore, dest, load_trusted(home))
    assert not dest.exists()
    assert repo_listing(home.repo) == before


@pytest.mark.parametrize(("limits", "reason"), [
    (Limits(max_archive_bytes=300), "archive is"),
    (Limits(max_binary_bytes=100), "over the limit of 100 bytes"),
    (Limits(max_manifest_bytes=50), "over the limit of 50 bytes"),
])
def test_spores_over_the_configured_limits_are_rejected(
        limits: Limits, reason: str, tmp_path: Path, home: Home, key: SigningKey,
        binary_bytes: bytes) -> None:
    spore = write_spore(tmp_path / "big.spore", key, binary_bytes)
    verify(spore, load_trusted(home))  # fine with the default limits
    with pytest.raises(SporeError, match=reason):
        verify(spore, load_trusted(home), limits)


def test_cli_applies_the_configured_binary_limit(tmp_path: Path, home: Home, key: SigningKey,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    spore = write_spore(tmp_path / "big.spore", key, bytes(1536 * 1024))
    monkeypatch.setenv("MYCELIUM_SPORES_MAX_BINARY_MB", "1")
    assert_one_error(run_cli("verify", spore, "--home", home.root), 1, "over the limit")
    monkeypatch.delenv("MYCELIUM_SPORES_MAX_BINARY_MB")
    assert run_cli("verify", spore, "--home", home.root).code == 0


def test_a_repo_file_whose_content_is_not_its_name_is_rejected(
        tmp_path: Path, home: Home, key: SigningKey, binary_bytes: bytes) -> None:
    good = write_spore(tmp_path / "good.spore", key, binary_bytes)
    digest = run_cli("publish", "--spore", good, "--home", home.root).out.strip()
    other = write_spore(tmp_path / "other.spore", key, binary_bytes, version="2.0.0")
    (home.repo / f"{digest}.spore").write_bytes(other.read_bytes())
    before = repo_listing(home.repo)
    assert_one_error(run_cli("verify", digest, "--home", home.root), 1,
                     "does not match its name")
    with pytest.raises(SporeError, match="does not match its name"):
        from mycelium.spores import Repo
        Repo(home.repo).path(digest)
    assert repo_listing(home.repo) == before
