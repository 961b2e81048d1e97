"""Operating a mesh: its configuration file and its supervision log.

``config`` loads every tunable (defaults < TOML file < ``MYCELIUM_<SECTION>_<KEY>``);
``logs`` writes, reads, follows and renders the supervision log (SPEC §7).
"""

from __future__ import annotations

from mycelium.operator.config import ConfigError, MeshConfig, load_config
from mycelium.operator.logs import LogError, SupervisionLog, format_record, normalise_record

__all__ = [
    "ConfigError",
    "LogError",
    "MeshConfig",
    "SupervisionLog",
    "format_record",
    "load_config",
    "normalise_record",
]
