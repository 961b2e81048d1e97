"""Spores by digest between members: served read-only, fetched, verified against LOCAL trust."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest

from mycelium.home import Home
from mycelium.spores import Repo, SporeError, keygen, load_trusted, publish, trust
from mycelium.spores.fetch import SporeServer, fetch

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello" / "hello"


@pytest.fixture
def published(tmp_path: Path) -> tuple[Home, str, str]:
    home = Home(tmp_path / "a").ensure()
    key = keygen(home)
    digest = publish(home, binary=HELLO, manifest={"name": "hello", "version": "1.0.0"})
    return home, digest, key


def test_fetch_by_digest_verifies_against_local_trust(
        tmp_path: Path, published: tuple[Home, str, str]) -> None:
    source, digest, key = published
    server = SporeServer(Repo(source.repo)).start()
    try:
        stranger = Home(tmp_path / "c").ensure()
        with pytest.raises(SporeError, match="trusted"):
            fetch(Repo(stranger.repo), digest, [server.url], load_trusted(stranger))
        assert Repo(stranger.repo).digests() == []
        assert not [p for p in stranger.repo.iterdir() if p.name.endswith(".partial")]

        friend = Home(tmp_path / "b").ensure()
        trust(friend, key)
        path = fetch(Repo(friend.repo), digest, ["http://127.0.0.1:1", server.url],
                     load_trusted(friend))
        assert path.read_bytes() == (source.repo / f"{digest}.spore").read_bytes()
        assert Repo(friend.repo).verify(digest, load_trusted(friend)).manifest.name == "hello"
    finally:
        server.stop()


def test_a_lying_server_is_refused(tmp_path: Path, published: tuple[Home, str, str]) -> None:
    source, digest, key = published
    liar_repo = tmp_path / "liar"
    liar_repo.mkdir()
    other = "f" * 64
    (liar_repo / f"{other}.spore").write_bytes((source.repo / f"{digest}.spore").read_bytes())
    server = SporeServer(Repo(liar_repo)).start()
    try:
        friend = Home(tmp_path / "b").ensure()
        trust(friend, key)
        with pytest.raises(SporeError, match="sha256"):
            fetch(Repo(friend.repo), other, [server.url], load_trusted(friend))
        assert Repo(friend.repo).digests() == []
    finally:
        server.stop()


def test_server_is_read_only_and_answers_only_digests(published: tuple[Home, str, str]) -> None:
    source, digest, _key = published
    server = SporeServer(Repo(source.repo)).start()
    try:
        for method, path, status in (("GET", f"/spores/{digest}", 200),
                                     ("GET", "/spores/../keys/default.key", 404),
                                     ("GET", f"/spores/{'0' * 64}", 404),
                                     ("PUT", f"/spores/{digest}", 405)):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            conn.request(method, path)
            resp = conn.getresponse()
            resp.read()
            conn.close()
            assert resp.status == status, (method, path)
    finally:
        server.stop()
