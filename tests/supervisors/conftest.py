"""Fixtures for the supervisors tests: every test must leave no actor running."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pykka
import pytest
from sv_helpers import Journal, Recorder

from supervisors import ChildSpec, Supervisor, SupFlags


@pytest.fixture(autouse=True)
def no_actor_left() -> Iterator[None]:
    """Fail a test that leaves an actor running (after stopping the leftovers).

    Only actors the test started count: another area's leftovers are not ours to judge.
    """
    before = {ref.actor_urn for ref in pykka.ActorRegistry.get_all()}
    yield
    leftovers = [r for r in pykka.ActorRegistry.get_all() if r.actor_urn not in before]
    if leftovers:
        for ref in reversed(leftovers):
            ref.stop(block=True, timeout=5)
        pytest.fail(f"actors left running: {leftovers}")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def journal() -> Journal:
    return Journal()


@pytest.fixture
def start_sup(recorder: Recorder) -> Iterator[Callable[..., pykka.ActorRef[Any]]]:
    """Start a Supervisor reporting to ``recorder``; it is stopped at teardown."""
    refs: list[pykka.ActorRef[Any]] = []

    def start(
        children: Iterable[ChildSpec] = (),
        flags: SupFlags | None = None,
        path: str = "root",
    ) -> pykka.ActorRef[Any]:
        ref = Supervisor.start(flags or SupFlags(), list(children), path=path, reporter=recorder)
        refs.append(ref)
        return ref

    yield start
    for ref in reversed(refs):
        ref.stop(block=True, timeout=10)
