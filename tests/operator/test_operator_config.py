"""The configuration: defaults < file < environment, every mistake named, the shipped file exact."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import psutil
import pytest

from mycelium.errors import BadInput
from mycelium.home import Home
from mycelium.operator import ConfigError, MeshConfig, load_config

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "mycelium.toml"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def error_of(path: Path | None = None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, env or {})
    assert isinstance(info.value, BadInput) and info.value.exit_code == 2
    return str(info.value)


def test_defaults_follow_the_spec_and_the_machine() -> None:
    config = load_config(None, {})
    assert config == MeshConfig()
    assert config.mesh.nodes == 3
    assert (config.edge.host, config.edge.port) == ("127.0.0.1", 8080)
    assert config.node.cpu == float(os.cpu_count() or 1)
    assert config.node.mem_mb == psutil.virtual_memory().total // (1024 * 1024)
    assert config.instance.startup_deadline == 30.0
    assert config.instance.health_failures == 3
    assert (config.restart.backoff_base, config.restart.backoff_cap) == (0.01, 30.0)
    assert config.rollout.timeout == 60.0


def test_the_shipped_file_loads_to_exactly_the_defaults() -> None:
    assert load_config(SHIPPED, {}) == MeshConfig()


def _shipped_keys() -> dict[str, dict[str, tuple[Any, bool]]]:
    """``{section: {key: (value, commented_out)}}`` as the shipped file spells them: the keys
    TOML reads, and the ``# key = value`` lines of machine-dependent defaults."""
    keys: dict[str, dict[str, tuple[Any, bool]]] = {}
    for section, table in tomllib.loads(SHIPPED.read_text()).items():
        keys[section] = {key: (value, False) for key, value in table.items()}
    section = ""
    for line in SHIPPED.read_text().splitlines():
        if head := re.fullmatch(r"\[(\w+)\]", line):
            section = head.group(1)
        elif commented := re.fullmatch(r"# (\w+) = (.+)", line):
            value = tomllib.loads(f"v = {commented.group(2)}")["v"]
            keys.setdefault(section, {})[commented.group(1)] = (value, True)
    return keys


def test_the_shipped_file_and_the_settings_list_the_same_keys_with_the_same_defaults() -> None:
    shipped = _shipped_keys()
    sections = {f.name: f.default_factory for f in dataclasses.fields(MeshConfig)}
    assert set(shipped) == set(sections), "every [section] in the file, and only those"
    for name, cls in sections.items():
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        assert set(shipped[name]) == set(fields), f"[{name}]: the file and {cls} differ"
        for key, (value, commented) in shipped[name].items():
            f = fields[key]
            machine = f.default is dataclasses.MISSING  # a default_factory: this machine's
            assert commented == machine, f"{name}.{key}: comment out exactly the computed ones"
            if not machine:
                assert value == f.default and type(value) is type(f.default), f"{name}.{key}"


def test_a_file_overrides_defaults_and_the_environment_overrides_the_file(
        tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[edge]\nport = 9000\nhost = '0.0.0.0'\n"
                                      "[instance]\nstop_grace = 2\n")
    config = load_config(path, {"MYCELIUM_EDGE_PORT": "9100", "MYCELIUM_MESH_NODES": "5"})
    assert config.edge.port == 9100
    assert config.edge.host == "0.0.0.0"
    assert config.mesh.nodes == 5
    assert config.instance.stop_grace == 2.0 and isinstance(config.instance.stop_grace, float)
    assert config.instance.startup_deadline == 30.0


def test_the_home_file_is_used_when_no_path_is_given(tmp_path: Path) -> None:
    home = Home(tmp_path)
    assert load_config(None, {}, home=home) == MeshConfig()  # no file: defaults
    write(tmp_path / "mycelium.toml", "[mesh]\nnodes = 7\n")
    assert load_config(None, {}, home=home).mesh.nodes == 7
    explicit = write(tmp_path / "other.toml", "[mesh]\nnodes = 2\n")
    assert load_config(explicit, {}, home=home).mesh.nodes == 2


def test_unrelated_mycelium_variables_are_left_alone() -> None:
    env = {"MYCELIUM_HOME": "/x", "MYCELIUM_DEBUG": "1", "MYCELIUM_NODE": "node-1",
           "MYCELIUM_INSTANCE": "hello@node-1#3", "PATH": "/bin"}
    assert load_config(None, env) == MeshConfig()


def test_the_config_is_frozen() -> None:
    config = load_config(None, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.edge.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(("toml", "message"), [
    ("[edge]\nport = 'x'\n", "config: edge.port must be an integer 1-65535, got 'x'"),
    ("[edge]\nport = 70000\n", "edge.port must be an integer 1-65535, got 70000"),
    ("[edge]\nport = 8080.0\n", "edge.port must be an integer"),
    ("[edge]\nport = \"8080\"\n", "edge.port must be an integer 1-65535, got '8080'"),
    ("[instance]\nstop_grace = \"2\"\n", "instance.stop_grace must be a number"),
    ("[edge]\nport = true\n", "edge.port must be an integer"),
    ("[edge]\nhost = 5\n", "edge.host must be a string"),
    ("[edge]\nhost = ''\n", "edge.host must be a string"),
    ("[mesh]\nnodes = 0\n", "mesh.nodes must be an integer 1-256, got 0"),
    ("[instance]\nstartup_deadline = 0\n", "instance.startup_deadline must be a number > 0"),
    ("[instance]\nstop_grace = -1\n", "instance.stop_grace must be a number 0-3600"),
    ("[instance]\nhealth_interval = nan\n", "instance.health_interval must be a number"),
    ("[restart]\nbackoff_jitter = 2\n", "restart.backoff_jitter must be a number 0-1"),
    ("[restart]\nbackoff_base = 5\nbackoff_cap = 1\n", "restart.backoff_cap (1) must be >="),
    ("[edge]\nui_port = 8080\n", "edge.ui_port must differ from edge.port"),
    ("[edge]\nprot = 1\n", "unknown key edge.prot"),
    ("[egde]\nport = 1\n", "unknown section [egde]"),
    ("nodes = 3\n", "key nodes in"),
    ("[edge\n", "is not valid TOML"),
])
def test_file_mistakes_are_named(tmp_path: Path, toml: str, message: str) -> None:
    assert message in error_of(write(tmp_path / "c.toml", toml))


@pytest.mark.parametrize(("env", "message"), [
    ({"MYCELIUM_EDGE_PORT": "x"},
     "config: MYCELIUM_EDGE_PORT (edge.port) must be an integer 1-65535, got 'x'"),
    ({"MYCELIUM_MESH_NODES": "2.5"}, "mesh.nodes) must be an integer"),
    ({"MYCELIUM_INSTANCE_STOP_GRACE": "soon"}, "instance.stop_grace) must be a number"),
    ({"MYCELIUM_EDGE_PROT": "1"}, "unknown setting MYCELIUM_EDGE_PROT"),
])
def test_environment_mistakes_are_named(env: dict[str, str], message: str) -> None:
    assert message in error_of(None, env)


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    assert "not found" in error_of(tmp_path / "absent.toml")


def test_bad_input_changes_nothing_so_the_same_call_fails_again(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[edge]\nport = 0\n")
    assert error_of(path) == error_of(path)
