"""Fixtures for the secrets tests: a template home with the test spores published."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "mesh"))

from mesh_helpers import digests, home, mesh  # noqa: F401  (shared fixtures)

from mycelium.home import Home
from mycelium.spores import keygen, publish

SECRETIVE = Path(__file__).resolve().parent / "workloads" / "secretive"


@pytest.fixture(scope="session")
def spores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A template home with a signing key and the secrets test spores; (root, digests)."""
    root = tmp_path_factory.mktemp("template") / "home"
    template = Home(root).ensure()
    keygen(template)
    manifests = {
        "vault": {"name": "vault", "version": "1.0.0", "env_secrets": ["DB_PASSWORD"]},
        "plain": {"name": "plain", "version": "1.0.0"},
        # a careless liveness check: prints the secret, then fails (restarts after 3, so the
        # failing detail shows in status for ~0.6 s before: a poll cannot miss it)
        "checked": {"name": "checked", "version": "1.0.0", "checks": [
            {"type": "exec", "role": "liveness", "name": "careless", "interval": 0.3,
             "failures": 3, "command": [
                 "sh", "-c", 'echo "token $(cat "$CREDENTIALS_DIRECTORY/DB_PASSWORD")"; exit 1'
             ]}]},
    }
    return root, {key: publish(template, binary=SECRETIVE, manifest=m)
                  for key, m in manifests.items()}
