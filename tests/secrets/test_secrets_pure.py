"""The secrets' pure parts and their files: names, values, the key, the stores, delivery into
an instance's directory, the manifest's ``env_secrets``, the rollout of a new secrets count,
the fabric's TLS/auth checks — and that no repr or error message ever shows a value."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mycelium.errors import BadInput
from mycelium.fabric.access import fabric_access, is_loopback
from mycelium.fabric.etcd_client import EtcdClient
from mycelium.fabric.names import Names
from mycelium.home import Home
from mycelium.mesh.secret_ops import SecretOps
from mycelium.messages import Plan, SecretsChanged, message_types
from mycelium.node import credentials
from mycelium.node.rollout import ChildView, Start, Stop, step
from mycelium.operator.control import ControlError
from mycelium.secrets import (
    MAX_VALUE,
    BadSecret,
    HomeStore,
    Sealed,
    SecretKey,
    SecretKeyError,
    SecretsUnreadable,
    check_app,
    check_name,
    check_value,
    export_key,
    home_secrets,
    import_key,
    key_path,
    load_key,
    redact,
)
from mycelium.secrets.redact import redact_lines
from mycelium.spores import verify
from mycelium.spores.errors import ManifestError
from mycelium.spores.keys import keygen, load_signing_key
from mycelium.spores.manifest import parse_input_manifest
from mycelium.spores.spore import pack

VALUE = b"pure-s3cr3t-41b7"
NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")


@given(st.text(max_size=70))
def test_a_name_is_accepted_exactly_when_it_matches_the_pattern(name: str) -> None:
    if NAME.fullmatch(name):
        assert check_name(name) == name
    else:
        with pytest.raises(BadSecret):
            check_name(name)


@given(st.text(max_size=70))
def test_an_app_name_is_what_a_manifest_accepts(app: str) -> None:
    from mycelium.secrets.names import APP_RE
    from mycelium.spores.manifest import NAME_RE

    assert APP_RE.pattern == NAME_RE.pattern  # kept apart only for the CLI's start-up
    if NAME_RE.fullmatch(app):
        assert check_app(app) == app
    else:
        with pytest.raises(BadSecret):
            check_app(app)


def test_values_are_one_byte_to_64_kib_and_errors_never_show_them() -> None:
    assert check_value(b"x" * MAX_VALUE) == b"x" * MAX_VALUE
    for bad in (b"", VALUE * (MAX_VALUE // len(VALUE) + 1)):
        with pytest.raises(BadSecret) as info:
            check_value(bad)
        assert VALUE.decode() not in str(info.value)


def test_the_key_is_0600_seals_per_app_and_name_and_never_shows(tmp_path: Path) -> None:
    home = Home(tmp_path).ensure()
    with pytest.raises(SecretKeyError):
        load_key(home)
    key = load_key(home, create=True)
    assert stat.S_IMODE(key_path(home).stat().st_mode) == 0o600
    assert load_key(home).hex() == key.hex()
    box = key.seal("app", "TOKEN", VALUE)
    assert VALUE not in box and key.open("app", "TOKEN", box) == VALUE
    for app, name in (("other", "TOKEN"), ("app", "OTHER")):
        with pytest.raises(SecretsUnreadable) as info:
            key.open(app, name, box)
        assert VALUE.decode() not in str(info.value)
    with pytest.raises(SecretsUnreadable):
        SecretKey(os.urandom(32)).open("app", "TOKEN", box)
    assert key.hex() not in repr(key) and "hidden" in repr(key)
    key_path(home).chmod(0o644)
    with pytest.raises(SecretKeyError, match="readable by others"):
        load_key(home)


def test_the_key_moves_between_homes_and_is_not_replaced_by_accident(tmp_path: Path) -> None:
    a, b = Home(tmp_path / "a").ensure(), Home(tmp_path / "b").ensure()
    home_secrets(a).set("app", "TOKEN", VALUE)
    exported = export_key(a)
    assert import_key(b, exported) is True and import_key(b, exported) is False
    HomeStore(b).put("app", "TOKEN", HomeStore(a).entries("app")["TOKEN"])
    assert home_secrets(b).values("app") == {"TOKEN": VALUE}
    c = Home(tmp_path / "c").ensure()
    load_key(c, create=True)
    with pytest.raises(SecretKeyError, match="different secrets key"):
        import_key(c, exported)
    assert import_key(c, exported, force=True) is True
    with pytest.raises(SecretKeyError):
        import_key(c, "not a key")


def test_the_home_store_holds_ciphertext_and_names_with_times_only(tmp_path: Path) -> None:
    home = Home(tmp_path).ensure()
    secrets = home_secrets(home)
    secrets.set("app", "B_TOKEN", VALUE)
    secrets.set("app", "A_TOKEN", b"other")
    assert [n for n, _t in secrets.list("app")] == ["A_TOKEN", "B_TOKEN"]
    stored = (home.state / "secrets" / "app.json")
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert VALUE not in stored.read_bytes()
    sealed = HomeStore(home).entries("app")["B_TOKEN"]
    assert "box" not in repr(sealed) and isinstance(sealed, Sealed)
    assert secrets.remove("app", "B_TOKEN") and not secrets.remove("app", "B_TOKEN")
    assert secrets.values("app") == {"A_TOKEN": b"other"}
    with pytest.raises(BadSecret):
        secrets.set("Bad App", "TOKEN", VALUE)
    assert secrets.list("unknown") == []


def test_env_secrets_become_variables_and_a_missing_or_nul_value_fails_without_showing_it(
        ) -> None:
    values = {"TOKEN": VALUE, "OTHER": b"x"}
    assert credentials.environment(values, ["TOKEN"]) == {"TOKEN": VALUE.decode()}
    assert credentials.environment(values) == {}
    with pytest.raises(credentials.CredentialsError, match="MISSING") as info:
        credentials.environment(values, ["TOKEN", "MISSING"])
    assert VALUE.decode() not in str(info.value)
    with pytest.raises(credentials.CredentialsError, match="NUL") as info:
        credentials.environment({"TOKEN": b"a\0" + VALUE}, ["TOKEN"])
    assert VALUE.decode() not in str(info.value)


def test_env_secrets_is_an_optional_checked_manifest_field_that_survives_signing(
        tmp_path: Path) -> None:
    base = {"name": "app", "version": "1"}
    assert parse_input_manifest(base).env_secrets == ()
    assert "env_secrets" not in parse_input_manifest(base).to_dict()
    m = parse_input_manifest({**base, "env_secrets": ["DB_PASSWORD", "API_KEY"]})
    assert m.env_secrets == ("DB_PASSWORD", "API_KEY")
    for bad in ("DB_PASSWORD", ["lower"], ["PORT"], ["MYCELIUM_X"], ["A", "A"], [1],
                ["CREDENTIALS_DIRECTORY"]):
        with pytest.raises(ManifestError):
            parse_input_manifest({**base, "env_secrets": bad})
    with pytest.raises(ManifestError, match="both env and env_secrets"):
        parse_input_manifest({**base, "env": {"A": "1"}, "env_secrets": ["A"]})
    home = Home(tmp_path / "h").ensure()
    pub = keygen(home)
    binary = tmp_path / "bin"
    binary.write_bytes(b"#!/bin/sh\n")
    packed = pack(binary, {**base, "env_secrets": ["TOKEN"]}, load_signing_key(home),
                  tmp_path / "s.spore")
    assert verify(packed.path, frozenset({pub})).manifest.env_secrets == ("TOKEN",)


def _plan(secrets: int) -> Plan:
    return Plan(app="app", digest="d" * 64, min=1, max=1, warmup=1.0, timeout=10.0,
                generation=2, secrets=secrets)


def test_a_new_secrets_count_is_a_blue_green_rollout_of_the_same_digest() -> None:
    blue = ChildView("app@n:dddd", "d" * 64, "Ready", 0.0, 1.0)
    assert step(_plan(0), [blue], 5.0) == []
    assert step(_plan(1), [blue], 5.0) == [Start("d" * 64)]
    green = ChildView("app@n:dddd~s1", "d" * 64, "Ready", 5.0, 6.0, secrets=1)
    assert step(_plan(1), [blue, green], 6.5) != [Stop(blue.child)]  # warmup side by side
    assert step(_plan(1), [blue, green], 7.0) == [Stop(blue.child)]


def test_messages_carry_names_and_counts_never_values() -> None:
    assert [f for f in SecretsChanged.__dataclass_fields__] == ["app"]
    assert "secrets=3" in repr(_plan(3))
    for cls in message_types().values():  # no message has a field that could hold a value
        assert not {"value", "secret", "password"} & set(cls.__dataclass_fields__), cls


def test_control_op_errors_and_reprs_never_show_a_value_or_password(tmp_path: Path) -> None:
    ops = SecretOps(Names(), lambda: home_secrets(Home(tmp_path).ensure()))
    with pytest.raises(BadSecret) as info:
        ops.set({"app": "app", "name": "bad", "value_b64": "cHVyZS1zM2NyM3Q="})
    assert "cHVyZS1zM2NyM3Q" not in str(info.value)
    with pytest.raises(BadSecret) as info:
        ops.set({"app": "app", "name": "TOKEN", "value_b64": "%%" + VALUE.decode()})
    assert VALUE.decode() not in str(info.value)
    with pytest.raises(ControlError, match="restarting"):  # stored; no fabric to roll out
        ops.set({"app": "app", "name": "TOKEN", "value_b64": "eA=="})
    assert ops.list({"app": "app"})[0]["name"] == "TOKEN"
    access = fabric_access("etcd://127.0.0.1:2379", user="root", password="pw-9f8e")
    client = EtcdClient([("127.0.0.1", 2379)], user="root", password="pw-9f8e")
    assert "pw-9f8e" not in repr(access) and "pw-9f8e" not in repr(client)


def test_plain_etcd_to_another_machine_is_refused_as_insecure_before_connecting() -> None:
    for host in ("localhost", "127.0.0.1", "127.9.9.9", "[::1]"):
        assert is_loopback(host.strip("[]")) or host == "[::1]"
        fabric_access(f"etcd://{host}:2379")
    for url in ("etcd://10.0.0.1:2379", "etcd://127.0.0.1:1,db.example:2379"):
        with pytest.raises(BadInput, match="insecure"):
            fabric_access(url)
        assert fabric_access(url, insecure=True).tls is None
    assert fabric_access("etcds://10.0.0.1:2379").tls is not None
    with pytest.raises(BadInput, match="etcds"):
        fabric_access("etcd://127.0.0.1:2379", ca="/etc/ca.pem")
    with pytest.raises(BadInput, match="cert and key"):
        fabric_access("etcds://10.0.0.1:2379", cert="/c.pem")
    with pytest.raises(BadInput, match="MYCELIUM_ETCD_PASSWORD"):
        fabric_access("etcds://10.0.0.1:2379", user="root")
    with pytest.raises(BadInput, match="not a readable"):
        fabric_access("etcds://10.0.0.1:2379", ca="/nonexistent/ca.pem")
    with pytest.raises(BadInput, match="expected"):
        fabric_access("http://10.0.0.1:2379")


def test_opened_values_never_show_in_a_repr_and_output_can_be_redacted(tmp_path: Path) -> None:
    secrets = home_secrets(Home(tmp_path).ensure())
    secrets.set("app", "TOKEN", VALUE)
    opened = secrets.values("app")
    assert opened == {"TOKEN": VALUE}
    assert VALUE.decode() not in repr(opened) and VALUE.decode() not in str(opened)
    assert "TOKEN=<hidden>" in repr(opened)
    line = f"connecting with {VALUE.decode()} and {VALUE.decode()}x"
    assert redact(line, opened) == "connecting with <secret TOKEN> and <secret TOKEN>x"
    assert redact_lines(["a", VALUE.decode()], {"TOKEN": VALUE, "T": b"pure"}) == [
        "a", "<secret TOKEN>"]
    assert redact("nothing", {}) == "nothing"


def test_a_check_report_hides_the_values_in_every_text_a_workload_wrote() -> None:
    from mycelium.messages import CheckReport, CheckResult
    from mycelium.secrets.redact import redact_report

    said = f"exit code 1: token {VALUE.decode()}"
    report = CheckReport(4, True, False, CheckResult("careless", False, 1.0, said),
                         f"STATUS {VALUE.decode()}", f"liveness_failed: careless: {said}")
    hidden = redact_report(report, {"TOKEN": VALUE})
    assert VALUE.decode() not in repr(hidden)
    assert hidden.last is not None and hidden.last.detail == "exit code 1: token <secret TOKEN>"
    assert hidden.status_text == "STATUS <secret TOKEN>" and hidden.seq == 4
    assert hidden.failure == "liveness_failed: careless: exit code 1: token <secret TOKEN>"
    assert redact_report(report, {}) is report
    bare = CheckReport(5, False, False, None, None, None)
    assert redact_report(bare, {"TOKEN": VALUE}) == bare


def test_the_end_recorded_for_a_dead_meshs_instance_hides_its_apps_values(
        tmp_path: Path) -> None:
    import orjson

    from mycelium.node.output import settle_home
    from mycelium.output_files import EXIT_FILE, META_FILE, OUTPUT_DIR
    from mycelium.secrets.redact import HIDDEN_TAIL

    def instance(name: str) -> Path:  # what a mesh killed with -9 leaves: no exit recorded
        out = tmp_path / name / OUTPUT_DIR
        out.mkdir(parents=True)
        (out / META_FILE).write_bytes(orjson.dumps({"instance": name, "app": name[:3]}))
        (out / "stderr").write_bytes(b"connecting with " + VALUE + b"\n")
        return out

    kept, unknown = instance("app@node-1#1"), instance("bad@node-1#2")

    def secrets_of(app: str) -> dict[str, bytes]:
        if app == "bad":
            raise SecretsUnreadable("the key does not open them")
        return {"TOKEN": VALUE}

    assert sorted(settle_home(tmp_path, secrets_of)) == ["app@node-1#1", "bad@node-1#2"]
    ended = orjson.loads((kept / EXIT_FILE).read_bytes())
    assert ended["output_tail"] == ["connecting with <secret TOKEN>"]
    assert orjson.loads((unknown / EXIT_FILE).read_bytes())["output_tail"] == [HIDDEN_TAIL]
    assert settle_home(tmp_path, secrets_of) == []  # recorded once


def test_the_dashboards_output_lines_hide_the_apps_secret_values(tmp_path: Path) -> None:
    from mycelium.mesh import LocalFabric, Mesh
    from mycelium.operator import MeshConfig

    home = Home(tmp_path).ensure()
    home_secrets(home).set("app", "TOKEN", VALUE)
    mesh = Mesh(home, MeshConfig(), LocalFabric(home, 1), "127.0.0.1", 0)
    lines = [f"token={VALUE.decode()}", "plain"]
    assert mesh.dashboard_tail(lines, "app@node-1#3") == ["token=<secret TOKEN>", "plain"]
    assert mesh.dashboard_tail(lines, "other@node-1#4") == lines
    key_path(home).chmod(0o644)  # an unusable key: nothing shown rather than the value
    fresh = Mesh(home, MeshConfig(), LocalFabric(home, 1), "127.0.0.1", 0)
    assert VALUE.decode() not in " ".join(fresh.dashboard_tail(lines, "app@node-1#5"))
