"""Mycelium Mesh: a small service mesh built as an OTP-style supervision tree of Pykka actors."""

from __future__ import annotations

import logging

__all__ = ["__version__"]
__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
