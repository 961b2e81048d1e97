"""Mycelium Mesh: a small service mesh built as an OTP-style supervision tree of Pykka actors."""

from __future__ import annotations

__all__ = ["__version__"]
__version__ = "0.1.0"
