"""Manifest validation as properties: every valid manifest is accepted and survives
pack→verify unchanged; anything else is a ManifestError (never another exception)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from spores_helpers import write_canonical

from mycelium.spores import Manifest, ManifestError, canonical_json, parse_input_manifest, verify
from mycelium.spores.archive import BINARY

NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
KEY = SigningKey.generate()
TRUSTED = frozenset({bytes(KEY.verify_key).hex()})

names = st.from_regex(NAME_RE, fullmatch=True)
versions = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,20}", fullmatch=True)
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=30)
env_keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True).filter(
    lambda k: k != "PORT" and not k.startswith("MYCELIUM_"))
valid = st.fixed_dictionaries(
    {"name": names, "version": versions},
    optional={
        "health": st.from_regex(r"/[a-z0-9/_.?=-]{0,20}", fullmatch=True),
        "args": st.lists(texts, max_size=5),
        "env": st.dictionaries(env_keys, texts, max_size=5),
        "warmup": st.one_of(st.integers(0, 3600),
                            st.floats(0, 3600, allow_nan=False, allow_infinity=False)),
    })
json_values = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8)


@settings(max_examples=60, deadline=None)
@given(valid)
def test_every_valid_input_manifest_is_accepted_with_its_defaults(data: dict[str, Any]) -> None:
    m = parse_input_manifest(json.dumps(data).encode())
    assert (m.name, m.version) == (data["name"], data["version"])
    assert m.health == data.get("health", "/health")
    assert m.args == tuple(data.get("args", []))
    assert dict(m.env) == data.get("env", {})
    assert m.warmup == float(data.get("warmup", 0))
    assert not m.signed


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(valid, st.binary(max_size=64))
def test_pack_then_verify_returns_the_same_manifest(tmp_path: Path, data: dict[str, Any],
                                                    binary: bytes) -> None:
    from mycelium.spores import pack

    src = tmp_path / BINARY
    src.write_bytes(binary)
    packed = pack(src, data, KEY, tmp_path / "s.spore")
    verified = verify(packed.path, TRUSTED)
    assert verified.manifest == packed.manifest
    assert verified.digest == packed.digest
    m = verified.manifest
    assert (m.name, m.version, dict(m.env)) == (data["name"], data["version"],
                                                data.get("env", {}))
    assert m.binary_size == len(binary) and m.signer == bytes(KEY.verify_key).hex()


@settings(max_examples=50, deadline=None)
@given(valid, st.sampled_from(["name", "version", "health", "args", "env", "warmup"]),
       json_values)
def test_any_field_value_is_either_valid_or_a_manifest_error(
        data: dict[str, Any], field: str, value: object) -> None:
    data = {**data, field: value}
    try:
        m = parse_input_manifest(json.dumps(data).encode())
    except ManifestError as exc:
        assert exc.exit_code == 2
        assert str(exc).startswith("manifest: ")
        return
    assert NAME_RE.fullmatch(m.name)
    assert m.health.startswith("/")
    assert all(isinstance(a, str) for a in m.args)
    assert 0 <= m.warmup <= 86_400


@settings(max_examples=30, deadline=None)
@given(valid, texts.filter(lambda k: k not in {"name", "version", "health", "args", "env",
                                                 "warmup"}), json_values)
def test_unknown_keys_are_an_error(data: dict[str, Any], key: str, value: object) -> None:
    with pytest.raises(ManifestError) as info:
        parse_input_manifest(json.dumps({**data, key: value}).encode())
    assert info.value.exit_code == 2


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=70))
def test_names_follow_the_spec_regex(name: str) -> None:
    ok = NAME_RE.fullmatch(name) is not None
    try:
        parse_input_manifest({"name": name, "version": "1"})
    except ManifestError:
        assert not ok
    else:
        assert ok


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_parsers(raw: bytes) -> None:
    with pytest.raises(ManifestError):
        parse_input_manifest(raw)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(texts, json_values, max_size=6))
def test_a_signed_spore_with_any_manifest_object_verifies_or_fails_cleanly(
        tmp_path: Path, data: dict[str, Any]) -> None:
    from mycelium.spores import SporeError

    data = {**data, "signer": bytes(KEY.verify_key).hex()}
    data["signature"] = KEY.sign(canonical_json(data)).signature.hex()
    spore = write_canonical(tmp_path / "s.spore", canonical_json(data), b"x")
    with pytest.raises(SporeError) as info:
        verify(spore, TRUSTED)
    assert info.value.exit_code == 1


@pytest.mark.parametrize(("patch", "reason"), [
    ({"warmup": -1}, "warmup"),
    ({"warmup": True}, "warmup"),
    ({"warmup": 1e9}, "warmup"),
    ({"env": {"PORT": "1"}}, "set by the mesh"),
    ({"env": {"MYCELIUM_APP": "x"}}, "set by the mesh"),
    ({"env": {"A": 1}}, "must be a string"),
    ({"env": {"1A": "x"}}, "not a valid variable name"),
    ({"args": "ls -l"}, "list of strings"),
    ({"args": [1]}, "must be a string"),
    ({"health": "/he alth"}, "health"),
    ({"version": ""}, "version"),
    ({"version": 1}, "must be a string"),
    ({"name": "a" * 64}, "name"),
    ({"name": "-a"}, "name"),
    ({"signature": "00"}, "added by pack"),
])
def test_bad_fields_name_the_precise_reason(patch: dict[str, Any], reason: str) -> None:
    with pytest.raises(ManifestError, match=re.escape(reason)):
        parse_input_manifest({"name": "hello", "version": "1.0.0", **patch})


def test_missing_required_keys_and_duplicates() -> None:
    with pytest.raises(ManifestError, match="missing required key 'version'"):
        parse_input_manifest(b'{"name": "hello"}')
    with pytest.raises(ManifestError, match="duplicate key 'name'"):
        parse_input_manifest(b'{"name": "a", "name": "b", "version": "1"}')
    with pytest.raises(ManifestError, match="not valid JSON"):
        parse_input_manifest(b'{"name": "a", "version": "1", "warmup": NaN}')
    m = Manifest(name="x", version="1")
    assert m.to_dict() == {"name": "x", "version": "1", "health": "/health", "args": [],
                           "env": {}, "warmup": 0.0}
