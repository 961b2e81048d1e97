"""Reading and validating desired-state files: every bad file is one precise BadFile."""

from __future__ import annotations

import dataclasses
import hashlib
import tomllib
from pathlib import Path

import pytest
from files import CRASHY, HELLO, manifest, table, write
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.cli.applying import load_desired
from mycelium.desired import BadFile, RunningApp, Settings, diff
from mycelium.desired.locate import LineIndex
from mycelium.desired.text import export_toml
from mycelium.home import Home
from mycelium.spores import keygen, publish


@pytest.fixture
def home(tmp_path: Path) -> Home:
    h = Home(tmp_path / "home").ensure()
    keygen(h)
    return h


def test_a_binary_table_is_identified_by_the_binary_hash_and_the_manifest(
        home: Home, tmp_path: Path) -> None:
    m = manifest(tmp_path, "hello", "1.2.0", env={"A": "1"}, warmup=2)
    f = write(tmp_path / "mesh.toml", table("hello", HELLO, m, max=3, cpu=1))
    (app,) = load_desired(home, f).apps
    assert app.binary_sha256 == hashlib.sha256(HELLO.read_bytes()).hexdigest()
    assert app.binary_size == HELLO.stat().st_size
    assert app.manifest == {"name": "hello", "version": "1.2.0", "health": "/health",
                            "args": [], "env": {"A": "1"}, "warmup": 2.0}
    assert app.settings == Settings(min=1, max=3, max_instances=3, cpu=1.0, mem=256,
                                    warmup=2.0, timeout=60.0)  # warmup: the manifest's
    assert app.digest is None and app.binary == HELLO.resolve()
    assert list(home.repo.glob("*")) == []  # nothing packed, nothing written


def test_paths_are_relative_to_the_file(home: Home, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    manifest(tmp_path / "sub", "hello")
    f = tmp_path / "sub" / "mesh.toml"
    f.write_text(f'[apps.hello]\nbinary = "{HELLO}"\nmanifest = "hello-1.0.0.json"\n')
    assert load_desired(home, f).apps[0].manifest_path == (tmp_path / "sub" / "hello-1.0.0.json")


def test_a_digest_table_reads_the_spores_signed_manifest(home: Home, tmp_path: Path) -> None:
    digest = publish(home, binary=HELLO, manifest={"name": "hello", "version": "3.0.0"})
    f = write(tmp_path / "mesh.toml", f'[apps.hello]\ndigest = "{digest[:10]}"\nmin = 0\n')
    (app,) = load_desired(home, f).apps
    assert app.digest == digest and app.version == "3.0.0" and app.settings.min == 0


BAD = [
    ('[apps.hello]\nbinary = "B"\nmanifest = "M"\nmins = 3\n', 4, "apps.hello.mins",
     "unknown key"),
    ('[apps.hello]\nbinary = "B\n', 2, None, "bad TOML"),
    ('[apps.Hello]\nbinary = "B"\nmanifest = "M"\n', 1, "apps.Hello", "bad app name"),
    ('[apps.hello]\nbinary = "nope"\nmanifest = "M"\n', 2, "apps.hello.binary", "no such file"),
    ('[apps.crashy]\nbinary = "B"\nmanifest = "M"\n', 3, "apps.crashy.manifest",
     "is app 'hello', not 'crashy'"),
    ('[apps.hello]\nbinary = "B"\nmanifest = "M"\nmin = 3\nmax = 2\n', 4, "apps.hello.min",
     "min 3 is greater than max 2"),
    ('[apps.hello]\nbinary = "B"\nmanifest = "M"\n\nsecrets = ["DB_URL"]\n', 5,
     "apps.hello.secrets", "secret 'DB_URL' does not exist"),
    ('[apps.hello]\nbinary = "B"\nmanifest = "M"\nenv_secrets = ["bad name"]\n', 4,
     "apps.hello.env_secrets", "bad secret name"),
    ('[apps.hello]\nbinary = "B"\nmanifest = "M"\nhosts = ["not a host"]\n', 4,
     "apps.hello.hosts", "bad host name"),
    ('[apps.hello]\nbinary = "B"\nmanifest = "M"\ncanary = {instances = 1, bogus = 10}\n', 4,
     "apps.hello.canary", "unknown key 'bogus'"),
    ('[apps.hello]\nbinary = "B"\nmanifest = "M"\ncanary = -1\n', 4,
     "apps.hello.canary", "must be an instance count >= 0"),
    ('[apps.hello]\nbinary = "B"\nmanifest = "M"\ncanary = {weight = 100}\n', 4,
     "apps.hello.canary", "weight must be an integer 1-99, got 100"),
    ('[apps.hello]\ndigest = "abcd"\n', 2, "apps.hello.digest", "no spore matching 'abcd'"),
    ('[apps.hello]\nbinary = "B"\n', 1, "apps.hello", "manifest is missing"),
    ('[apps.hello]\nbinary = "B"\nmanifest = "M"\ndigest = "abcd"\n', 1, "apps.hello",
     "exactly one of binary + manifest, or digest"),
    ('title = "x"\n', 1, "title", "unknown key"),
    ('[apps.hello]\nbinary = "B"\nmanifest = "M"\ncpu = true\n', 4, "apps.hello.cpu",
     "must be a number, got true"),
    ('[apps]\nhello = { binary = "B", manifest = "M", max = 0 }\n', 2, "apps.hello.max",
     "must be >= 1, got 0"),
    ('[apps.hello]\nbinary = "B"\nmanifest = "M"\ntimeout = 0\n', 4, "apps.hello.timeout",
     "must be > 0"),
    ('[apps.hello]\nbinary = "B"\nmanifest = "bad.json"\n', 3, "apps.hello.manifest",
     "unknown key 'nme'"),
]


@pytest.mark.parametrize(("text", "line", "key", "reason"), BAD)
def test_a_bad_file_is_one_error_naming_file_line_and_key(
        home: Home, tmp_path: Path, text: str, line: int, key: str | None, reason: str) -> None:
    manifest(tmp_path, "hello")
    (tmp_path / "bad.json").write_text('{"nme": "hello", "version": "1"}')
    text = text.replace('"B"', f'"{HELLO}"').replace('"M"', '"hello-1.0.0.json"')
    f = write(tmp_path / "mesh.toml", text)
    with pytest.raises(BadFile) as caught:
        load_desired(home, f)
    message = str(caught.value)
    assert message.startswith(f"{f}:{line}: " + (f"{key}: " if key else "")), message
    assert reason in message and "\n" not in message
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(("value", "want"), [
    ("0", (0, 0, 0.0)), ("2", (2, 0, 0.0)), ("{instances = 1, weight = 10}", (1, 10, 0.0)),
    ("{weight = 25, auto_promote = 30}", (1, 25, 30.0)), ("{instances = 0, weight = 5}",
                                                          (0, 0, 0.0))])
def test_a_canary_is_read_as_instances_weight_and_auto_promote(
        home: Home, tmp_path: Path, value: str, want: tuple[int, int, float]) -> None:
    manifest(tmp_path, "hello")
    f = write(tmp_path / "mesh.toml", f'[apps.hello]\nbinary = "{HELLO}"\n'
              f'manifest = "hello-1.0.0.json"\ncanary = {value}\n')
    (app,) = load_desired(home, f).apps
    assert app.canary == want


def test_a_missing_file_is_bad_input(home: Home, tmp_path: Path) -> None:
    with pytest.raises(BadFile, match="no such file"):
        load_desired(home, tmp_path / "nope.toml")


def test_every_app_is_validated_the_first_error_wins(home: Home, tmp_path: Path) -> None:
    ok = table("hello", HELLO, manifest(tmp_path, "hello"))
    bad = table("crashy", CRASHY, manifest(tmp_path, "crashy"), min=2)
    with pytest.raises(BadFile, match=r"mesh.toml:8: apps.crashy.min: min 2 is greater"):
        load_desired(home, write(tmp_path / "mesh.toml", ok, bad))


def test_line_index_finds_headers_dotted_keys_and_inline_tables() -> None:
    index = LineIndex('# c\n[apps."a-b"]\nmin = 1\n\n[apps]\nc.max = 2\nd = { min = 3 }\n')
    assert index.line("apps", "a-b") == 2
    assert index.line("apps", "a-b", "min") == 3
    assert index.line("apps", "a-b", "nope") == 2  # the enclosing table
    assert index.line("apps", "c", "max") == 6
    assert index.line("apps", "d", "min") == 7
    assert index.line("other") is None


floats = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 5), st.integers(1, 10), floats, st.integers(1, 10**6), floats,
       floats.filter(lambda t: t > 0))
