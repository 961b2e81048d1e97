"""Shared fixtures: every test gets a timeout (pyproject) and cleans up what it started."""

from __future__ import annotations

import pytest

# The fixtures' teardown checks live in tests/meshkit.py: keep pytest's assertion messages there.
pytest.register_assert_rewrite("tests.meshkit")
