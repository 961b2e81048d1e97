"""``apply`` of a new ``env_secrets`` (the same spore): a blue/green rollout it waits for."""

from __future__ import annotations

import http.client
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from files import manifest, table, write
from mesh_helpers import ENV, MeshProcess, cli

from mycelium.desired import RunningApp, Settings, diff
from mycelium.desired.model import DesiredApp

SECRETIVE = Path(__file__).resolve().parents[1] / "secrets" / "workloads" / "secretive"
VALUE = "apply-s3cr3t-5e0d"


def _fetch(port: int) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/vault/")
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (resp.status, body)
        result: dict[str, Any] = orjson.loads(body)
        return result
    finally:
        conn.close()


@pytest.mark.timeout(180)
def test_apply_of_a_new_env_secrets_returns_once_every_old_instance_is_replaced(
        mesh: MeshProcess, home: Path, tmp_path: Path) -> None:
    stored = subprocess.run([sys.executable, "-m", "mycelium", "secret", "set", "vault",
                             "DB_PASSWORD", "--home", str(home)], input=VALUE.encode(),
                            capture_output=True, timeout=60, env=ENV, check=False)
    assert stored.returncode == 0, stored.stderr
    spore = manifest(tmp_path / "manifests", "vault")
    plain = write(tmp_path / "plain.toml", table("vault", SECRETIVE, spore, max=3))
    applied = cli(home, "apply", str(plain))
    assert applied.returncode == 0, applied.stderr
    before = {i["id"] for i in mesh.ready("vault", 3)}
    assert {_fetch(mesh.port)["env"] for _ in range(6)} == {None}

    with_env = write(tmp_path / "env.toml", table("vault", SECRETIVE, spore, max=3,
                                                  env_secrets=["DB_PASSWORD"]))
    plan = cli(home, "plan", str(with_env))
    assert 'vault  ~ settings (env_secrets [] → ["DB_PASSWORD"])' in plan.stdout, plan.stdout
    applied = cli(home, "apply", str(with_env))
    assert applied.returncode == 0, applied.stderr
    assert "vault: settings ok in" in applied.stderr, applied.stderr
    # at its return, and not later: every old instance is gone, 3 new ones serve the variable
    doc = mesh.app("vault")
    live = [i for i in doc["instances"] if i["state"] != "Stopped"]
    assert not {i["id"] for i in live} & before, live
    assert [i["state"] for i in live] == ["Ready"] * 3, live
    assert {_fetch(mesh.port)["env"] for _ in range(6)} == {VALUE}
    assert VALUE not in applied.stdout + applied.stderr


def _app(env_secrets: tuple[str, ...]) -> tuple[DesiredApp, RunningApp]:
    settings = Settings(min=1, max=3, max_instances=3, cpu=0.1, mem=256, warmup=0.0,
                        timeout=60.0)
    want = DesiredApp(name="vault", settings=settings, manifest={}, binary_sha256="",
                      binary_size=0, digest="d" * 64, env_secrets=env_secrets)
    have = RunningApp(name="vault", digest="d" * 64, generation=3, settings=settings,
                      instances=("vault@node-1#1", "vault@node-2#2"))
    return want, have


def test_only_a_new_env_secrets_of_the_running_spore_rolls_in_place() -> None:
    want, have = _app(("DB_PASSWORD",))
    (change,) = diff([want], {"vault": have})
    assert change.action == "settings" and change.rolls_in_place
    assert change.running is not None and change.running.instances == have.instances
    (same,) = diff([_app(())[0]], {"vault": have})
    assert same.action == "unchanged" and not same.rolls_in_place
    (other,) = diff([want.__class__(**{**_fields(want), "digest": "e" * 64})], {"vault": have})
    assert other.action == "update" and not other.rolls_in_place  # judged by its digest
    (scaled,) = diff([want.__class__(**{**_fields(_app(())[0]), "settings": Settings(
        min=1, max=2, max_instances=3, cpu=0.1, mem=256, warmup=0.0, timeout=60.0)})],
        {"vault": have})
    assert scaled.action == "scale" and not scaled.rolls_in_place  # nothing restarts


def _fields(app: DesiredApp) -> dict[str, Any]:
    return {name: getattr(app, name) for name in app.__slots__}