def test_export_writes_toml_that_reads_back_to_the_same_values(
        n_min: int, max_instances: int, cpu: float, mem: int, warmup: float,
        timeout: float) -> None:
    s = Settings(n_min, n_min + 1, max_instances, cpu, mem, warmup, timeout)
    text = export_toml([RunningApp("a-1", "f" * 64, 3, s)], "header\nline two")
    data = tomllib.loads(text)["apps"]["a-1"]
    assert data.pop("digest") == "f" * 64
    assert Settings(**data) == s
    assert all(type(data[k]) is type(getattr(s, k)) for k in data)


def test_an_exported_state_plans_as_unchanged(home: Home, tmp_path: Path) -> None:
    digest = publish(home, binary=HELLO, manifest={"name": "hello", "version": "1.0.0",
                                                   "warmup": 1.5})
    have = RunningApp("hello", digest, 4, Settings(0, 2, 5, 0.25, 300, 1.5, 12.5),
                      manifest={"name": "hello", "version": "1.0.0"})
    f = tmp_path / "exported.toml"
    f.write_text(export_toml([have]))
    assert [c.action for c in diff(load_desired(home, f).apps, {"hello": have})] == ["unchanged"]


def test_hosts_are_read_compared_and_exported(home: Home, tmp_path: Path) -> None:
    digest = publish(home, binary=HELLO, manifest={"name": "hello", "version": "3.0.0"})
    f = write(tmp_path / "mesh.toml", f'[apps.hello]\ndigest = "{digest}"\n'
              'hosts = ["b.example.com", "*.a.example.com"]\n')
    (app,) = load_desired(home, f).apps
    assert app.settings.hosts == ("*.a.example.com", "b.example.com")
    running = RunningApp(name="hello", digest=digest, generation=1,
                         settings=dataclasses.replace(app.settings, hosts=()))
    (change,) = diff([app], {"hello": running})
    assert change.action == "settings" and [c.field for c in change.changes] == ["hosts"]
    same = dataclasses.replace(running, settings=app.settings)
    assert diff([app], {"hello": same})[0].action == "unchanged"
    exported = write(tmp_path / "export.toml", export_toml([same]))
    assert 'hosts = ["*.a.example.com", "b.example.com"]' in exported.read_text()
    assert diff(list(load_desired(home, exported).apps), {"hello": same})[0].action == \
        "unchanged"
