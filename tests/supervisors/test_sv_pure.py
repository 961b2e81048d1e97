"""Pure parts, no threads: spec validation, the intensity window, backoff, plans, reports."""

from __future__ import annotations

import random

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisors import Backoff, ChildSpec, Report, SpecError, SupFlags, check_specs, format_report
from supervisors.intensity import add_restart, backoff_delay, next_backoff_step, restart_plan


def start() -> None:
    raise AssertionError("never started in these tests")


# -- specs ---------------------------------------------------------------------------------


def test_child_spec_has_otp_defaults() -> None:
    spec = ChildSpec("a", start)  # type: ignore[arg-type]
    assert (spec.restart, spec.type, spec.significant, spec.backoff) == (
        "permanent",
        "worker",
        False,
        None,
    )
    assert spec.shutdown_policy == 5.0
    assert ChildSpec("s", start, type="supervisor").shutdown_policy == "infinity"  # type: ignore[arg-type]


def test_sup_flags_have_otp_defaults() -> None:
    assert SupFlags() == SupFlags("one_for_one", 1, 5.0, "never")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"id": ""}, "id must be a non-empty string"),
        ({"id": 3}, "id must be a non-empty string"),
        ({"start": "nope"}, "'a': start must be callable"),
        ({"restart": "forever"}, "'a': restart must be one of permanent, transient, temporary"),
        ({"type": "daemon"}, "'a': type must be one of worker, supervisor"),
        ({"shutdown": -1}, "'a': shutdown must be seconds >= 0, 'brutal_kill' or 'infinity'"),
        ({"shutdown": "never"}, "'a': shutdown must be"),
        ({"shutdown": True}, "'a': shutdown must be"),
        ({"significant": 1}, "'a': significant must be a bool"),
        ({"significant": True}, "'a': a significant child cannot be permanent"),
        ({"backoff": 1.0}, "'a': backoff must be a Backoff or None"),
        ({"meta": ["app"]}, "'a': meta must be a mapping"),
    ],
)
def test_each_child_spec_field_is_validated_with_a_precise_error(
    kwargs: dict[str, object], message: str
) -> None:
    fields: dict[str, object] = {"id": "a", "start": start, **kwargs}
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ChildSpec(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "all_for_one"}, "strategy must be one of one_for_one"),
        ({"intensity": -1}, "intensity must be an int >= 0"),
        ({"intensity": 1.5}, "intensity must be an int >= 0"),
        ({"period": 0}, "period must be seconds > 0"),
        ({"auto_shutdown": "sometimes"}, "auto_shutdown must be one of never"),
    ],
)
def test_each_sup_flag_is_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        SupFlags(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base": 0}, "base must be > 0"),
        ({"cap": 0.01}, "cap must be >= base"),
        ({"jitter": 2}, "jitter must be a fraction"),
        ({"reset_after": -1}, "reset_after must be a finite number >= 0"),
    ],
)
def test_each_backoff_field_is_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_duplicate_ids_and_bad_combinations_are_refused_without_starting() -> None:
    a = ChildSpec("a", start)  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="duplicate child id 'a'"):
        check_specs([a, ChildSpec("b", start), a])  # type: ignore[arg-type]
    significant = ChildSpec("s", start, restart="transient", significant=True)  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="significant children need auto_shutdown"):
        check_specs([significant], SupFlags())
    check_specs([significant], SupFlags(auto_shutdown="any_significant"))
    with pytest.raises(SpecError, match="must be ChildSpec"):
        check_specs([{"id": "x"}])  # type: ignore[list-item]


def test_meta_is_copied_and_read_only() -> None:
    meta = {"app": "hello"}
    spec = ChildSpec("a", start, meta=meta)  # type: ignore[arg-type]
    meta["app"] = "changed"
    assert spec.meta["app"] == "hello"
    with pytest.raises(TypeError):
        spec.meta["app"] = "x"  # type: ignore[index]


# -- intensity (a fake clock: plain numbers) -----------------------------------------------


