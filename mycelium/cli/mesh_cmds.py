"""Commands that talk to a running mesh: up, deploy, stop, status, tree, logs, kill, chaos,
repl, down (owned by the mesh work)."""

from __future__ import annotations
