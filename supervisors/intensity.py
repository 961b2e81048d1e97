"""Pure restart decisions: the intensity window, backoff delays and strategy plans.

Everything here is a function of its arguments (times are ``time.monotonic()`` seconds), so the
supervisor actor only applies the decisions and the tests need neither threads nor sleeps.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from supervisors.spec import Backoff

__all__ = ["add_restart", "backoff_delay", "next_backoff_step", "restart_plan"]


def add_restart(
    times: tuple[float, ...], now: float, intensity: int, period: float
) -> tuple[bool, tuple[float, ...]]:
    """Record a restart at ``now`` in a sliding window, as OTP's ``add_restart/1`` does.

    Restarts older than ``period`` seconds fall out of the window; the restart is allowed while
    the window holds at most ``intensity`` restarts (so ``intensity=0`` allows none).

    Args:
        times: Earlier restart times, newest first.
        now: The current monotonic time.
        intensity: Maximum restarts within the window.
        period: Window length in seconds.

    Returns:
        ``(allowed, new_times)`` where ``new_times`` starts with ``now``.
    """
    threshold = now - period
    kept = tuple(t for t in times if t >= threshold)
    window = (now, *kept)
    return len(window) <= intensity, window


def next_backoff_step(step: int, up_for: float, policy: Backoff) -> int:
    """The backoff exponent to use after a crash, reset once a run was stable.

    Args:
        step: Consecutive restarts so far (the exponent of the last delay, plus one).
        up_for: How long the crashed child ran, in seconds.
        policy: The child's backoff policy.

    Returns:
        ``0`` when the child stayed up for at least ``policy.reset_after`` seconds, else ``step``.
    """
    return 0 if up_for >= policy.reset_after else step


def backoff_delay(policy: Backoff, step: int, rand: random.Random | None = None) -> float:
    """``min(cap, base * 2**step)`` spread by ``± jitter`` (a fraction), never above ``cap``.

    Args:
        policy: The backoff policy.
        step: The exponent (0 for the first restart of a crash loop).
        rand: Random source; a seeded one makes the jitter reproducible.

    Returns:
        The delay in seconds, in ``[0, cap]``.
    """
    raw = policy.cap if step >= 64 else min(policy.cap, policy.base * 2.0**step)
    r = (rand or random).random()
    return max(0.0, min(policy.cap, raw * (1.0 + policy.jitter * (2.0 * r - 1.0))))


def restart_plan(
    strategy: str, ids: Sequence[str], failed: str
) -> tuple[list[str], list[str]]:
    """Which children to stop (in this order) and start (in this order) after ``failed`` died.

    Crashing B in ``[A, B, C]`` gives: one_for_one → stop ``[]``, start ``[B]``;
    one_for_all → stop ``[C, A]``, start ``[A, B, C]``; rest_for_one → stop ``[C]``,
    start ``[B, C]``.

    Args:
        strategy: ``one_for_one``, ``one_for_all`` or ``rest_for_one``.
        ids: Child ids in start order.
        failed: The id of the dead child.

    Returns:
        ``(stop_order, start_order)``; the dead child is never in ``stop_order``.

    Raises:
        ValueError: On an unknown strategy or a ``failed`` id not in ``ids``.
    """
    index = list(ids).index(failed)
    if strategy == "one_for_one":
        group = [failed]
    elif strategy == "one_for_all":
        group = list(ids)
    elif strategy == "rest_for_one":
        group = list(ids[index:])
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    stop = [i for i in reversed(group) if i != failed]
    return stop, group
