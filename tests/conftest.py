"""Shared fixtures: every test gets a timeout (pyproject) and cleans up what it started."""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Iterator

import pytest

# The fixtures' teardown checks live in tests/meshkit.py: keep pytest's assertion messages there.
pytest.register_assert_rewrite("tests.meshkit")


@pytest.fixture(autouse=True)
def _process_limits_restored() -> Iterator[None]:
    """Give every test the umask and descriptor/core limits the one before it started with.

    A mesh started inside the test process arms the process for its workloads (umask 077,
    ``RLIMIT_CORE`` 0, ``RLIMIT_NOFILE`` its ``[node] nofile``); without this a later test
    would inherit them and pass or fail by the order the suite runs in.
    """
    umask = os.umask(0o022)
    os.umask(umask)
    limits = {r: resource.getrlimit(r) for r in (resource.RLIMIT_NOFILE, resource.RLIMIT_CORE)}
    yield
    os.umask(umask)
    for r, (soft, hard) in limits.items():
        with contextlib.suppress(ValueError, OSError):  # raising a hard limit needs root
            resource.setrlimit(r, (soft, hard))
