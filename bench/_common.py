"""What bench/dashboard.py and bench/mesh.py share: free ports and percentiles.

Imported as ``bench._common`` once the script has put the repository root first on ``sys.path``
(a bare ``import`` from bench/ would be one step from bench/supervisors.py shadowing the package).
"""

from __future__ import annotations

import socket

__all__ = ["free_port", "pct"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    """The ``p``-th percentile of ``values`` (nearest rank, no interpolation)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]
