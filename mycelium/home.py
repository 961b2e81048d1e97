"""The home directory: one place for keys, repo, state, logs, instances and the control socket.

Two meshes with different homes never share a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_HOME", "Home", "resolve_home"]

DEFAULT_HOME = Path(".mycelium")


@dataclass(frozen=True, slots=True)
class Home:
    """Paths inside one mesh home. Creating a :class:`Home` touches nothing on disk."""

    root: Path

    @property
    def keys(self) -> Path:
        """Signing key pairs: ``<name>.key`` (0600) and ``<name>.pub``."""
        return self.root / "keys"

    @property
    def trusted(self) -> Path:
        """Trusted signer public keys, one ``<name>.pub`` (hex) each."""
        return self.root / "trusted"

    @property
    def repo(self) -> Path:
        """The content-addressed spore repo: ``<digest>.spore``."""
        return self.root / "repo"

    @property
    def state(self) -> Path:
        """Durable control-plane state (the fabric's store)."""
        return self.root / "state"

    @property
    def logs(self) -> Path:
        """The supervision log and the mesh's own log."""
        return self.root / "logs"

    @property
    def instances(self) -> Path:
        """One private working directory per app instance, with its stdout/stderr log."""
        return self.root / "instances"

    @property
    def control_socket(self) -> Path:
        """The unix socket the CLI and ``mycelium repl`` talk to (mode 0600)."""
        return self.root / "control.sock"

    @property
    def lock_file(self) -> Path:
        """Held (flock) by the running mesh so that a second ``up`` refuses to start."""
        return self.root / "mesh.lock"

    def ensure(self) -> Home:
        """Create the home's directories (private to the user) and return self."""
        for path in (self.root, self.keys, self.trusted, self.repo, self.state, self.logs,
                     self.instances):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self


def resolve_home(option: Path | None) -> Home:
    """The home from ``--home``, else ``$MYCELIUM_HOME``, else ``./.mycelium``."""
    if option is not None:
        return Home(option.expanduser().absolute())
    env = os.environ.get("MYCELIUM_HOME")
    return Home(Path(env).expanduser().absolute() if env else DEFAULT_HOME.absolute())
