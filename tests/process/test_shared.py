"""Process-wide service objects: one per process, built on first use, forgotten across fork."""

from __future__ import annotations

import os
import threading

import pytest

from mycelium.node.shared import Shared

pytestmark = pytest.mark.timeout(20)


def test_one_instance_built_once_on_first_use() -> None:
    built: list[object] = []

    def make() -> object:
        built.append(object())
        return built[-1]

    shared = Shared(make)
    assert built == []
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(shared())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(built) == 1 and seen == built * 8


def test_a_forked_child_builds_its_own() -> None:
    builds: list[int] = []
    shared = Shared(lambda: builds.append(len(builds)) or len(builds))
    assert shared() == 1
    pid = os.fork()
    if pid == 0:  # the child: the parent's instance is forgotten, a second one is built
        os._exit(0 if shared() == 2 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert shared() == 1 and builds == [0]  # the parent keeps its own
