"""Signing keys: private, never overwritten by accident, refused when others can read them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from spores_helpers import assert_one_error, run_cli

from mycelium.home import Home
from mycelium.spores import KeyFileError, keygen, load_signing_key, load_trusted, trust


def test_keygen_writes_a_private_key_and_trusts_its_public_half(tmp_path: Path) -> None:
    home = Home(tmp_path / "h")
    pub = keygen(home, "ci")
    assert stat.S_IMODE((home.keys / "ci.key").stat().st_mode) == 0o600
    assert bytes(load_signing_key(home, "ci").verify_key).hex() == pub
    assert load_trusted(home) == frozenset({pub})


def test_keygen_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    home = tmp_path / "h"
    first = run_cli("keygen", "--home", home)
    assert first.code == 0
    key_bytes = (home / "keys" / "default.key").read_bytes()
    assert_one_error(run_cli("keygen", "--home", home), 2, "already exists", "--force")
    assert (home / "keys" / "default.key").read_bytes() == key_bytes
    forced = run_cli("keygen", "--force", "--home", home)
    assert forced.code == 0 and forced.out != first.out
    assert (home / "keys" / "default.key").read_bytes() != key_bytes
    assert_one_error(run_cli("keygen", "--name", "../evil", "--home", home), 2, "bad key name")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o700, 0o666])
def test_a_key_readable_by_others_is_refused(mode: int, tmp_path: Path, binary: Path,
                                             manifest_file: Path) -> None:
    home = tmp_path / "h"
    run_cli("keygen", "--home", home)
    os.chmod(home / "keys" / "default.key", mode)
    err = assert_one_error(run_cli("publish", binary, "--manifest", manifest_file,
                                   "--home", home), 2, "too open", f"{mode:04o}")
    assert "chmod 600" in err
    assert not (home / "repo").exists() or not any((home / "repo").iterdir())


def test_a_read_only_key_is_fine_and_a_symlinked_key_is_refused(tmp_path: Path) -> None:
    home = Home(tmp_path / "h")
    keygen(home)
    os.chmod(home.keys / "default.key", 0o400)
    load_signing_key(home)
    os.rename(home.keys / "default.key", tmp_path / "elsewhere.key")
    os.symlink(tmp_path / "elsewhere.key", home.keys / "default.key")
    with pytest.raises(KeyFileError, match="cannot open"):
        load_signing_key(home)


def test_malformed_keys_are_refused_and_malformed_trust_files_ignored(tmp_path: Path) -> None:
    home = Home(tmp_path / "h")
    pub = keygen(home)
    (home.keys / "default.key").write_text("not hex")
    with pytest.raises(KeyFileError, match="malformed"):
        load_signing_key(home)
    (home.trusted / "junk.pub").write_text("zz")
    assert load_trusted(home) == frozenset({pub})
    with pytest.raises(KeyFileError, match="64 hex"):
        trust(home, "abc")
    other = "11" * 32
    with pytest.raises(KeyFileError, match="already used"):
        trust(home, other, "default")
