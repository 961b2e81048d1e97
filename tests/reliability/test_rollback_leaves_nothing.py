"""A rollback leaves no instance of the failed digest behind, under a steady load.

The never-healthy green fails its own startup deadline at the same moment as the rollout's
``--timeout`` (both 3 s here), so its supervisor is restarting it, or it is ``Draining``, when
the agent stops it: exactly the moment where a stale stop used to forget a freshly started
green, which then restarted on its node forever.
"""

from __future__ import annotations

import time

import pytest
from load import Load
from mesh_helpers import MeshProcess, cli, wait_until, workload_pids

OBSERVE = 5.0
"""Seconds after the rollback during which no instance of the bad digest may reappear (past
the failed green's startup deadline and backoff, when a forgotten one would restart)."""


def _bad_instances(mesh: MeshProcess, bad: str) -> list[dict[str, object]]:
    return [i for i in mesh.app("web")["instances"] if i["digest"] == bad]


ATTEMPTS = 2
"""Failed deploys in a row on one mesh: the race is at each rollback, and the second one starts
from what the first rollback left (which must be deployable again)."""


@pytest.mark.timeout(150)
def test_after_a_rollback_no_instance_of_the_failed_digest_remains_or_restarts(
        mesh: MeshProcess, digests: dict[str, str]) -> None:
    good, bad = digests["v2"], digests["bad"]
    result = cli(mesh.home, "deploy", "web", good, "--min", "3", "--max", "3")
    assert result.returncode == 0, result.stderr
    olds = {i["pid"] for i in mesh.ready("web", 3, good)}
    with Load(mesh.port, "web") as load:
        for attempt in range(ATTEMPTS):
            load.wait_requests(30)
            result = cli(mesh.home, "deploy", "web", bad, "--min", "3", "--max", "3",
                         "--warmup", "1", "--timeout", "3", timeout=90)
            assert result.returncode == 1, (attempt, result.stderr)
            assert mesh.app("web")["state"] == "failed"
            # within 2 s: no instance of the bad digest on any node, and no stray process
            wait_until(lambda: not _bad_instances(mesh, bad)
                       and set(workload_pids(mesh.home)) == olds, 2.0, "the bad green gone")
            horizon = time.monotonic() + OBSERVE
            while time.monotonic() < horizon:  # watching for absence: nothing may reappear
                assert not _bad_instances(mesh, bad), mesh.app("web")
                assert set(workload_pids(mesh.home)) == olds
                time.sleep(0.1)
        load.wait_requests(30)
    assert load.stats.failed == 0, load.stats.errors
    doc = mesh.app("web")
    assert doc["digest"] == good
    assert {i["pid"] for i in doc["instances"]} == olds  # the old instances untouched
