"""Process-wide service objects: one per process, built on first use, forgotten across fork."""

from __future__ import annotations

import os
import threading

import pytest

from supervisors.pool import shared_pool
from supervisors.singleton import Singleton

pytestmark = pytest.mark.timeout(20)


def test_one_instance_built_once_on_first_use() -> None:
    built: list[object] = []

    def make() -> object:
        built.append(object())
        return built[-1]

    shared = Singleton(make)
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
    shared = Singleton(lambda: builds.append(len(builds)) or len(builds))
    assert shared() == 1
    pid = os.fork()
    if pid == 0:  # the child: the parent's instance is forgotten, a second one is built
        os._exit(0 if shared() == 2 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert shared() == 1 and builds == [0]  # the parent keeps its own


def test_a_forked_child_gets_a_pool_of_its_own_that_runs_turns() -> None:
    # the parent's idle workers do not exist in the child: a turn handed to one would never run
    parent_pool = shared_pool()
    ran = threading.Event()
    parent_pool.submit(ran.set)
    assert ran.wait(5)  # the parent now has an idle worker
    pid = os.fork()
    if pid == 0:
        child_ran = threading.Event()
        shared_pool().submit(child_ran.set)
        os._exit(0 if child_ran.wait(5) and shared_pool() is not parent_pool else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
