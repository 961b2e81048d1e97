"""The package's loggers, each under ``mycelium``, which gets its NullHandler here.

A library stays silent unless its user configures logging; the handler is installed by the
first module that logs rather than by ``mycelium/__init__``, so that a CLI command that logs
nothing (``mycelium status``) does not pay ~13 ms for ``import logging`` on every start.
"""

from __future__ import annotations

import logging

__all__ = ["get_logger"]

logging.getLogger("mycelium").addHandler(logging.NullHandler())


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)``, once the package's NullHandler is in place."""
    return logging.getLogger(name)
