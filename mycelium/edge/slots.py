"""One slot of the edge's worker pool (``worker-N``): the process in it, and what a slot
needs to start one: the port held for all of them, the environment.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any

from mycelium.edge.adoption import AdoptedWorker
from mycelium.edge.config import EdgeConfig
from mycelium.edge.errors import EdgeError
from mycelium.edge.worker import config_to_wire

__all__ = ["WorkerSlot", "hold_port", "wire_config", "worker_env"]


def hold_port(host: str, port: int) -> socket.socket:
    """Bind ``port`` with SO_REUSEPORT and keep it: the workers bind it too.

    Raises:
        EdgeError: The port cannot be bound.
    """
    holder = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((host, port))
    except OSError as exc:
        holder.close()
        raise EdgeError(f"edge cannot listen on {host}:{port}: {exc.strerror}") from None
    return holder


def wire_config(config: EdgeConfig, port: int | None, tls_port: int | None) -> dict[str, Any]:
    """What a worker is told of its config: the pool's, with the ports it bound."""
    data = config_to_wire(config)
    data["port"] = port
    if data.get("tls") is not None:
        data["tls"]["port"] = tls_port
    return data


def worker_env() -> dict[str, str]:
    """A worker's environment: ours, with this package's root first on ``PYTHONPATH``."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}


@dataclass
class WorkerSlot:
    """One slot of the pool (``worker-N``) and the process in it now."""

    index: int
    proc: subprocess.Popen[bytes] | AdoptedWorker | None = None
    status: str = "starting"
    restarts: int = 0
    failures: int = 0
    applied: int = -1
    certs: int = 0  # the last certificate reload it confirmed
    started_at: float = 0.0
    listening: threading.Event = field(default_factory=threading.Event)

    @property
    def id(self) -> str:
        return f"worker-{self.index}"

    def describe(self) -> dict[str, Any]:
        """The slot as a tree node: ``{id, type: "worker", pid, status, restarts, ...}``."""
        return {"id": self.id, "type": "worker", "pid": self.proc.pid if self.proc else None,
                "status": self.status, "restarts": self.restarts, "started_at": self.started_at,
                "routes_version": self.applied, "meta": {}}

    def adopt(self, proc: AdoptedWorker, started_at: float, applied: int) -> None:
        """Put an adopted worker in this slot: it runs and listens already."""
        self.proc = proc
        self.status = "running"
        self.started_at = started_at
        self.applied = applied
        self.listening.set()
