"""The pure diff of a desired state against a running mesh: examples and invariants."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.desired import DesiredApp, RunningApp, Settings, diff, same_spore
from mycelium.desired.model import SCALE_KEYS, SETTING_KEYS
from mycelium.desired.text import plan_lines

HEX = "0123456789abcdef"

names = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)
shas = st.text(HEX, min_size=64, max_size=64)
numbers = st.floats(min_value=0, max_value=1000, allow_nan=False, allow_infinity=False)


@st.composite
def deploy_settings(draw: Any) -> Settings:
    n_max = draw(st.integers(1, 5))
    return Settings(min=draw(st.integers(0, n_max)), max=n_max,
                    max_instances=draw(st.integers(1, 5)), cpu=draw(numbers),
                    mem=draw(st.integers(1, 4096)), warmup=draw(numbers),
                    timeout=draw(numbers.filter(lambda t: t > 0)))


@st.composite
def manifests(draw: Any, name: str) -> dict[str, Any]:
    return {"name": name, "version": draw(st.sampled_from(["1.0.0", "1.1.0", "2.0.0"])),
            "health": draw(st.sampled_from(["/health", "/ready"])),
            "args": draw(st.lists(st.sampled_from(["-v", "--x"]), max_size=2)),
            "env": draw(st.dictionaries(st.sampled_from(["A", "B"]),
                                        st.sampled_from(["1", "2"]), max_size=2)),
            "warmup": draw(st.sampled_from([0.0, 1.0]))}


@st.composite
def desired_apps(draw: Any, name: str) -> DesiredApp:
    by_digest = draw(st.booleans())
    return DesiredApp(name=name, settings=draw(deploy_settings()), manifest=draw(manifests(name)),
                      binary_sha256=draw(st.sampled_from(["a" * 64, "b" * 64])),
                      binary_size=draw(st.sampled_from([10, 20])),
                      digest=draw(st.sampled_from(["c" * 64, "d" * 64])) if by_digest else None)


def running_from(want: DesiredApp, generation: int = 1, digest: str = "e" * 64) -> RunningApp:
    """What the mesh runs once ``want`` was applied (the converged state)."""
    return RunningApp(name=want.name, digest=want.digest or digest, generation=generation,
                      settings=want.settings, manifest=dict(want.manifest),
                      binary_sha256=want.binary_sha256, binary_size=want.binary_size)


@st.composite
def worlds(draw: Any) -> tuple[list[DesiredApp], dict[str, RunningApp]]:
    """A file's apps and a running mesh that shares some apps with it, some converged."""
    wanted = draw(st.lists(names, unique=True, max_size=5))
    extra = draw(st.lists(names.filter(lambda n: n not in wanted), unique=True, max_size=3))
    desired = [draw(desired_apps(n)) for n in wanted]
    running: dict[str, RunningApp] = {}
    for want in desired:
        kind = draw(st.sampled_from(["absent", "converged", "other"]))
        if kind == "converged":
            running[want.name] = running_from(want)
        elif kind == "other":
            other = draw(desired_apps(want.name))
            running[want.name] = running_from(other, digest=draw(shas))
    for name in extra:
        running[name] = running_from(draw(desired_apps(name)), digest=draw(shas))
    return desired, running


@settings(max_examples=60, deadline=None)
@given(worlds(), st.booleans())
def test_one_change_per_app_in_file_order_and_destroy_only_with_prune(
        world: tuple[list[DesiredApp], dict[str, RunningApp]], prune: bool) -> None:
    desired, running = world
    changes = diff(desired, running, prune)
    named = [d.name for d in desired]
    assert [c.app for c in changes[:len(named)]] == named
    destroyed = [c.app for c in changes[len(named):]]
    assert all(c.action == "destroy" for c in changes[len(named):])
    assert destroyed == (sorted(set(running) - set(named)) if prune else [])
    for c in changes[:len(named)]:
        assert c.action == ("create" if c.app not in running else c.action)
        assert (c.action == "create") == (c.app not in running)


@settings(max_examples=60, deadline=None)
@given(worlds())
def test_applying_the_plan_converges_the_next_plan_is_all_unchanged(
        world: tuple[list[DesiredApp], dict[str, RunningApp]]) -> None:
    desired, running = world
    after = dict(running)
    for c in diff(desired, running, prune=True):
        if c.action == "destroy":
            del after[c.app]
        elif c.changing:
            assert c.desired is not None
            after[c.app] = running_from(c.desired, generation=9)
    again = diff(desired, after, prune=True)
    assert all(c.action == "unchanged" for c in again), plan_lines(again)


