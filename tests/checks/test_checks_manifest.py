"""The manifest's ``checks``: every field validated at pack/publish with one precise error
line (exit 2, nothing written), the normalised form signed into the spore, and spores without
checks byte for byte as before."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mycelium.home import Home
from mycelium.spores import (
    ManifestError,
    Repo,
    inspect,
    keygen,
    load_trusted,
    parse_input_manifest,
)
from mycelium.spores import publish as publish_spore
from tests.meshkit import repo_env

CHECKER = Path(__file__).resolve().parent / "workloads" / "checker"


def manifest(*checks: Any) -> dict[str, Any]:
    return {"name": "app", "version": "1", "health": "/hz", "checks": list(checks)}


def test_defaults_are_filled_in_per_role_and_type() -> None:
    m = parse_input_manifest(manifest(
        {"type": "http", "role": "readiness"}, {"type": "tcp", "role": "startup"},
        {"type": "exec", "role": "liveness", "command": ["./binary", "--check"]},
        {"type": "notify", "watchdog": 5}))
    http, tcp, exe, notify = m.checks
    assert (http.name, http.path, http.interval, http.timeout, http.failures, http.successes) \
        == ("http-readiness", "/hz", 2.0, 1.0, 3, 1)
    assert (tcp.name, tcp.interval, tcp.failures) == ("tcp-startup", 0.01, 0)
    assert exe.command == ("./binary", "--check") and exe.name == "exec-liveness"
    assert (notify.role, notify.name, notify.watchdog) == ("startup", "notify-startup", 5.0)
    assert m.to_dict()["checks"][3] == {"type": "notify", "role": "startup",
                                        "name": "notify-startup", "watchdog": 5.0}


@pytest.mark.parametrize(("check", "message"), [
    ({"type": "grpc", "role": "liveness"},
     "checks[0].type must be one of http, tcp, exec, notify, got 'grpc'"),
    ({"type": "http"}, "checks[0].role must be one of startup, readiness, liveness, got nothing"),
    ({"type": "http", "role": "readiness", "command": ["x"]},
     "checks[0]: key 'command' does not apply to a http check"),
    ({"type": "tcp", "role": "readiness", "port": 80}, "checks[0]: unknown key 'port'"),
    ({"type": "notify", "role": "liveness"},
     "checks[0].role of a notify check must be startup, got 'liveness'"),
    ({"type": "notify", "interval": 1}, "checks[0]: key 'interval' does not apply to a notify"),
    ({"type": "http", "role": "liveness", "interval": 0},
     "checks[0].interval must be a number of seconds between 0.001 and 86400, got 0"),
    ({"type": "http", "role": "liveness", "timeout": "1"},
     "checks[0].timeout must be a number of seconds between 0.001 and 3600, got '1'"),
    ({"type": "http", "role": "liveness", "failures": 0},
     "checks[0].failures must be an integer between 1 and 1000, got 0"),
    ({"type": "http", "role": "readiness", "successes": True},
     "checks[0].successes must be an integer between 1 and 1000, got True"),
    ({"type": "http", "role": "readiness", "path": "health"},
     "checks[0].path must be a path starting with '/'"),
    ({"type": "exec", "role": "readiness", "command": []},
     "checks[0].command must be a non-empty list of non-empty strings, got []"),
    ({"type": "exec", "role": "readiness", "command": "true"},
     "checks[0].command must be a non-empty list of non-empty strings, got 'true'"),
    ({"type": "tcp", "role": "readiness", "name": "Bad Name"},
     "checks[0].name must match"),
    ({"type": "notify", "watchdog": -1},
     "checks[0].watchdog must be a number of seconds between 0.001 and 86400, got -1"),
    ("http", "checks[0] must be an object, got str"),
])
def test_each_bad_field_is_named(check: Any, message: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse_input_manifest(manifest(check))
    assert str(err.value).startswith(f"manifest: {message}")
    assert err.value.exit_code == 2


def test_names_are_unique_and_there_is_one_notify_check() -> None:
    with pytest.raises(ManifestError, match=r"checks\[1\]: name 'http-readiness' is used"):
        parse_input_manifest(manifest({"type": "http", "role": "readiness"},
                                      {"type": "http", "role": "readiness", "path": "/x"}))
    with pytest.raises(ManifestError, match=r"checks\[1\]: only one notify check"):
        parse_input_manifest(manifest({"type": "notify"}, {"type": "notify", "name": "n2"}))
    with pytest.raises(ManifestError, match="checks must be a list of objects, got dict"):
        parse_input_manifest({"name": "a", "version": "1", "checks": {}})


def test_publish_refuses_bad_checks_with_one_error_line_and_exit_2(tmp_path: Path) -> None:
    home = tmp_path / "home"
    bad = tmp_path / "manifest.json"
    bad.write_text(json.dumps(manifest({"type": "http", "role": "liveness", "failures": -1})))
    env = repo_env()
    run = [sys.executable, "-m", "mycelium"]
    assert subprocess.run([*run, "keygen", "--home", str(home)], env=env,
                          capture_output=True, check=False).returncode == 0
    proc = subprocess.run([*run, "publish", str(CHECKER), "--manifest", str(bad), "--home",
                           str(home)], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: manifest: checks[0].failures must be an integer between 1 and 1000, got -1"]
    assert proc.stdout == ""
    assert not list(home.glob("repo/*.spore"))  # nothing was put into the repo


def test_a_spore_carries_its_checks_and_one_without_checks_has_no_checks_key(
        tmp_path: Path) -> None:
    home = Home(tmp_path / "home").ensure()
    keygen(home)
    with_checks = publish_spore(home, binary=CHECKER, manifest=manifest(
        {"type": "exec", "role": "readiness", "command": ["true"], "interval": 0.5}))
    without = publish_spore(home, binary=CHECKER, manifest={"name": "app", "version": "2"})
    repo = Repo(home.repo)
    _, m, _ = inspect(repo.path(with_checks), load_trusted(home))
    assert m.checks[0].command == ("true",) and m.checks[0].interval == 0.5
    _, plain, _ = inspect(repo.path(without), load_trusted(home))
    assert plain.checks == () and "checks" not in plain.to_dict()