def test_intensity_allows_up_to_intensity_restarts_within_the_period() -> None:
    ok1, times = add_restart((), now=100.0, intensity=2, period=5.0)
    ok2, times = add_restart(times, now=101.0, intensity=2, period=5.0)
    ok3, times = add_restart(times, now=102.0, intensity=2, period=5.0)
    assert (ok1, ok2, ok3) == (True, True, False)
    assert times == (102.0, 101.0, 100.0)


def test_old_restarts_slide_out_of_the_window() -> None:
    _, times = add_restart((), 100.0, 1, 5.0)
    ok, times = add_restart(times, 105.5, 1, 5.0)
    assert ok and times == (105.5,)
    ok, _ = add_restart(times, 110.5, 1, 5.0)  # exactly period later: still inside (OTP >=)
    assert not ok


def test_intensity_zero_allows_no_restart() -> None:
    assert add_restart((), 1.0, 0, 5.0)[0] is False


@given(
    st.lists(st.floats(min_value=0, max_value=1000), min_size=1, max_size=40),
    st.integers(min_value=0, max_value=10),
    st.floats(min_value=0.1, max_value=100),
)
def test_window_never_keeps_restarts_older_than_period(
    gaps: list[float], intensity: int, period: float
) -> None:
    times: tuple[float, ...] = ()
    now = 0.0
    for gap in gaps:
        now += gap
        ok, times = add_restart(times, now, intensity, period)
        assert all(t >= now - period for t in times)
        assert ok == (len(times) <= intensity)


# -- backoff -------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_without_jitter() -> None:
    policy = Backoff(base=0.1, cap=1.0, jitter=0.0)
    assert [backoff_delay(policy, n) for n in range(6)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    )
    assert backoff_delay(policy, 10_000) == 1.0


@given(st.integers(min_value=0, max_value=200), st.floats(min_value=0, max_value=1))
def test_backoff_jitter_stays_within_its_fraction_and_the_cap(step: int, jitter: float) -> None:
    policy = Backoff(base=0.1, cap=30.0, jitter=jitter)
    raw = min(30.0, 0.1 * 2.0**step)
    delay = backoff_delay(policy, step, random.Random(step))
    assert raw * (1 - jitter) - 1e-9 <= delay <= min(30.0, raw * (1 + jitter)) + 1e-9


def test_backoff_step_resets_after_a_stable_run() -> None:
    policy = Backoff(reset_after=10.0)
    assert next_backoff_step(4, up_for=9.9, policy=policy) == 4
    assert next_backoff_step(4, up_for=10.0, policy=policy) == 0


# -- strategy plans ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "stop", "start"),
    [
        ("one_for_one", [], ["B"]),
        ("one_for_all", ["C", "A"], ["A", "B", "C"]),
        ("rest_for_one", ["C"], ["B", "C"]),
    ],
)
def test_crashing_b_in_abc_plans_like_otp(strategy: str, stop: list[str], start: list[str]) -> None:
    assert restart_plan(strategy, ["A", "B", "C"], "B") == (stop, start)


# -- reports -------------------------------------------------------------------------------


def test_report_to_dict_and_json_use_rfc3339_utc() -> None:
    report = Report(
        ts=0.25, event="backoff", supervisor="mesh/apps/hello", child="hello@node-1#3",
        reason="killed by SIGKILL", delay=0.2, extra={"app": "hello"},
    )  # fmt: skip
    data = report.to_dict()
    assert data["ts"] == "1970-01-01T00:00:00.250Z"
    assert orjson.loads(report.to_json()) == data
    assert data["delay"] == 0.2 and data["extra"] == {"app": "hello"}


def test_format_report_is_one_short_otp_like_line() -> None:
    report = Report(0.0, "child_restarted", "mesh/nodes", "node-1", None, None, {"restarts": 2})
    line = format_report(report)
    assert line == "1970-01-01T00:00:00.000Z mesh/nodes child_restarted child=node-1 restarts=2"
    backoff = Report(0.0, "backoff", "apps", "hello", "boom", 1.5, {})
    assert format_report(backoff).endswith("backoff child=hello reason=boom delay=1.500s")
    coloured = format_report(backoff, color=True)
    assert "\x1b[" in coloured and "\n" not in coloured