@settings(max_examples=60, deadline=None)
@given(worlds())
def test_each_action_says_what_differs(world: tuple[list[DesiredApp], dict[str, RunningApp]]
                                       ) -> None:
    desired, running = world
    for c in diff(desired, running):
        have, want = running.get(c.app), c.desired
        assert want is not None
        if have is None:
            continue
        differing = {k for k in SETTING_KEYS if have.settings.get(k) != want.settings.get(k)}
        assert {x.field for x in c.changes} >= differing
        for x in c.changes:
            if x.field in SETTING_KEYS:
                assert (x.old, x.new) == (have.settings.get(x.field), want.settings.get(x.field))
        if c.action == "unchanged":
            assert same_spore(want, have) and not differing and not c.changes
        elif c.action == "scale":
            assert same_spore(want, have) and differing and differing <= SCALE_KEYS
        elif c.action == "settings":
            assert same_spore(want, have) and differing - SCALE_KEYS
        else:
            assert c.action == "update" and not same_spore(want, have)
            assert c.pack == (want.digest is None)


def _hello(**changes: Any) -> DesiredApp:
    base = DesiredApp(name="hello", settings=Settings(1, 1, 1, 0.1, 256, 0.0, 60.0),
                      manifest={"name": "hello", "version": "1.0.0", "health": "/health",
                                "args": [], "env": {}, "warmup": 0.0},
                      binary_sha256="a" * 64, binary_size=10)
    return dataclasses.replace(base, **changes)


def test_a_new_version_is_an_update_that_names_every_field_and_a_new_digest() -> None:
    have = running_from(_hello(), digest="f" * 64)
    want = _hello(manifest={**_hello().manifest, "version": "1.1.0", "env": {"X": "1"}},
                  binary_sha256="b" * 64, settings=Settings(1, 3, 3, 0.1, 256, 0.0, 60.0))
    (line,) = plan_lines(diff([want], {"hello": have}))
    assert line == ("hello  ~ update (version 1.0.0 → 1.1.0, env.X unset → \"1\", binary "
                    "aaaaaaaaaaaa… → bbbbbbbbbbbb…, digest ffffffffffff… → new, max 1 → 3, "
                    "max_instances 1 → 3)")


def test_only_counts_is_scale_and_other_settings_are_settings() -> None:
    have = {"hello": running_from(_hello())}
    scale = _hello(settings=Settings(2, 3, 3, 0.1, 256, 0.0, 60.0))
    assert plan_lines(diff([scale], have)) == [
        "hello  ~ scale (min 1 → 2, max 1 → 3, max_instances 1 → 3)"]
    tuned = _hello(settings=Settings(1, 1, 1, 0.5, 256, 0.0, 30.0))
    assert plan_lines(diff([tuned], have)) == ["hello  ~ settings (cpu 0.1 → 0.5, timeout 60 → 30)"]
    assert plan_lines(diff([_hello()], have)) == ["hello  = unchanged"]


def test_a_failed_rollout_of_the_same_spore_is_retried() -> None:
    have = dataclasses.replace(running_from(_hello()), status="failed", reason="exit code 3")
    (change,) = diff([_hello()], {"hello": have})
    assert change.action == "update" and not change.pack and change.digest == have.digest
    assert plan_lines([change]) == ["hello  ~ update (last rollout failed: exit code 3: retry)"]
    rolled_back = dataclasses.replace(have, ready=1)  # it went back to this spore, which runs
    assert diff([_hello()], {"hello": rolled_back})[0].action == "unchanged"


def test_a_running_spore_whose_manifest_is_unknown_is_never_the_same() -> None:
    have = dataclasses.replace(running_from(_hello()), manifest=None)
    assert diff([_hello()], {"hello": have})[0].action == "update"


def test_a_table_without_timeout_takes_the_mesh_default() -> None:
    want = dataclasses.replace(_hello(), given=frozenset({"min", "max"}))
    have = {"hello": running_from(dataclasses.replace(
        _hello(), settings=Settings(1, 1, 1, 0.1, 256, 0.0, 30.0)))}
    assert diff([want], have)[0].action == "settings"  # 60 (deploy's default) → 30
    assert diff([want], have, timeout=30.0)[0].action == "unchanged"  # [rollout] timeout = 30
    named = _hello()  # a table that names timeout = 60 keeps it
    assert diff([named], have, timeout=30.0)[0].changes[0].new == 60.0
