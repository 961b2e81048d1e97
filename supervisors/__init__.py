"""OTP-style supervision for Pykka actors (placeholder; the supervisors work fills it in)."""

from __future__ import annotations

import logging

__all__: list[str] = []

logging.getLogger(__name__).addHandler(logging.NullHandler())
