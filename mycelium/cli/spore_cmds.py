"""Flow A commands: keygen, pack, publish, verify, inspect (owned by the spores work)."""

from __future__ import annotations
