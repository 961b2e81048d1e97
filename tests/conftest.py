"""Shared fixtures: every test gets a timeout (pyproject) and cleans up what it started."""

from __future__ import annotations
