"""Every single-bit flip anywhere in a spore — local headers, manifest, binary, central
directory, end record, signature — is caught by verify, loose file or repo file alike."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from spores_helpers import assert_one_error, repo_listing, run_cli, write_spore

from mycelium.home import Home
from mycelium.spores import Repo, SporeError, load_trusted, publish, verify


def _regions(raw: bytes) -> dict[str, int]:
    """One representative offset inside each part of a canonical spore."""
    second_local = raw.index(b"PK\x03\x04", 4)
    central = raw.index(b"PK\x01\x02")
    eocd = raw.rindex(b"PK\x05\x06")
    return {
        "manifest local header": 14,  # crc field
        "manifest name": 31,
        "manifest json": 60,
        "signature": raw.index(b'"signature":"') + 20,
        "binary local header": second_local + 10,  # time
        "binary data": second_local + 40,
        "central directory": central + 4,  # version made by
        "central external attrs": central + 40,
        "end record": eocd + 10,
    }


def test_every_bit_flip_in_a_loose_spore_is_rejected(tmp_path: Path, home: Home,
                                                     key: SigningKey) -> None:
    spore = write_spore(tmp_path / "s.spore", key, b"#!/bin/sh\nexit 0\n" * 4)
    raw = spore.read_bytes()
    trusted = load_trusted(home)
    verify(spore, trusted)
    flipped = tmp_path / "flipped.spore"
    accepted = []
    for at in range(len(raw)):
        bit = at % 8  # every byte, every bit position across neighbouring bytes
        bad = bytearray(raw)
        bad[at] ^= 1 << bit
        flipped.write_bytes(bytes(bad))
        try:
            verify(flipped, trusted)
        except SporeError:
            continue
        accepted.append((at, bit))
    assert accepted == []


@pytest.mark.parametrize("region", sorted(_regions(b"PK\x03\x04" * 2 + b'"signature":"'
                                                   + b"PK\x01\x02PK\x05\x06" + bytes(64))))
def test_a_bit_flip_in_a_repo_spore_fails_verify_and_extract(
        region: str, tmp_path: Path, home: Home, key: SigningKey, binary: Path,
        manifest_file: Path) -> None:
    digest = publish(home, binary=binary, manifest=manifest_file)
    path = home.repo / f"{digest}.spore"
    raw = bytearray(path.read_bytes())
    at = _regions(bytes(raw))[region]
    raw[at] ^= 0x04
    os.chmod(path, 0o644)
    path.write_bytes(bytes(raw))
    before = repo_listing(home.repo)
    assert_one_error(run_cli("verify", digest, "--home", home.root), 1,
                     "does not match its name" if region != "end record" else "")
    loose = tmp_path / "loose.spore"
    loose.write_bytes(bytes(raw))
    assert_one_error(run_cli("verify", loose, "--home", home.root), 1)
    with pytest.raises(SporeError, match="does not match its name"):
        Repo(home.repo).path(digest)
    assert repo_listing(home.repo) == before
