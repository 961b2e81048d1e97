"""Flow A through the real ``mycelium`` command, as separate OS processes."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from spores_helpers import assert_one_error, repo_listing, run_cli, run_mycelium

HEX64 = re.compile(r"[0-9a-f]{64}")


def test_flow_a_keygen_pack_publish_verify_inspect(tmp_path: Path, binary: Path,
                                                   manifest_file: Path) -> None:
    home = tmp_path / "home"
    keygen = run_mycelium("keygen", "--home", home)
    assert keygen.code == 0, keygen
    pub = keygen.out.strip()
    assert HEX64.fullmatch(pub)
    key_file = home / "keys" / "default.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (home / "keys" / "default.pub").read_text().strip() == pub
    assert (home / "trusted" / "default.pub").read_text().strip() == pub

    out = tmp_path / "hello.spore"
    packed = run_mycelium("pack", binary, "--manifest", manifest_file, "-o", out,
                          "--home", home)
    assert packed.code == 0, packed
    assert packed.out.strip() == str(out)

    published = run_mycelium("publish", binary, "--manifest", manifest_file, "--home", home)
    assert published.code == 0, published
    digest = published.out.strip()
    assert HEX64.fullmatch(digest), published.out
    assert published.out == digest + "\n"
    assert (home / "repo" / f"{digest}.spore").is_file()

    spore_digest = run_cli("publish", "--spore", out, "--home", home).out.strip()
    assert HEX64.fullmatch(spore_digest)
    assert sorted(p.name for p in (home / "repo").iterdir()) == sorted(
        {f"{digest}.spore", f"{spore_digest}.spore"})

    ok = run_mycelium("verify", digest, "--home", home)
    assert (ok.code, ok.out) == (0, f"ok {digest} hello 1.0.0\n"), ok
    assert run_cli("verify", digest[:10], "--home", home).out == f"ok {digest} hello 1.0.0\n"
    assert run_cli("verify", out, "--home", home).out == f"ok {spore_digest} hello 1.0.0\n"

    shown = run_cli("inspect", digest, "--json", "--home", home)
    assert shown.code == 0, shown
    manifest = json.loads(shown.out)
    assert manifest["name"] == "hello" and manifest["version"] == "1.0.0"
    assert manifest["signer"] == pub and manifest["binary_size"] == binary.stat().st_size
    assert manifest["health"] == "/health" and manifest["created_at"].endswith("Z")
    human = run_cli("inspect", digest, "--home", home)
    assert f"digest      {digest}" in human.out and "(trusted)" in human.out


def test_publish_is_idempotent(tmp_path: Path, binary: Path, manifest_file: Path) -> None:
    home = tmp_path / "home"
    assert run_cli("keygen", "--home", home).code == 0
    out = tmp_path / "s.spore"
    assert run_cli("pack", binary, "--manifest", manifest_file, "-o", out, "--home", home).code == 0
    first = run_cli("publish", "--spore", out, "--home", home)
    listing = repo_listing(home / "repo")
    mtime = os.stat(home / "repo" / f"{first.out.strip()}.spore").st_mtime_ns
    second = run_cli("publish", "--spore", out, "--home", home)
    assert first.out == second.out and first.code == second.code == 0
    assert repo_listing(home / "repo") == listing
    assert os.stat(home / "repo" / f"{first.out.strip()}.spore").st_mtime_ns == mtime


def test_bad_input_exits_2_with_one_error_line_and_changes_nothing(
        tmp_path: Path, binary: Path, manifest_file: Path) -> None:
    home = tmp_path / "home"
    assert run_cli("keygen", "--home", home).code == 0
    before = repo_listing(home / "repo")
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "hello", "version": "1", "colour": "red"}')
    assert_one_error(run_mycelium("publish", binary, "--manifest", bad, "--home", home), 2,
                     "unknown key 'colour'")
    bad.write_text('{"name": "Hello", "version": "1"}')
    assert_one_error(run_cli("pack", binary, "--manifest", bad, "--home", home), 2, "name")
    bad.write_text("{not json")
    assert_one_error(run_cli("publish", binary, "--manifest", bad, "--home", home), 2,
                     "invalid JSON")
    assert_one_error(run_cli("publish", tmp_path / "nope", "--manifest", manifest_file,
                             "--home", home), 2, "cannot read binary")
    assert_one_error(run_cli("publish", binary, "--manifest", manifest_file, "--key", "other",
                             "--home", home), 2, "no signing key 'other'")
    assert_one_error(run_cli("publish", "--home", home), 2)
    assert_one_error(run_cli("verify", "0" * 64, "--home", home), 1, "no spore")
    assert_one_error(run_cli("verify", tmp_path / "missing.spore", "--home", home), 1)
    assert_one_error(run_cli("inspect", "zz-not-a-file", "--home", home), 2)
    assert repo_listing(home / "repo") == before
    assert sorted(os.listdir(tmp_path)) == sorted(["bad.json", "hello-bin", "home",
                                                   "manifest.json"])


def test_publish_refuses_a_spore_whose_signer_is_not_trusted(tmp_path: Path, binary: Path,
                                                             manifest_file: Path) -> None:
    signer_home, mesh_home = tmp_path / "signer", tmp_path / "mesh"
    pub = run_cli("keygen", "--home", signer_home).out.strip()
    out = tmp_path / "s.spore"
    run_cli("pack", binary, "--manifest", manifest_file, "-o", out, "--home", signer_home)
    assert_one_error(run_cli("publish", "--spore", out, "--home", mesh_home), 1, "not trusted")
    assert repo_listing(mesh_home / "repo") == {}
    assert "(NOT trusted)" in run_cli("inspect", out, "--home", mesh_home).out
    assert run_cli("trust", pub, "--name", "ci", "--home", mesh_home).code == 0
    assert "(trusted)" in run_cli("inspect", out, "--home", mesh_home).out
    digest = run_cli("publish", "--spore", out, "--home", mesh_home).out.strip()
    assert HEX64.fullmatch(digest)
    assert_one_error(run_cli("trust", "xyz", "--home", mesh_home), 2, "64 hex")
